"""The Assistant: one object the web page, the HTTP API and the CLI all call.

``reply`` turns a history plus the user's new turn into a stream of events:
``Transcribed`` (when audio was sent) → ``Queued``… (while others use the model) →
``Token``… → ``Done(stats)``. Problems raise typed errors from :mod:`assistant.errors`;
each boundary translates them once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from assistant import media, prompts
from assistant.conversation import Message, UserTurn, fit_to_context, limit_images, typed_and_spoken
from assistant.errors import AssistantError, InvalidParams, ModelUnavailable
from assistant.models.base import ChatMessage, ChatModel, ChatRequest, GenerationParams
from assistant.settings import Settings

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


@dataclass(frozen=True)
class Transcribed:
    transcript: "object"  # assistant.speech.Transcript


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


class StopFilter:
    """Holds back text that could be the start of a stop sequence; reports when one is hit."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.buffer = ""
        self.stopped = False

    def feed(self, chunk: str) -> str:
        if not self.stops:
            return chunk
        self.buffer += chunk
        hits = [i for i in (self.buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.buffer = self.buffer[: min(hits)], ""
            return out
        keep = max((k for s in self.stops for k in range(1, len(s)) if self.buffer.endswith(s[:k])), default=0)
        out = self.buffer[: len(self.buffer) - keep]
        self.buffer = self.buffer[len(out) :]
        return out

    def flush(self) -> str:
        out, self.buffer = self.buffer, ""
        return out


class Assistant:
    def __init__(self, settings: Settings, chat_model: ChatModel | None = None, transcriber=None, chat_error: str | None = None):
        self.settings = settings
        self.chat_model = chat_model
        self.transcriber = transcriber
        # Why the chat model is missing (shown as a banner; voice transcription still works).
        self.chat_error = chat_error if chat_model is None else None
        self._image_cache: dict[tuple, object] = {}
        self._image_cache_lock = threading.Lock()

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, settings: Settings, *, load_chat: bool = True, load_asr: bool = True, require_chat: bool = False) -> "Assistant":
        """Load the models once. A chat model that cannot be loaded is remembered as
        ``chat_error`` (unless ``require_chat``), so the app can still start and transcribe."""
        from assistant.settings import resolve_defaults

        settings = resolve_defaults(settings)
        chat_model, chat_error = None, None
        if load_chat:
            try:
                chat_model = load_chat_model(settings)
            except ModelUnavailable as exc:
                if require_chat:
                    raise
                chat_error = str(exc)
                log.error("%s", exc)
        transcriber = load_transcriber(settings) if load_asr else None
        return cls(settings, chat_model, transcriber, chat_error)

    # -- speech ----------------------------------------------------------------------------

    def transcribe(self, audio, language: str | None = None):
        if self.transcriber is None:
            raise ModelUnavailable("speech recognition is not loaded")
        return self.transcriber.transcribe(audio, language=language or self.settings.language)

    # -- chat ------------------------------------------------------------------------------

    def system_prompt(self, name_or_text: str | None) -> str:
        chosen = self.settings.system_prompt if name_or_text is None else name_or_text
        return prompts.resolve(chosen, self.settings.prompts_dir)

    def params(self, **overrides) -> GenerationParams:
        """Generation params with the configured defaults, validated."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        overrides.setdefault("max_new_tokens", self.settings.default_max_new_tokens)
        if "stop" in overrides:
            overrides["stop"] = tuple(overrides["stop"])
        return GenerationParams(**overrides).validated(self.settings.max_new_tokens_cap)

    def load_image(self, source, name: str | None = None):
        """Validated, oriented, RGB, downscaled image; files are cached by path and mtime."""
        s = self.settings
        key = None
        if isinstance(source, (str, Path)):
            try:
                stat = Path(source).stat()
                key = (str(source), stat.st_mtime_ns, stat.st_size)
            except OSError:
                key = None
        if key is not None:
            with self._image_cache_lock:
                if key in self._image_cache:
                    return self._image_cache[key]
        image = media.load_image(source, max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels, max_side=s.image_max_side, name=name)
        if key is not None:
            with self._image_cache_lock:
                if len(self._image_cache) > 64:
                    self._image_cache.clear()
                self._image_cache[key] = image
        return image

    def _chat_message(self, message: Message) -> ChatMessage:
        return ChatMessage(message.role, message.text, tuple(self.load_image(src) for src in message.images))

    def build_messages(self, history: Sequence[Message], user: Message, system_prompt: str | None, max_new_tokens: int) -> list[ChatMessage]:
        """System + as much history as fits the context, newest images kept up to the cap."""
        model = self._require_chat()
        trimmed = limit_images([*history, user], self.settings.max_images_in_context)
        chat = [self._chat_message(m) for m in trimmed]
        system = ChatMessage("system", system_prompt) if system_prompt else None
        budget = model.info.context_length - max_new_tokens
        return fit_to_context(system, chat, model.count_tokens, budget)

    def reply(
        self,
        history: Sequence[Message],
        turn: UserTurn,
        params: GenerationParams | None = None,
        *,
        system_prompt: str | None = None,
        cancel: threading.Event | None = None,
        language: str | None = None,
        literal_system: bool = False,
    ) -> Iterator[Event]:
        """Stream the answer to ``turn`` given ``history``. ``system_prompt`` is a persona
        name or free text (None = the configured default, "" = none); with ``literal_system``
        it is always taken as text, even when it is one word that names a persona."""
        started = time.perf_counter()
        params = params or self.params()
        if turn.is_empty():
            raise InvalidParams("the message is empty: type something, attach a photo or record your voice")
        if literal_system and system_prompt is not None:
            system_text = system_prompt.strip()
        else:
            system_text = self.system_prompt(system_prompt)
        user_text, transcribe_s = turn.text, 0.0
        if turn.audio is not None:
            transcript = self.transcribe(turn.audio, language=language)
            transcribe_s = transcript.elapsed_s
            yield Transcribed(transcript)
            if transcript.is_empty and not turn.text.strip() and not turn.images:
                raise InvalidParams("no speech was heard in the recording: try again closer to the microphone")
            user_text = typed_and_spoken(turn.text, transcript.text)
        model = self._require_chat()  # after transcription: voice works without a chat model
        user = Message("user", user_text, tuple(turn.images))
        messages = self.build_messages(history, user, system_text, params.max_new_tokens)

        request = ChatRequest(messages, params, cancel or threading.Event())
        queue = getattr(model, "queue", None)
        ticket = queue.enter() if queue else None
        queued_s = 0.0
        pieces: list[str] = []
        try:
            if queue is not None:
                wait_started = time.perf_counter()
                timeout = 0.0  # say at once that we wait, then every poll
                while not queue.wait(ticket, timeout=timeout):
                    if request.cancel.is_set():
                        return
                    yield Queued(queue.position(ticket))
                    timeout = QUEUE_POLL_S
                queued_s = time.perf_counter() - wait_started
            stop = StopFilter(params.stop)
            stream = model.stream(request)
            try:
                for chunk in stream:
                    text = stop.feed(chunk)
                    if text:
                        pieces.append(text)
                        yield Token(text)
                    if stop.stopped:
                        request.cancel.set()
                        break
            finally:
                stream.close()  # stops the worker and frees the model even if our caller left
            tail = stop.flush()
            if tail:
                pieces.append(tail)
                yield Token(tail)
        finally:
            request.cancel.set()
            if queue is not None:
                queue.leave(ticket)
        finished = time.perf_counter()
        usage = request.usage
        first = usage.first_token_at or finished
        decode_time = finished - first
        yield Done(
            ReplyStats(
                # from "the words are known" to the first new token: image loading, prompt
                # building and prefill included; queue wait and transcription reported apart
                ttft_s=max(0.0, first - started - queued_s - transcribe_s),
                tokens=usage.completion_tokens,
                tokens_per_s=(usage.completion_tokens - 1) / decode_time if usage.completion_tokens > 1 and decode_time > 0 else 0.0,
                elapsed_s=finished - started,
                prompt_tokens=usage.prompt_tokens,
                finish_reason="stop" if stop.stopped else usage.finish_reason,
                queued_s=queued_s,
                transcribe_s=transcribe_s,
            ),
            "".join(pieces),
        )

    def _require_chat(self) -> ChatModel:
        if self.chat_model is None:
            raise ModelUnavailable(self.chat_error or "no chat model is loaded")
        return self.chat_model


def load_chat_model(settings: Settings) -> ChatModel:
    if settings.backend == "openai":
        from assistant.models.remote import RemoteChatModel

        return RemoteChatModel.from_settings(settings)
    from assistant.models.local import LocalChatModel

    return LocalChatModel.load(
        settings.model,
        device=settings.device,
        quantization=settings.quantization,
        image_max_side=settings.image_max_side,
    )


def load_transcriber(settings: Settings):
    if settings.asr_backend == "openai":
        from assistant.models.remote import RemoteTranscriber

        return RemoteTranscriber.from_settings(settings)
    from assistant.speech import Transcriber

    return Transcriber(
        settings.asr_model,
        device=settings.asr_device,
        compute_type=settings.asr_compute_type,
        beam_size=settings.asr_beam_size,
        max_audio_seconds=settings.max_audio_seconds,
        max_audio_bytes=settings.max_audio_bytes,
    )


__all__ = ["Assistant", "AssistantError", "Done", "Event", "Queued", "ReplyStats", "Token", "Transcribed"]
