"""From a chat to what the model reads, in one pass: the system text, as much history as fits the
context, and every attachment in the form the model takes it — photos loaded and normalised,
clips as video (models that take it) or as a few timed frames with what is said in them,
documents as their text and pictures of their first and asked-about pages.

    prompt = builder.build(history, user, system_text, max_new_tokens)
    prompt.messages  # for ChatRequest
    prompt.sent      # what the model got of the new message's clips and documents (stats line)

Loaded media are remembered by path, mtime and size (or the bytes' hash): a chat's photos are
read once, not once per turn. No model work here; the model's own ``count_tokens`` decides
what fits.

The system text comes from personas: plain ``.txt`` files in ``prompts/``. A persona may have a
variant for models that read text only in ``prompts/text-only/`` (the default one tells a
vision model it can see images; a 135M text model told so answered "Paris" in French and a
week as 50 days).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from assistant import limits, media
from assistant.conversation import (
    Attachment,
    DocumentAttachment,
    ImageAttachment,
    Message,
    VideoAttachment,
    fit_to_context,
    limit_images,
)
from assistant.errors import InvalidParams, MediaError, ModelUnavailable
from assistant.media import documents, ocr, video
from assistant.models.base import ChatModel
from assistant.settings import Settings
from assistant.speech import Transcript

log = logging.getLogger(__name__)

# How many loaded items of each kind are remembered (photos are small and often reused).
CACHE_ENTRIES = {"image": 64, "ocr": 128}
OCR_SECONDS = 15.0  # one picture's OCR at most (a 3-MP scan takes ~3 s on 2 cores)
OCR_FRAMES = 4  # of a clip's frames, read for a model that cannot see them (~1 s each on 2 cores)
NO_PICTURES = "this model cannot see pictures"
DEFAULT_CACHE_ENTRIES = 16
TEXT_ONLY = "text-only"  # the folder of persona variants for text-only models
_PERSONA = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# -- personas: system prompts stored as files ------------------------------------------------


def personas(prompts_dir: Path) -> list[str]:
    """Persona names (file stems), 'default' first."""
    names = sorted(p.stem for p in Path(prompts_dir).glob("*.txt"))
    return sorted(names, key=lambda n: n != "default")


def load_persona(name: str, prompts_dir: Path, text_only: bool = False) -> str:
    """The text of persona ``name`` (its text-only variant where asked and there is one).
    Names are file stems only: no paths, no traversal."""
    if not _PERSONA.match(name or ""):
        raise InvalidParams(f"unknown system prompt {name!r}: use one of {', '.join(personas(prompts_dir))}")
    path = Path(prompts_dir) / f"{name}.txt"
    variant = Path(prompts_dir) / TEXT_ONLY / f"{name}.txt"
    if text_only and path.is_file() and variant.is_file():
        path = variant
    if not path.is_file():
        raise InvalidParams(f"unknown system prompt {name!r}: use one of {', '.join(personas(prompts_dir))}")
    return path.read_text(encoding="utf-8").strip()


def persona_texts(prompts_dir: Path) -> set[str]:
    """The text of every persona and variant (as :func:`load_persona` gives them)."""
    names = personas(prompts_dir)
    return {load_persona(name, prompts_dir, text_only) for name in names for text_only in (False, True)}


def resolve_system_prompt(name_or_text: str | None, prompts_dir: Path, text_only: bool = False) -> str:
    """A persona name gives that file's text; anything else is taken as the prompt itself."""
    if not name_or_text:
        return ""
    if _PERSONA.match(name_or_text):  # a bare word is a persona name; an unknown one is an error
        return load_persona(name_or_text, prompts_dir, text_only)
    return name_or_text.strip()


@dataclass(frozen=True)
class Prompt:
    messages: list[Message]  # system, the history that fits, the new turn (and a reply's start)
    sent: str  # what the model got of the new message's clips and documents, as the stats say it


class MediaCache:
    """Loaded photos, clips, documents and rendered pages, each kind with its own size."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[tuple, Any]] = {}
        self._lock = threading.Lock()

    def get(self, kind: str, source: Any, extra: tuple, load: Callable[[], Any]) -> Any:
        """``load()``, remembered by the file's path, mtime and size (or the bytes' hash)."""
        if isinstance(source, (str, Path)):
            try:
                st = Path(source).stat()
                key: tuple = (str(source), st.st_mtime_ns, st.st_size, *extra)
            except OSError:
                return load()
        elif isinstance(source, (bytes, bytearray)):
            key = (hashlib.blake2b(source, digest_size=16).hexdigest(), *extra)
        else:
            return load()
        with self._lock:
            found = self._entries.get(kind, {}).get(key)
        if found is not None:
            return found
        value = load()
        with self._lock:
            entries = self._entries.setdefault(kind, {})
            if len(entries) >= CACHE_ENTRIES.get(kind, DEFAULT_CACHE_ENTRIES):
                entries.clear()
            entries[key] = value
        return value

    def swap(self, kind: str, old: Any, new: Any) -> None:
        """Remember ``new`` wherever ``old`` was (a clip that now knows what is said in it)."""
        with self._lock:
            entries = self._entries.get(kind, {})
            for key, value in entries.items():
                if value is old:
                    entries[key] = new


class PromptBuilder:
    """``model``: the chat model the prompts are for (None: none is loaded, and ``build`` raises)."""

    def __init__(self, settings: Settings, model: ChatModel | None):
        self.settings = settings
        self.model = model
        self.cache = MediaCache()

    # -- the system text -------------------------------------------------------------------

    def system_prompt(self, name_or_text: str | None) -> str:
        chosen = self.settings.system_prompt if name_or_text is None else name_or_text
        return resolve_system_prompt(chosen, self.settings.prompts_dir, text_only=not self.sees_pictures())

    def system_text(self, system_prompt: str | None, literal: bool) -> str:
        """The system text a reply uses: ``system_prompt`` as given when ``literal``, else a
        persona name or free text (None = the configured default)."""
        if literal and system_prompt is not None:
            return system_prompt.strip()
        return self.system_prompt(system_prompt)

    def is_servers(self, system_text: str) -> bool:
        """Whether the system text is the server's own (the configured prompt or one of the
        personas) rather than text a user wrote: only then may a model's cache of it serve
        every user."""
        if not system_text:
            return False
        if system_text == self.system_text(None, False):
            return True
        return system_text in persona_texts(self.settings.prompts_dir)

    # -- attachments -----------------------------------------------------------------------

    def load_image(self, source: Any, name: str | None = None) -> Any:
        """Validated, oriented, RGB, downscaled image (cached)."""
        s = self.settings
        return self.cache.get(
            "image",
            source,
            (),
            lambda: media.load_image(
                source,
                max_bytes=s.max_image_bytes,
                max_pixels=s.max_image_pixels,
                max_side=s.image_max_side,
                name=name,
            ),
        )

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

        return self.cache.get("clip", source, (), load)

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

        return self.cache.get("document", source, (), load)

    def _pages(self, document: documents.Document, numbers: list[int]) -> list[tuple[int, Any]]:
        side = self.settings.image_max_side
        return self.cache.get(
            "pages",
            document.source,
            (tuple(numbers), side),
            lambda: documents.render_pages(document, numbers, max_side=side),
        )

    def hear_clips(
        self, messages: Sequence[Message], transcribe: Callable[[Any], Transcript] | None
    ) -> float:
        """Transcribe the sound track of every clip not heard yet; seconds spent."""
        spent = 0.0
        for message in messages:
            for source in message.videos:
                clip = self.load_clip(source)
                if clip.audio is None or clip.transcript is not None or transcribe is None:
                    continue
                transcript = transcribe(clip.audio)
                spent += transcript.elapsed_s
                self.cache.swap("clip", clip, replace(clip, transcript=transcript.text))
        return spent

    # -- one pass ----------------------------------------------------------------------------

    def build(
        self,
        history: Sequence[Message],
        user: Message,
        system_text: str,
        max_new_tokens: int,
        prefix: str = "",
    ) -> Prompt:
        """System + as much history as fits the context, newest images kept up to the cap;
        then, to be continued, the reply's ``prefix`` when there is one."""
        model = self.model
        if model is None:
            raise ModelUnavailable("no chat model is loaded")
        trimmed = limit_images([*history, user], self.settings.max_images_in_context)
        expanded = [self._for_model(m) for m in trimmed]
        chat = self._newest_clip_only(
            limit_images([m for m, _ in expanded], self.settings.max_images_in_context)
        )
        system = Message("system", system_text) if system_text else None
        started = Message.assistant(prefix) if prefix else None
        reserve = limits.reply_reserve(model.info.context_length, max_new_tokens)
        budget = model.info.context_length - reserve - (model.count_tokens(started) if started else 0)
        fitted = fit_to_context(system, chat, model.count_tokens, budget)
        return Prompt([*fitted, started] if started else fitted, ", ".join(expanded[-1][1]))

    def sees_pictures(self) -> bool:
        model = self.model
        return model is None or model.info.vision

    def _video_native(self) -> bool:
        return bool(getattr(self.model, "accepts_video", False))

    def _for_model(self, message: Message) -> tuple[Message, list[str]]:
        """What a model reads of one message, and what it got of its clips and documents."""
        images: list[Any] = [self.load_image(src) for src in message.images]
        clips: list[Any] = []
        notes: list[str] = []
        sent: list[str] = []
        sees = self.sees_pictures()
        if images and (not sees or self.settings.ocr == "on"):
            for number, (source, image) in enumerate(zip(message.images, images), 1):
                note, got = self._photo_text(source, image, number, sees)
                notes.append(note)
                sent.append(got)
        if not sees:
            images = []
        native = self._video_native()
        for source in message.videos:
            clip = self.load_clip(source)
            clip_videos, clip_images, note = self._clip_parts(clip, native, sees)
            clips += clip_videos
            notes.append(note)
            if sees:
                images += clip_images
                sent.append(
                    f"video: {len(clip.frames)} frames"
                    if native
                    else f"video: {len(clip_images)} frames as pictures"
                )
            else:
                on_frames = self._frames_text(source, clip, clip_images)
                notes += [on_frames] if on_frames else []
                sent.append(
                    f"video: {'text of its frames by OCR' if on_frames else 'no frames (text-only model)'}"
                )
            if clip.transcript:
                sent.append("its speech as text")
        for attachment in message.attachments:
            if not isinstance(attachment, DocumentAttachment):
                continue
            document = self.load_document(attachment.source, attachment.name)
            pages, note, shown, read = self._document_parts(document, message.words, sees)
            images += pages if sees else []
            notes.append(note)
            by_ocr = f", OCR of page{'s' * (len(read) != 1)} {', '.join(map(str, read))}" if read else ""
            if document.kind == "text":
                sent.append(f"{document.name}: text")
            elif not sees:
                sent.append(
                    f"{document.name}: text{by_ocr}"
                    if document.has_text or read
                    else f"{document.name}: no text"
                )
            else:
                named = f"page{'s' * (len(shown) != 1)} {', '.join(map(str, shown))}" if shown else "no pages"
                text = " + text" if document.has_text else ""
                sent.append(f"{document.name}: {named} of {document.page_count} as pictures{text}{by_ocr}")
        text = "\n\n".join([*notes, message.words]) if notes else message.words
        attachments: list[Attachment] = [ImageAttachment(im) for im in images]
        attachments += [VideoAttachment(clip) for clip in clips]
        shown_message = Message(
            message.role, text.strip(), tuple(attachments), id=message.id, created=message.created
        )
        return shown_message, sent

    @staticmethod
    def _newest_clip_only(chat: list[Message]) -> list[Message]:
        """Only the newest clip goes as video (older ones keep their words)."""
        seen_video = False
        for i in range(len(chat) - 1, -1, -1):
            if chat[i].videos:
                if seen_video:
                    kept = tuple(a for a in chat[i].attachments if not isinstance(a, VideoAttachment))
                    chat[i] = replace(chat[i], attachments=kept)
                seen_video = True
        return chat

    def _clip_parts(
        self, clip: video.Clip, native: bool, sees: bool = True
    ) -> tuple[list[Any], list[Any], str]:
        """(videos, images, text) a model gets for one clip."""
        said = ""
        if clip.transcript:
            said = f"\n[said in {clip.name}: {clip.transcript}]"
        elif clip.transcript == "":
            said = f"\n[nothing is said in {clip.name}]"
        if native:
            times = ", ".join(media.format_seconds(t) for t in clip.timestamps)
            return [clip], [], f"[{clip.describe()}; {len(clip.frames)} frames at {times}]{said}"
        frames, note = video.frames_as_images(clip, self.settings.video_frames_as_images)
        if not sees:
            note = f"[{clip.describe()}; {NO_PICTURES}]"
        return [], frames, note + said

    def _document_parts(
        self, document: documents.Document, question: str, sees: bool = True
    ) -> tuple[list[Any], str, list[int], list[int]]:
        """(page pictures, text, the page numbers shown, the pages read by OCR) a model gets
        for one document. Pages without a text layer (scans) among those rendered are read by
        OCR unless it is off."""
        wanted = documents.pages_to_show(document, question, self.settings.document_page_images)
        pages = self._pages(document, wanted)
        shown = [n for n, _ in pages]
        read: dict[int, str] = {}
        if self.settings.ocr != "off" and document.kind == "pdf":
            blank = {p.number for p in document.pages if not p.text.strip()}
            for number, image in pages:
                if number in blank:
                    found = self._ocr(document.source, ("page", number), image).text
                    if found:
                        read[number] = found
        text = documents.for_model(document, shown, self._document_chars(), read, pictures=sees)
        return [image for _, image in pages], text, shown, sorted(read)

    # -- text read from pictures -------------------------------------------------------------

    def _ocr(self, source: Any, extra: tuple, image: Any) -> ocr.OcrText:
        """OCR of ``image`` (cached by its source, as the pictures themselves are). A picture
        OCR fails on counts as one without text: the turn goes on."""
        try:
            return self.cache.get("ocr", source, extra, lambda: ocr.read_text(image, deadline_s=OCR_SECONDS))
        except MediaError as exc:
            log.warning("OCR failed: %s", exc)
            return ocr.OcrText("", 0, 0.0, 0)

    def _photo_text(self, source: Any, image: Any, number: int, sees: bool) -> tuple[str, str]:
        """(the note a model reads, what the stats say) for photo ``number`` read by OCR."""
        if self.settings.ocr == "off":
            return (
                f"[photo {number} is not shown: {NO_PICTURES}, and OCR is off]",
                f"photo {number}: not shown",
            )
        found = self._ocr(source, ("photo",), image).text
        blind = "" if sees else f" ({NO_PICTURES})"
        if not found:
            return (
                f"[photo {number}: OCR found no text in it{blind}]",
                f"photo {number}: no text found by OCR",
            )
        # Quoted, not in brackets: set off like this, SmolLM2 answered from the text it was given.
        return (
            f'Text read from photo {number} by OCR{blind}:\n"""\n{found}\n"""',
            f"photo {number}: its text by OCR",
        )

    def _frames_text(self, source: Any, clip: video.Clip, frames: list[Any]) -> str:
        """The text in a few of a clip's frames, each line once (for a model without pictures)."""
        if self.settings.ocr == "off" or not frames:
            return ""
        step = max(1, len(frames) // OCR_FRAMES)
        lines: list[str] = []
        for index in range(0, len(frames), step)[:OCR_FRAMES]:
            for line in self._ocr(source, ("frame", index), frames[index]).text.splitlines():
                if line not in lines:
                    lines.append(line)
        if not lines:
            return ""
        said = "\n".join(lines)
        return f'Text read from the frames of {clip.name} by OCR ({NO_PICTURES}):\n"""\n{said}\n"""'

    def _document_chars(self) -> int:
        """Characters of document text that may go to the model: the setting, held to about half
        the context (a token is at least ~2 characters of prose)."""
        cap = self.settings.document_max_chars
        model = self.model
        if model is not None:
            cap = min(cap, model.info.context_length)
        return max(1000, cap)
