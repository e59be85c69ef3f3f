"""The Assistant: one object the web page, the HTTP API and the CLI all call.

``reply(history, message)`` returns a :class:`Reply`. Iterate it for events —
``Transcribed`` (when the message has a recording) → ``Queued``… (while others use the model)
→ ``Token``… → ``Done(stats)`` — and read ``.text``, ``.stats``, ``.transcript`` and
``.message`` (the user message as answered, transcript included) afterwards. Problems raise
typed errors from :mod:`assistant.errors`; each boundary translates them once.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Union

from PIL import Image

from assistant import limits, request_ids
from assistant.conversation import ImageAttachment, Message
from assistant.embeddings import load_embedder
from assistant.errors import InvalidParams, ModelUnavailable
from assistant.loaders import Description, load_models
from assistant.metrics import Metrics, metered_speech
from assistant.models.base import ChatModel, ChatRequest, Usage
from assistant.models.prefix_cache import image_digest
from assistant.options import GenerationParams
from assistant.prompting import PromptBuilder
from assistant.quotas import Quotas
from assistant.settings import Settings
from assistant.speech import (
    AudioInput,
    SpeechChunk,
    SpokenReply,
    Synthesizer,
    Transcriber,
    Transcript,
)

log = logging.getLogger(__name__)

QUEUE_POLL_S = 0.5


@dataclass(frozen=True)
class ReplyStats:
    ttft_s: float  # to the first generated token, queue wait and transcription excluded
    tokens: int
    tokens_per_s: float  # decode speed: tokens after the first, over the time they took
    elapsed_s: float
    prompt_tokens: int
    finish_reason: str
    queued_s: float = 0.0
    transcribe_s: float = 0.0
    cached_tokens: int = 0  # prompt tokens reused from an earlier turn (not computed again)
    sent: str = ""  # what of the message's clips and documents the model got ("16 frames", "pages 1-4")


@dataclass(frozen=True)
class Transcribed:
    transcript: Transcript


@dataclass(frozen=True)
class Queued:
    position: int  # generations running or waiting ahead of this one


@dataclass(frozen=True)
class Token:
    text: str


@dataclass(frozen=True)
class Done:
    stats: ReplyStats
    text: str


Event = Union[Transcribed, Queued, Token, Done]


class Reply:
    """One answer in the making (like llm's ``Response``): iterate it for events; afterwards
    ``text``, ``stats``, ``transcript`` and ``message`` hold the outcome. ``close()`` (or
    leaving a ``with`` block) stops the generation and frees the model at once."""

    def __init__(
        self, message: Message, steps: Generator[Event, None, None] | None = None, request_id: str = ""
    ):
        self.message = message  # the user's message; gains its transcript once heard
        self.request_id = request_id  # in the server's log lines about this reply
        self.text = ""
        self.stats: ReplyStats | None = None
        self.transcript: Transcript | None = None
        self._events: Iterator[Event] = steps or iter(())

    def __iter__(self) -> Reply:
        return self

    def __next__(self) -> Event:
        event = next(self._events)
        if isinstance(event, Transcribed):
            self.transcript = event.transcript
            self.message = replace(self.message, transcript=event.transcript.text)
        elif isinstance(event, Token):
            self.text += event.text
        elif isinstance(event, Done):
            self.stats, self.text = event.stats, event.text
        return event

    def close(self) -> None:
        close = getattr(self._events, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Reply:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait(self) -> Reply:
        """Run to the end (for callers that do not stream); returns self."""
        for _ in self:
            pass
        return self


class StopFilter:
    """Holds back text that could be the start of a stop sequence; reports when one is hit."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.buffer = ""
        self.stopped = False

    def feed(self, chunk: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            return chunk
        self.buffer += chunk
        hits = [i for i in (self.buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.buffer = self.buffer[: min(hits)], ""
            return out
        keep = max(
            (k for s in self.stops for k in range(1, len(s)) if self.buffer.endswith(s[:k])), default=0
        )
        out = self.buffer[: len(self.buffer) - keep]
        self.buffer = self.buffer[len(out) :]
        return out

    def flush(self) -> str:
        out, self.buffer = self.buffer, ""
        return out


class TurnQueue:
    """First come, first served: one generation at a time per loaded model.

    ``threading.Lock`` makes no ordering promise; people waiting for a busy model expect to be
    served in the order they arrived, and to see how many are ahead of them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: deque[int] = deque()
        self._tickets = itertools.count()
        self._holder: int | None = None
        self._photos: dict[int, frozenset[str]] = {}  # what each waiting turn brings (image digests)

    def enter(self, photos: frozenset[str] = frozenset()) -> int:
        """Take a ticket; the caller must later ``leave`` it (also when it never got its turn).
        ``photos``: digests of the images the turn brings (see ``someone_else_waits``)."""
        with self._cond:
            ticket = next(self._tickets)
            self._waiting.append(ticket)
            if photos:
                self._photos[ticket] = photos
            return ticket

    def someone_else_waits(self, photos: frozenset[str]) -> bool:
        """Whether a turn waits that does not bring all of ``photos``: a photo read ahead gives
        way to it, but not to the message it is being read for."""
        with self._cond:
            return any(not photos <= self._photos.get(t, frozenset()) for t in self._waiting)

    def wait(self, ticket: int, timeout: float | None = None) -> bool:
        """Block until it is ``ticket``'s turn (True) or ``timeout`` passes (False)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._holder is None and self._waiting[0] == ticket, timeout)
            if ok:
                self._waiting.popleft()
                self._holder = ticket
            return ok

    def position(self, ticket: int) -> int:
        """How many generations run or wait ahead of ``ticket`` (0 = it is running)."""
        with self._cond:
            if self._holder == ticket:
                return 0
            ahead = self._waiting.index(ticket) if ticket in self._waiting else 0
            return ahead + (self._holder is not None)

    def leave(self, ticket: int) -> None:
        with self._cond:
            self._photos.pop(ticket, None)
            if self._holder == ticket:
                self._holder = None
            elif ticket in self._waiting:
                self._waiting.remove(ticket)
            self._cond.notify_all()

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._holder is not None or bool(self._waiting)


def photo_digests(messages: Sequence[Message]) -> frozenset[str]:
    """Content hashes of the loaded photos in ``messages`` (as the prefix cache keys them)."""
    return frozenset(image_digest(i) for m in messages for i in m.images if isinstance(i, Image.Image))


class Assistant:
    def __init__(
        self,
        settings: Settings,
        chat_model: ChatModel | None = None,
        transcriber: Transcriber | None = None,
        chat_error: str | None = None,
        synthesizer: Synthesizer | None = None,
    ):
        self.settings = settings
        self.synthesizer = synthesizer  # None: nothing is read aloud (--tts off)
        self.chat_model = chat_model
        self.transcriber = transcriber
        # Why the chat model is missing (shown as a banner; voice transcription still works).
        self.chat_error = chat_error if chat_model is None else None
        self.chat_notice: str | None = None  # set when the embedded model stands in (load)
        # A model that runs one generation at a time gets a first-come, first-served queue.
        self.queue = TurnQueue() if chat_model is not None and not chat_model.concurrent else None
        self._read_ahead_photos: frozenset[str] = frozenset()  # digests of the photos being read ahead
        self.prompt = PromptBuilder(settings, chat_model)
        self.metrics = Metrics()  # for /metrics
        self.embedder = load_embedder(settings.embedding_model)  # loaded at its first use
        self.quotas = Quotas(
            settings.data_dir, settings.user_requests_per_minute, settings.user_tokens_per_day
        )

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        settings: Settings,
        *,
        load_chat: bool = True,
        load_asr: bool = True,
        require_chat: bool = False,
        load_tts: bool = True,
    ) -> Assistant:
        """Load the models once. A chat model that cannot be loaded is remembered as
        ``chat_error`` (unless ``require_chat``), so the app can still start and transcribe.
        When no model was named and the default cannot be had (offline, not downloaded), the
        embedded text model answers instead and ``chat_notice`` says so."""
        got = load_models(
            settings, load_chat=load_chat, load_asr=load_asr, require_chat=require_chat, load_tts=load_tts
        )
        assistant = cls(got.settings, got.chat_model, got.transcriber, got.chat_error, got.synthesizer)
        assistant.chat_notice = got.chat_notice
        return assistant

    def describe(self) -> Description:
        return Description(
            chat_model=self.chat_model.info.name if self.chat_model is not None else self.settings.model,
            chat=self.chat_model.info if self.chat_model is not None else None,
            chat_error=self.chat_error,
            chat_notice=self.chat_notice,
            speech_model=self.transcriber.name if self.transcriber is not None else None,
            speech_device=self.transcriber.device if self.transcriber is not None else None,
            voice_model=self.synthesizer.name if self.synthesizer is not None else None,
            voices=self.synthesizer.voices if self.synthesizer is not None else (),
        )

    # -- speech ----------------------------------------------------------------------------

    def transcribe(self, audio: AudioInput, language: str | None = None) -> Transcript:
        if self.transcriber is None:
            raise ModelUnavailable("speech recognition is not loaded on this server")
        transcript = self.transcriber.transcribe(audio, language=language or self.settings.language)
        self.metrics.transcribed(transcript.elapsed_s, transcript.duration_s)
        return transcript

    def require_voice(self) -> Synthesizer:
        if self.synthesizer is None:
            raise ModelUnavailable("speech synthesis is off on this server (started with --tts off)")
        return self.synthesizer

    def speak(self, text: str, voice: str | None = None, speed: float | None = None) -> Iterator[SpeechChunk]:
        """``text`` (Markdown welcome) as speech, piece by piece as each is synthesized."""
        return metered_speech(self.require_voice().speak(text, voice=voice, speed=speed), self.metrics)

    def speak_stream(
        self,
        voice: str | None = None,
        speed: float | None = None,
        language: str | None = None,
        listener_timeout_s: float | None = None,
    ) -> SpokenReply:
        """Speech for a reply still streaming: ``feed`` it the reply's text as it comes (from
        any thread but the model's: the cutting is cheap, synthesis runs in the SpokenReply's
        own worker), ``finish()`` at the end, ``cancel()`` to stop; iterate it for audio.
        ``language`` (as Whisper heard the user) picks the voice; None guesses it from the reply.
        ``listener_timeout_s``: stop after the first sentence when nobody reads the audio that long."""
        return SpokenReply(
            self.require_voice(),
            voice=voice,
            speed=speed,
            language=language,
            listener_timeout_s=listener_timeout_s,
        )

    # -- chat ------------------------------------------------------------------------------

    def system_prompt(self, name_or_text: str | None) -> str:
        """A persona's text by name, or the text itself (None: the configured prompt)."""
        return self.prompt.system_prompt(name_or_text)

    def params(self, **overrides: Any) -> GenerationParams:
        """Generation params with the configured defaults and the model's own sampling defaults
        (its generation config's), validated (None = default)."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        overrides.setdefault("max_new_tokens", self.settings.default_max_new_tokens)
        if self.chat_model is not None:
            for name, value in self.chat_model.info.sampling.items():
                overrides.setdefault(name, value)
        if "stop" in overrides:
            overrides["stop"] = tuple(overrides["stop"])
        return GenerationParams.within(self.settings.max_new_tokens_cap, **overrides)

    def require_chat(self) -> ChatModel:
        if self.chat_model is None:
            raise ModelUnavailable(self.chat_error or "no chat model is loaded")
        return self.chat_model

    # -- clips and documents ---------------------------------------------------------------

    def reply(
        self,
        history: Sequence[Message],
        message: Message,
        params: GenerationParams | None = None,
        *,
        system_prompt: str | None = None,
        cancel: threading.Event | None = None,
        language: str | None = None,
        literal_system: bool = False,
        prefix: str = "",
        user: str = "",
    ) -> Reply:
        """The answer to ``message`` given ``history``. ``system_prompt`` is a persona name or
        free text (None = the configured default, "" = none); with ``literal_system`` it is
        always taken as text, even when it is one word that names a persona. A recording
        attached to ``message`` is transcribed first (voice works without a chat model).
        ``prefix``: the start of the reply, already written (Continue): the model carries on
        from its last word, and the Reply's text is what comes after it. ``user``: who asks
        (the logged-in user, the API's caller): what a model caches of one user's prompt
        serves no one else. The turn's id in the logs is the HTTP request's, or a new one."""
        request_id = request_ids.of_request() or request_ids.new()
        steps = self._answer(
            history,
            message,
            params or self.params(),
            system_prompt,
            literal_system,
            cancel or threading.Event(),
            language,
            prefix,
            user,
            request_id,
        )
        return Reply(message, steps, request_id)

    def prepare(
        self,
        history: Sequence[Message],
        draft: Message,
        params: GenerationParams | None = None,
        *,
        system_prompt: str | None = None,
        literal_system: bool = False,
        user: str = "",
    ) -> threading.Thread | None:
        """Start reading the photos of a message still being written, so its answer starts
        sooner: the model reads the chat up to them now (the slow part: the vision tower), and
        the reply to the sent message reuses that from its prefix cache. Only a model with
        ``warm`` (the local one) and only while nobody else is waiting for it. Returns the
        thread doing it (None: nothing was started). Problems are left for the sending to report."""
        model = self.chat_model
        warm = getattr(model, "warm", None)
        if warm is None or not draft.images or (self.queue is not None and self.queue.busy):
            return None
        params = params or self.params()
        system_text = self.prompt.system_text(system_prompt, literal_system)
        photos_only = Message("user", "", tuple(ImageAttachment(p) for p in draft.images))
        queue = self.queue

        def read_ahead() -> None:
            ticket = queue.enter() if queue is not None else None
            try:
                messages = self.prompt.build(
                    history, photos_only, system_text, params.max_new_tokens
                ).messages
                photos = photo_digests(messages[-1:])
                self._read_ahead_photos = photos
                if ticket is not None and queue is not None:
                    queue.wait(ticket)
                # Stop mid-photo for anyone else's turn; the message these photos are read for
                # waits instead, and takes all of it.
                give_way = (lambda: queue.someone_else_waits(photos)) if queue is not None else None
                shared = self.prompt.is_servers(system_text)
                warm(ChatRequest(messages, params, user=user, shared_system=shared), give_way=give_way)
            except Exception as exc:  # e.g. a bad photo: sending it says what is wrong
                log.debug("reading a draft's photos ahead failed: %s", exc)
            finally:
                self._read_ahead_photos = frozenset()
                if ticket is not None and queue is not None:
                    queue.leave(ticket)

        thread = threading.Thread(target=read_ahead, name="read-ahead", daemon=True)
        thread.start()
        return thread

    def _photos_read_ahead_in(self, request: ChatRequest) -> frozenset[str]:
        """The photos being read ahead that ``request`` brings (a read-ahead does not give way
        to the message it is done for). Hashed only while a read-ahead runs."""
        reading = self._read_ahead_photos
        return reading & photo_digests(request.messages) if reading else frozenset()

    # -- the steps of one reply ------------------------------------------------------------

    def _answer(
        self,
        history: Sequence[Message],
        message: Message,
        params: GenerationParams,
        system_prompt: str | None,
        literal_system: bool,
        cancel: threading.Event,
        language: str | None,
        prefix: str = "",
        user: str = "",
        request_id: str = "",
    ) -> Generator[Event, None, None]:
        started = time.perf_counter()
        request_ids.use_for_turn(request_id)  # for the log lines of this step (the caller's context)
        if message.is_empty():
            raise InvalidParams("the message is empty: type something, attach a photo or record your voice")
        self.quotas.admit(user)  # RateLimited past the user's limits
        system_text = self.prompt.system_text(system_prompt, literal_system)
        # Text that cannot fit is refused from its length, before anything tokenizes it.
        history = limits.within_context(self.chat_model, history, message, system_text, params.max_new_tokens)
        transcribe_s = 0.0
        if message.needs_transcript:
            transcript = self.transcribe(message.audio, language=language)
            transcribe_s = transcript.elapsed_s
            yield Transcribed(transcript)
            message = replace(message, transcript=transcript.text)
            if not message.words and not message.images:
                raise InvalidParams(
                    "no speech was heard in the recording: try again closer to the microphone"
                )
        hear = (lambda audio: self.transcribe(audio, language=language)) if self.transcriber else None
        transcribe_s += self.prompt.hear_clips([*history, message], hear)
        model = self.require_chat()  # after transcription: voice works without a chat model
        prompt = self.prompt.build(history, message, system_text, params.max_new_tokens, prefix)
        request = ChatRequest(
            prompt.messages,
            params,
            cancel,
            user=user,
            shared_system=self.prompt.is_servers(system_text),
            request_id=request_id,
        )
        ticket = self.queue.enter(self._photos_read_ahead_in(request)) if self.queue is not None else None
        try:
            queued_s = yield from self._wait_for_turn(ticket, cancel)
            if queued_s is None:
                return  # cancelled while waiting
            running = self.metrics.running.labels(model.info.name)
            running.inc()
            try:
                text, usage, stopped = yield from self._stream(model, request)
            except Exception as exc:
                self.metrics.failed(exc, model.info.name)
                raise
            finally:
                running.dec()
        finally:
            cancel.set()
            if self.queue is not None and ticket is not None:
                self.queue.leave(ticket)
        stats = self._stats(started, usage, stopped, queued_s, transcribe_s)
        self.metrics.reply(stats, model.info.name)
        self.quotas.spend(user, max(0, stats.prompt_tokens - stats.cached_tokens) + stats.tokens)
        yield Done(replace(stats, sent=prompt.sent), text)

    def _wait_for_turn(
        self, ticket: int | None, cancel: threading.Event
    ) -> Generator[Event, None, float | None]:
        """Seconds waited for the model (None: cancelled while waiting), saying the place in line."""
        if self.queue is None or ticket is None:
            return 0.0
        wait_started = time.perf_counter()
        timeout = 0.0  # say at once that we wait, then every poll
        while not self.queue.wait(ticket, timeout=timeout):
            if cancel.is_set():
                return None
            yield Queued(self.queue.position(ticket))
            timeout = QUEUE_POLL_S
        return time.perf_counter() - wait_started

    def _stream(
        self, model: ChatModel, request: ChatRequest
    ) -> Generator[Event, None, tuple[str, Usage, bool]]:
        """Tokens as the model makes them, cut at a stop sequence; then (text, usage, stopped)."""
        stop = StopFilter(request.params.stop)
        pieces: list[str] = []
        usage = Usage(finish_reason="cancelled")
        first_token_at = None
        stream = model.stream(request)
        try:
            for item in stream:
                if isinstance(item, Usage):
                    usage = item
                    continue
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                text = stop.feed(item)
                if text:
                    pieces.append(text)
                    yield Token(text)
                if stop.stopped:
                    request.cancel.set()  # the model stops within a token; its Usage still comes
        finally:
            stream.close()  # stops the worker and frees the model even if our caller left
        tail = stop.flush()
        if tail:
            pieces.append(tail)
            yield Token(tail)
        if usage.first_token_at is None:
            usage = replace(usage, first_token_at=first_token_at)
        return "".join(pieces), usage, stop.stopped

    @staticmethod
    def _stats(
        started: float, usage: Usage, stopped: bool, queued_s: float, transcribe_s: float
    ) -> ReplyStats:
        finished = time.perf_counter()
        first = usage.first_token_at or finished
        decode_time = finished - first
        tokens = usage.completion_tokens
        return ReplyStats(
            # from "the words are known" to the first new token: image loading, prompt
            # building and prefill included; queue wait and transcription reported apart
            ttft_s=max(0.0, first - started - queued_s - transcribe_s),
            tokens=tokens,
            tokens_per_s=(tokens - 1) / decode_time if tokens > 1 and decode_time > 0 else 0.0,
            elapsed_s=finished - started,
            prompt_tokens=usage.prompt_tokens,
            finish_reason="stop" if stopped else usage.finish_reason,
            queued_s=queued_s,
            transcribe_s=transcribe_s,
            cached_tokens=usage.cached_tokens,
        )


__all__ = [
    "Assistant",
    "Description",
    "Done",
    "Event",
    "Queued",
    "Reply",
    "ReplyStats",
    "Token",
    "Transcribed",
]
