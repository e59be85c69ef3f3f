"""A reply read aloud while it streams.

:class:`SpokenReply`: the caller feeds text as it arrives (the cutting into sentences is cheap
and runs on the caller's thread), one worker thread synthesizes each piece as it is complete,
and the caller (or an HTTP response) reads the audio as it comes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from assistant.speech import speakable
from assistant.speech.bounds import LONG_SPEECH_S, MAX_SPOKEN_S, check_speed, give_back_memory
from assistant.speech.types import SpeechChunk, Synthesizer, VoiceInfo

log = logging.getLogger(__name__)

_END = object()
GUESS_WORDS = 4  # words of a reply before its language is guessed
# The first piece may be only a few words (speakable.FIRST_WORDS): while they cannot tell (a tie,
# or none of the commonest words), wait for more, up to this many.
GUESS_MOST_WORDS = 12


class SpokenReply:
    """A reply's speech, made as its text streams in.

    ``feed(text)`` as the text arrives, ``finish()`` at its end; iterate for the audio (blocks
    until the next chunk), or, from async code, take what is ready with :meth:`ready` whenever a
    callback given to :meth:`watch` says something changed (no thread waits). ``cancel()`` drops
    the pieces not yet said and ends the iteration at once; the worker stops after the piece it
    is on, and after ``max_seconds`` of audio. ``missing_language`` is set (and nothing is said)
    when the reply is in a language no loaded voice reads.
    """

    def __init__(
        self,
        synthesizer: Synthesizer,
        *,
        voice: str | None = None,
        speed: float | None = None,
        language: str | None = None,
        listener_timeout_s: float | None = None,
        max_seconds: float | None = MAX_SPOKEN_S,
    ):
        self.synthesizer = synthesizer
        self.max_seconds = max_seconds
        self.made_s = 0.0  # seconds of audio made so far
        # None: synthesize everything at once. A number: after the first piece, wait this long for
        # someone to read the audio (a page that went away must not keep the CPU busy), else stop.
        self.listener_timeout_s = listener_timeout_s
        self._listening = threading.Event()
        self._voice_name, self._rate = voice, check_speed(speed)
        self._language = language  # as heard (Whisper): None = guess from the reply's words
        self._voice: VoiceInfo | None = None
        self.missing_language: str | None = None
        self._splitter = speakable.Speakable()
        self._held: list[str] = []  # pieces waiting for the voice to be chosen
        self._todo: queue.Queue = queue.Queue()
        self._out: queue.Queue = queue.Queue()
        self.cancelled = threading.Event()
        self.finished = False
        self._ended = False  # ready() has handed out the end
        self._watchers: list[Callable[[], None]] = []
        self.created_at = time.perf_counter()
        # perf_counter() marks, for the benchmark and the latency goal:
        self.first_piece_at: float | None = None  # the first sentence was complete
        self.first_audio_at: float | None = None  # ...and its speech was ready
        self.sample_rate: int | None = None
        self._worker = threading.Thread(target=self._work, name="speech", daemon=True)
        self._worker.start()

    # -- the caller's side -----------------------------------------------------------------

    def feed(self, text: str) -> None:
        if text and not self.cancelled.is_set() and not self.finished:
            self._queue(self._splitter.feed(text))

    def finish(self) -> None:
        if self.finished:
            return
        self._queue(self._splitter.flush(), final=True)
        self.finished = True
        self._todo.put(_END)
        self._changed()

    def cancel(self) -> None:
        self.cancelled.set()
        self.finished = True
        self._todo.put(_END)
        self._put(_END)

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (from any thread, quickly) whenever audio is ready, the voice is
        chosen or the speech ends."""
        self._watchers.append(callback)

    def unwatch(self, callback: Callable[[], None]) -> None:
        if callback in self._watchers:
            self._watchers.remove(callback)

    @property
    def decided(self) -> bool:
        """The voice is chosen, or no voice reads the reply, or it has ended (see :meth:`voice`)."""
        return self._voice is not None or self.missing_language is not None or self.finished

    @property
    def chosen_voice(self) -> VoiceInfo | None:
        return self._voice

    def ready(self) -> list[SpeechChunk] | None:
        """The audio made since the last call, without waiting (maybe none yet); None once the
        speech has ended and all of it was taken (or it was cancelled)."""
        self._listening.set()
        chunks: list[SpeechChunk] = []
        while not (self._ended or self.cancelled.is_set()):
            try:
                item = self._out.get_nowait()
            except queue.Empty:
                return chunks
            if item is _END:
                self._ended = True
            else:
                chunks.append(item)
        return chunks or None

    def __iter__(self) -> Iterator[SpeechChunk]:
        self._listening.set()
        while True:
            item = self._out.get()
            if item is _END or self.cancelled.is_set():
                return
            yield item

    def voice(self, timeout: float | None = None) -> VoiceInfo | None:
        """The voice chosen (waits for the first words); None when no voice reads the reply."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._voice is None and self.missing_language is None and not self.finished:
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.01)
        return self._voice

    # -- internals ---------------------------------------------------------------------------

    def _put(self, item: Any) -> None:
        self._out.put(item)
        self._changed()

    def _changed(self) -> None:
        for callback in list(self._watchers):
            try:
                callback()
            except Exception:
                log.exception("a speech watcher failed")

    def _queue(self, pieces: list[str], final: bool = False) -> None:
        if self._voice is None and self.missing_language is None:
            self._held.extend(pieces)
            if not self._choose(final):
                return
            pieces, self._held = self._held, []
        if self.missing_language is not None:
            return
        for piece in pieces:
            if self.first_piece_at is None:
                self.first_piece_at = time.perf_counter()
            self._todo.put(piece)

    def _choose(self, final: bool) -> bool:
        """Pick the voice once there is enough text to tell the language (or it is given)."""
        synth = self.synthesizer
        if self._voice_name is not None:
            self._voice = synth.resolve(self._voice_name)
        else:
            language = self._language
            if language is None:
                words = " ".join(self._held)
                count = len(words.split())
                if count < GUESS_WORDS and not final:
                    return False  # "Sure!" alone cannot tell: wait for the next sentence
                if count < GUESS_MOST_WORDS and not final:
                    language = speakable.guess_language(words, sure=True)
                    if language is None:
                        return False  # "Bien sûr, la capitale de la" ties fr and es: wait
                else:
                    language = speakable.guess_language(words)
            self._voice = synth.voice_for(language) if language else synth.voices[0]
            if self._voice is None:
                self.missing_language = language
                self._put(_END)
                return True
        self.sample_rate = self._voice.sample_rate
        self._changed()
        return True

    def _work(self) -> None:
        try:
            while not self.cancelled.is_set():
                piece = self._todo.get()
                if piece is _END or self.cancelled.is_set():
                    break
                assert self._voice is not None
                if self.first_audio_at is not None and self.listener_timeout_s is not None:
                    if not self._listening.wait(self.listener_timeout_s):
                        log.info("nobody listened to a spoken reply: its speech is dropped")
                        self.cancel()
                        break
                chunk = self.synthesizer.speak_piece(piece, self._voice, self._rate)
                if self.first_audio_at is None:
                    self.first_audio_at = time.perf_counter()
                self.made_s += chunk.seconds
                self._put(chunk)
                if self.max_seconds is not None and self.made_s >= self.max_seconds:
                    log.warning(
                        "a spoken reply stopped after %.0f s of audio (the most one makes)", self.made_s
                    )
                    break
        except Exception:
            log.exception("speech synthesis failed")
        finally:
            self._put(_END)
            if self.made_s >= LONG_SPEECH_S:
                give_back_memory(self.synthesizer)
