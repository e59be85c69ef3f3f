"""The Assistant: one object the web page, the HTTP API and the CLI all call.

``reply(history, message)`` returns a :class:`Reply`. Iterate it for events —
``Transcribed`` (when the message has a recording) → ``Queued``… (while others use the model)
→ ``Token``… → ``Done(stats)`` — and read ``.text``, ``.stats``, ``.transcript`` and
``.message`` (the user message as answered, transcript included) afterwards. Problems raise
typed errors from :mod:`assistant.errors`; each boundary translates them once.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from PIL import Image

from assistant import documents, limits, media, prompts, video
from assistant.conversation import (
    Attachment,
    DocumentAttachment,
    ImageAttachment,
    Message,
    VideoAttachment,
    fit_to_context,
    limit_images,
)
from assistant.errors import InvalidParams, ModelUnavailable
from assistant.models.base import (
    AudioInput,
    ChatModel,
    ChatRequest,
    ModelInfo,
    SpeechChunk,
    Synthesizer,
    Transcriber,
    Transcript,
    Usage,
    VoiceInfo,
)
from assistant.models.prefix_cache import image_digest
from assistant.options import GenerationParams
from assistant.queueing import TurnQueue
from assistant.settings import MB, Settings, resolve_defaults

if TYPE_CHECKING:
    from assistant.synthesis import SpokenReply

log = logging.getLogger(__name__)

QUEUE_POLL_S = 0.5
IMAGE_CACHE_ENTRIES = 64
MEDIA_CACHE_ENTRIES = 16


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


@dataclass(frozen=True)
class Description:
    """What is loaded, as the page's settings panel and ``/v1/models`` show it."""

    chat_model: str | None  # the configured name, loaded or not
    chat: ModelInfo | None  # None: not loaded (see chat_error)
    chat_error: str | None
    speech_model: str | None  # None: speech recognition is not loaded
    speech_device: str | None
    voice_model: str | None = None  # None: speech synthesis is not loaded (--tts off)
    voices: tuple[VoiceInfo, ...] = ()


class Reply:
    """One answer in the making (like llm's ``Response``): iterate it for events; afterwards
    ``text``, ``stats``, ``transcript`` and ``message`` hold the outcome. ``close()`` (or
    leaving a ``with`` block) stops the generation and frees the model at once."""

    def __init__(self, message: Message, steps: Generator[Event, None, None] | None = None):
        self.message = message  # the user's message; gains its transcript once heard
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
        # A model that runs one generation at a time gets a first-come, first-served queue.
        self.queue = TurnQueue() if chat_model is not None and not chat_model.concurrent else None
        self._read_ahead_photos: frozenset[str] = frozenset()  # digests of the photos being read ahead
        self._image_cache: dict[tuple, Any] = {}
        self._media_cache: dict[tuple, Any] = {}  # clips, documents, rendered pages
        self._image_cache_lock = threading.Lock()

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
        ``chat_error`` (unless ``require_chat``), so the app can still start and transcribe."""
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
        synthesizer = load_synthesizer(settings) if load_tts and settings.tts == "on" else None
        return cls(settings, chat_model, transcriber, chat_error, synthesizer)

    def describe(self) -> Description:
        return Description(
            chat_model=self.chat_model.info.name if self.chat_model is not None else self.settings.model,
            chat=self.chat_model.info if self.chat_model is not None else None,
            chat_error=self.chat_error,
            speech_model=self.transcriber.name if self.transcriber is not None else None,
            speech_device=self.transcriber.device if self.transcriber is not None else None,
            voice_model=self.synthesizer.name if self.synthesizer is not None else None,
            voices=self.synthesizer.voices if self.synthesizer is not None else (),
        )

    # -- speech ----------------------------------------------------------------------------

    def transcribe(self, audio: AudioInput, language: str | None = None) -> Transcript:
        if self.transcriber is None:
            raise ModelUnavailable("speech recognition is not loaded on this server")
        return self.transcriber.transcribe(audio, language=language or self.settings.language)

    def require_voice(self) -> Synthesizer:
        if self.synthesizer is None:
            raise ModelUnavailable("speech synthesis is off on this server (started with --tts off)")
        return self.synthesizer

    def speak(self, text: str, voice: str | None = None, speed: float | None = None) -> Iterator[SpeechChunk]:
        """``text`` (Markdown welcome) as speech, piece by piece as each is synthesized."""
        return self.require_voice().speak(text, voice=voice, speed=speed)

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
        from assistant.synthesis import SpokenReply

        return SpokenReply(
            self.require_voice(),
            voice=voice,
            speed=speed,
            language=language,
            listener_timeout_s=listener_timeout_s,
        )

    # -- chat ------------------------------------------------------------------------------

    def system_prompt(self, name_or_text: str | None) -> str:
        chosen = self.settings.system_prompt if name_or_text is None else name_or_text
        return prompts.resolve(chosen, self.settings.prompts_dir)

    def _system_text(self, system_prompt: str | None, literal: bool) -> str:
        """The system text a reply uses: ``system_prompt`` as given when ``literal``, else a
        persona name or free text (None = the configured default)."""
        return (
            system_prompt.strip()
            if literal and system_prompt is not None
            else self.system_prompt(system_prompt)
        )

    def _system_is_servers(self, system_text: str) -> bool:
        """Whether the system text is the server's own (the configured prompt or one of the
        personas) rather than text a user wrote: only then may a model's cache of it serve
        every user."""
        if not system_text:
            return False
        if system_text == self._system_text(None, False):
            return True
        return system_text in prompts.texts(self.settings.prompts_dir)

    def params(self, **overrides: Any) -> GenerationParams:
        """Generation params with the configured defaults, validated (None = default)."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        overrides.setdefault("max_new_tokens", self.settings.default_max_new_tokens)
        if "stop" in overrides:
            overrides["stop"] = tuple(overrides["stop"])
        return GenerationParams.within(self.settings.max_new_tokens_cap, **overrides)

    def require_chat(self) -> ChatModel:
        if self.chat_model is None:
            raise ModelUnavailable(self.chat_error or "no chat model is loaded")
        return self.chat_model

    def load_image(self, source: Any, name: str | None = None) -> Any:
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
        image = media.load_image(
            source,
            max_bytes=s.max_image_bytes,
            max_pixels=s.max_image_pixels,
            max_side=s.image_max_side,
            name=name,
        )
        if key is not None:
            with self._image_cache_lock:
                if len(self._image_cache) > IMAGE_CACHE_ENTRIES:
                    self._image_cache.clear()
                self._image_cache[key] = image
        return image

    # -- clips and documents ---------------------------------------------------------------

    def _cached(self, kind: str, source: Any, extra: tuple, load: Any) -> Any:
        """``load()``, remembered by the file's path, mtime and size (or the bytes' hash)."""
        if isinstance(source, (str, Path)):
            try:
                st = Path(source).stat()
                key: tuple = (kind, str(source), st.st_mtime_ns, st.st_size, *extra)
            except OSError:
                return load()
        elif isinstance(source, (bytes, bytearray)):
            key = (kind, hashlib.blake2b(source, digest_size=16).hexdigest(), *extra)
        else:
            return load()
        with self._image_cache_lock:
            if key in self._media_cache:
                return self._media_cache[key]
        value = load()
        with self._image_cache_lock:
            if len(self._media_cache) > MEDIA_CACHE_ENTRIES:
                self._media_cache.clear()
            self._media_cache[key] = value
        return value

    def load_clip(self, source: Any, name: str | None = None) -> video.Clip:
        """A validated clip: frames sampled and downscaled, the sound track decoded (cached)."""
        if isinstance(source, video.Clip):
            return source
        s = self.settings

        def load() -> video.Clip:
            return video.load_clip(
                source,
                max_bytes=s.max_video_bytes,
                max_seconds=s.max_video_seconds,
                max_pixels=s.max_video_pixels,
                max_frames=s.video_frames,
                fps=s.video_fps,
                max_side=s.video_max_side,
                name=name,
            )

        return self._cached("clip", source, (), load)

    def load_document(self, source: Any, name: str | None = None) -> documents.Document:
        """A validated PDF or text file with its text (cached)."""
        s = self.settings

        def load() -> documents.Document:
            return documents.load_document(
                source,
                max_bytes=s.max_document_bytes,
                max_pages=s.max_document_pages,
                max_page_inches=s.max_page_inches,
                name=name,
            )

        return self._cached("document", source, (), load)

    def _pages(self, document: documents.Document, numbers: list[int]) -> list[tuple[int, Any]]:
        side = self.settings.image_max_side
        return self._cached(
            "pages",
            document.source,
            (tuple(numbers), side),
            lambda: documents.render_pages(document, numbers, max_side=side),
        )

    def _video_native(self) -> bool:
        return bool(getattr(self.chat_model, "accepts_video", False))

    def _hear_clips(self, messages: Sequence[Message], language: str | None) -> float:
        """Transcribe the sound track of every clip not heard yet; seconds spent."""
        spent = 0.0
        for message in messages:
            for source in message.videos:
                clip = self.load_clip(source)
                if clip.audio is None or clip.transcript is not None or self.transcriber is None:
                    continue
                transcript = self.transcribe(clip.audio, language=language)
                spent += transcript.elapsed_s
                heard = replace(clip, transcript=transcript.text)
                with self._image_cache_lock:  # the cached clip now knows what is said in it
                    for key, value in self._media_cache.items():
                        if value is clip:
                            self._media_cache[key] = heard
        return spent

    def _clip_parts(self, clip: video.Clip, native: bool) -> tuple[list[Any], list[Any], str]:
        """(videos, images, text) a model gets for one clip."""
        said = ""
        if clip.transcript:
            said = f"\n[said in {clip.name}: {clip.transcript}]"
        elif clip.transcript == "":
            said = f"\n[nothing is said in {clip.name}]"
        if native:
            times = ", ".join(media._seconds(t) for t in clip.timestamps)
            return [clip], [], f"[{clip.describe()}; {len(clip.frames)} frames at {times}]{said}"
        frames, note = video.frames_as_images(clip, self.settings.video_frames_as_images)
        return [], frames, note + said

    def _document_parts(self, document: documents.Document, question: str) -> tuple[list[Any], str]:
        """(page pictures, text) a model gets for one document."""
        shown = documents.pages_to_show(document, question, self.settings.document_page_images)
        pages = self._pages(document, shown)
        text = documents.for_model(document, [n for n, _ in pages], self._document_chars())
        return [image for _, image in pages], text

    def _document_chars(self) -> int:
        """Characters of document text that may go to the model: the setting, held to about half
        the context (a token is at least ~2 characters of prose)."""
        cap = self.settings.document_max_chars
        if self.chat_model is not None:
            cap = min(cap, self.chat_model.info.context_length)
        return max(1000, cap)

    def sent_summary(self, message: Message) -> str:
        """What the model got of this message's clips and documents, as the stats line says it."""
        parts = []
        native = self._video_native()
        for source in message.videos:
            clip = self.load_clip(source)
            if native:
                parts.append(f"video: {len(clip.frames)} frames")
            else:
                count = min(len(clip.frames), max(1, self.settings.video_frames_as_images))
                parts.append(f"video: {count} frames as pictures")
            if clip.transcript:
                parts.append("its speech as text")
        for attachment in message.attachments:
            if not isinstance(attachment, DocumentAttachment):
                continue
            document = self.load_document(attachment.source, attachment.name)
            if document.kind == "text":
                parts.append(f"{document.name}: text")
                continue
            wanted = documents.pages_to_show(document, message.words, self.settings.document_page_images)
            shown = [n for n, _ in self._pages(document, wanted)]
            pages = f"page{'s' * (len(shown) != 1)} {', '.join(map(str, shown))}" if shown else "no pages"
            text = " + text" if document.has_text else ""
            parts.append(f"{document.name}: {pages} of {document.page_count} as pictures{text}")
        return ", ".join(parts)

    def _for_model(self, message: Message) -> Message:
        """What a model reads: the words it should hear, images loaded and normalised; clips as
        video (models that take it) or as a few timed frames, with what is said in them;
        documents as their text and pictures of their first and asked-about pages."""
        images: list[Any] = [self.load_image(src) for src in message.images]
        clips: list[Any] = []
        notes: list[str] = []
        native = self._video_native()
        for source in message.videos:
            clip_videos, clip_images, note = self._clip_parts(self.load_clip(source), native)
            clips += clip_videos
            images += clip_images
            notes.append(note)
        for attachment in message.attachments:
            if not isinstance(attachment, DocumentAttachment):
                continue
            document = self.load_document(attachment.source, attachment.name)
            pages, note = self._document_parts(document, message.words)
            images += pages
            notes.append(note)
        text = "\n\n".join([*notes, message.words]) if notes else message.words
        attachments: list[Attachment] = [ImageAttachment(im) for im in images]
        attachments += [VideoAttachment(clip) for clip in clips]
        return Message(message.role, text.strip(), tuple(attachments), id=message.id, created=message.created)

    def _expand_for_model(self, messages: Sequence[Message]) -> list[Message]:
        """Each message as a model reads it; frames and pages count as images for the cap, and
        only the newest clip goes as video (older ones keep their words)."""
        chat = [self._for_model(m) for m in messages]
        chat = limit_images(chat, self.settings.max_images_in_context)
        seen_video = False
        for i in range(len(chat) - 1, -1, -1):
            if chat[i].videos:
                if seen_video:
                    kept = tuple(a for a in chat[i].attachments if not isinstance(a, VideoAttachment))
                    chat[i] = replace(chat[i], attachments=kept)
                seen_video = True
        return chat

    def build_messages(
        self,
        history: Sequence[Message],
        user: Message,
        system_prompt: str | None,
        max_new_tokens: int,
        prefix: str = "",
    ) -> list[Message]:
        """System + as much history as fits the context, newest images kept up to the cap;
        then, to be continued, the reply's ``prefix`` when there is one."""
        model = self.require_chat()
        trimmed = limit_images([*history, user], self.settings.max_images_in_context)
        chat = self._expand_for_model(trimmed)
        system = Message("system", system_prompt) if system_prompt else None
        started = Message.assistant(prefix) if prefix else None
        budget = model.info.context_length - max_new_tokens - (model.count_tokens(started) if started else 0)
        fitted = fit_to_context(system, chat, model.count_tokens, budget)
        return [*fitted, started] if started else fitted

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
        serves no one else."""
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
        )
        return Reply(message, steps)

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
        system_text = self._system_text(system_prompt, literal_system)
        photos_only = Message("user", "", tuple(ImageAttachment(p) for p in draft.images))
        queue = self.queue

        def read_ahead() -> None:
            ticket = queue.enter() if queue is not None else None
            try:
                messages = self.build_messages(history, photos_only, system_text, params.max_new_tokens)
                photos = photo_digests(messages[-1:])
                self._read_ahead_photos = photos
                if ticket is not None and queue is not None:
                    queue.wait(ticket)
                # Stop mid-photo for anyone else's turn; the message these photos are read for
                # waits instead, and takes all of it.
                give_way = (lambda: queue.someone_else_waits(photos)) if queue is not None else None
                shared = self._system_is_servers(system_text)
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
    ) -> Generator[Event, None, None]:
        started = time.perf_counter()
        if message.is_empty():
            raise InvalidParams("the message is empty: type something, attach a photo or record your voice")
        system_text = self._system_text(system_prompt, literal_system)
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
        transcribe_s += self._hear_clips([*history, message], language)
        model = self.require_chat()  # after transcription: voice works without a chat model
        request = ChatRequest(
            self.build_messages(history, message, system_text, params.max_new_tokens, prefix),
            params,
            cancel,
            user=user,
            shared_system=self._system_is_servers(system_text),
        )
        ticket = self.queue.enter(self._photos_read_ahead_in(request)) if self.queue is not None else None
        try:
            queued_s = yield from self._wait_for_turn(ticket, cancel)
            if queued_s is None:
                return  # cancelled while waiting
            text, usage, stopped = yield from self._stream(model, request)
        finally:
            cancel.set()
            if self.queue is not None and ticket is not None:
                self.queue.leave(ticket)
        stats = self._stats(started, usage, stopped, queued_s, transcribe_s)
        yield Done(replace(stats, sent=self.sent_summary(message)), text)

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


def load_chat_model(settings: Settings) -> ChatModel:
    if settings.backend == "openai":
        from assistant.models.remote import RemoteChatModel

        return RemoteChatModel.from_settings(settings)
    from assistant.models.local import LocalChatModel

    return LocalChatModel.load(
        settings.model or "",
        device=settings.device,
        quantization=settings.quantization,
        image_max_side=settings.image_max_side,
        dtype=settings.dtype,
        prefix_cache_bytes=None if settings.prefix_cache_mb is None else settings.prefix_cache_mb * MB,
    )


def load_transcriber(settings: Settings) -> Transcriber:
    if settings.asr_backend == "openai":
        from assistant.models.remote import RemoteTranscriber

        return RemoteTranscriber.from_settings(settings)
    from assistant.speech import Transcriber as LocalTranscriber

    return LocalTranscriber(
        settings.asr_model,
        device=settings.asr_device,
        compute_type=settings.asr_compute_type,
        beam_size=settings.asr_beam_size,
        max_audio_seconds=settings.max_audio_seconds,
        max_audio_bytes=settings.max_audio_bytes,
    )


def load_synthesizer(settings: Settings) -> Synthesizer:
    from assistant import synthesis

    return synthesis.load(settings)


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
