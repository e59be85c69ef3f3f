"""The one message type, its attachments, and history operations. Knows no model.

A :class:`Message` is what the store saves, the page holds, the API builds and the engine reads.
Attachments are typed: a new kind of file (video, document…) is one new class here. Sources
are a path, raw bytes or (for images, once the engine has normalised them) a ``PIL.Image``;
:mod:`assistant.media` validates them just before they reach a model.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

Role = Literal["system", "user", "assistant"]
ImageSource = Union[str, Path, bytes, Any]  # Any = PIL.Image.Image (kept out of this module)
AudioSource = Union[str, Path, bytes]


@dataclass(frozen=True)
class ImageAttachment:
    source: ImageSource
    kind: ClassVar[str] = "image"


@dataclass(frozen=True)
class AudioAttachment:
    """A voice recording; the words recognised in it go to ``Message.transcript``."""

    source: AudioSource
    kind: ClassVar[str] = "audio"


@dataclass(frozen=True)
class VideoAttachment:
    """A video clip (MP4, WebM, MOV, MKV): a path or bytes, or (once the engine has read it) an
    ``assistant.media.video.Clip`` of sampled frames and what is said in it."""

    source: Any
    kind: ClassVar[str] = "video"


@dataclass(frozen=True)
class DocumentAttachment:
    """A PDF, plain-text or Markdown file: a path or bytes; the engine gives a model its text
    and pictures of its pages. ``name`` is the file's name as the person sent it (a saved copy
    is named by its content)."""

    source: Any
    name: str | None = None
    kind: ClassVar[str] = "document"


def file_name(source: Any) -> str | None:
    """The name a file was sent under: a path's last part, or a ``name`` the bytes carry."""
    if isinstance(source, (str, Path)):
        return Path(source).name or None
    return getattr(source, "name", None)


Attachment = Union[ImageAttachment, AudioAttachment, VideoAttachment, DocumentAttachment]
ATTACHMENT_KINDS: dict[str, type] = {
    cls.kind: cls for cls in (ImageAttachment, AudioAttachment, VideoAttachment, DocumentAttachment)
}


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Message:
    role: Role
    text: str = ""  # what was typed (or generated)
    attachments: tuple[Attachment, ...] = ()
    transcript: str | None = None  # the words recognised in the voice recording, if any
    # Identity, not content: two messages that say the same thing compare equal.
    id: str = field(default_factory=new_id, compare=False)
    created: float = field(default_factory=time.time, compare=False)
    # The message this one follows in the conversation's tree of versions (None: it opens the
    # chat). Kept for the versions not shown; a shown history's order says it for the rest.
    parent: str | None = field(default=None, compare=False)

    @classmethod
    def user(
        cls,
        text: str = "",
        images: Sequence[ImageSource] = (),
        audio: AudioSource | None = None,
        *,
        videos: Sequence[Any] = (),
        documents: Sequence[Any] = (),
    ) -> Message:
        attachments: list[Attachment] = [ImageAttachment(source) for source in images]
        if audio is not None:
            attachments.append(AudioAttachment(audio))
        attachments += [VideoAttachment(source) for source in videos]
        attachments += [DocumentAttachment(source, file_name(source)) for source in documents]
        return cls("user", text, tuple(attachments))

    @classmethod
    def assistant(cls, text: str) -> Message:
        return cls("assistant", text)

    @property
    def images(self) -> tuple[ImageSource, ...]:
        return tuple(a.source for a in self.attachments if isinstance(a, ImageAttachment))

    @property
    def audio(self) -> AudioSource | None:
        """The voice recording of this message, if it has one."""
        return next((a.source for a in self.attachments if isinstance(a, AudioAttachment)), None)

    @property
    def videos(self) -> tuple[Any, ...]:
        return tuple(a.source for a in self.attachments if isinstance(a, VideoAttachment))

    @property
    def documents(self) -> tuple[Any, ...]:
        return tuple(a.source for a in self.attachments if isinstance(a, DocumentAttachment))

    @property
    def words(self) -> str:
        """Everything the person said in this message: the typed words, then the transcript."""
        return "\n\n".join(t for t in (self.text.strip(), (self.transcript or "").strip()) if t)

    @property
    def needs_transcript(self) -> bool:
        return self.audio is not None and self.transcript is None

    def is_empty(self) -> bool:
        return not self.words and not self.attachments

    def with_images(self, images: Sequence[ImageSource]) -> Message:
        """The same message with these images in place of its own (other attachments kept)."""
        others = tuple(a for a in self.attachments if not isinstance(a, ImageAttachment))
        return replace(self, attachments=tuple(ImageAttachment(s) for s in images) + others)

    def without_audio(self) -> Message:
        return replace(
            self, attachments=tuple(a for a in self.attachments if not isinstance(a, AudioAttachment))
        )


# -- history operations (a history is a list of user/assistant messages) ------------------
#
# Versions: regenerating a reply or editing a message keeps what it replaces. A conversation is
# then a tree; the history shown (and read by the model) is one branch of it, ``messages``, and
# the rest are ``others``: messages that know their ``parent``.


def branch_off(messages: Sequence[Message], start: int) -> list[Message]:
    """``messages[start:]`` with their parents set: the branch an edit or a regenerate at
    ``start`` leaves behind (kept as a version)."""
    return [
        replace(m, parent=messages[i - 1].id if i else None) for i, m in enumerate(messages) if i >= start
    ]


def versions_of(messages: Sequence[Message], others: Sequence[Message], index: int) -> list[Message]:
    """The versions of ``messages[index]`` (itself included), oldest first."""
    parent = messages[index - 1].id if index else None
    shown = messages[index]
    siblings = [m for m in others if m.parent == parent and m.role == shown.role and m.id != shown.id]
    return sorted([shown, *siblings], key=lambda m: m.created)


def version_counts(messages: Sequence[Message], others: Sequence[Message]) -> dict[int, tuple[int, int]]:
    """For each shown message that has versions: (which one it is, counting from 1; how many)."""
    counts = {}
    for index, message in enumerate(messages):
        versions = versions_of(messages, others, index)
        if len(versions) > 1:
            counts[index] = (versions.index(message) + 1, len(versions))
    return counts


def switch_version(
    messages: Sequence[Message], others: Sequence[Message], index: int, step: int
) -> tuple[list[Message], list[Message]]:
    """Show another version of ``messages[index]`` (``step`` = -1 the one before, +1 the one
    after) and what followed it then (each time its newest follow-up); the branch shown until
    now joins the others. Unchanged at either end."""
    versions = versions_of(messages, others, index)
    at = versions.index(messages[index]) + step
    if not 0 <= at < len(versions) or step == 0:
        return list(messages), list(others)
    pool = {m.id: m for m in [*others, *branch_off(messages, index)]}
    shown = [*messages[:index], pool.pop(versions[at].id)]
    while True:
        follow = [m for m in pool.values() if m.parent == shown[-1].id]
        if not follow:
            return shown, list(pool.values())
        shown.append(pool.pop(max(follow, key=lambda m: m.created).id))


def reachable(messages: Sequence[Message], others: Sequence[Message]) -> list[Message]:
    """The others that still hang off the conversation (an undone turn's versions do not)."""
    known = {None, *(m.id for m in messages)}
    rest = [m for m in others if m.id not in known]
    kept: list[Message] = []
    while joined := [m for m in rest if m.parent in known]:
        kept += joined
        known |= {m.id for m in joined}
        rest = [m for m in rest if m.id not in known]
    return kept


def undo_last_turn(messages: Sequence[Message]) -> tuple[list[Message], Message | None]:
    """The history without its last exchange, and the user message of that exchange."""
    history = list(messages)
    while history and history[-1].role == "assistant":
        history.pop()
    return history, (history.pop() if history else None)


def answered(messages: Sequence[Message]) -> list[Message]:
    """The history without user messages that never got a reply (a turn another tab is still
    answering, or one cut off mid-way): what a model may see, turns strictly alternating."""
    kept = list(messages)
    return [
        m
        for i, m in enumerate(kept)
        if m.role != "user" or (i + 1 < len(kept) and kept[i + 1].role != "user")
    ]


def for_regenerate(messages: Sequence[Message]) -> tuple[list[Message], Message]:
    """History without the last exchange, plus the user message to answer again."""
    history, user = undo_last_turn(messages)
    if user is None or user.role != "user":
        raise ValueError("there is no user message to regenerate a reply for")
    return history, user


def edit_user_message(
    messages: Sequence[Message], index: int, text: str, transcript: str | None = None
) -> tuple[list[Message], Message]:
    """History before user message ``index`` and that message with new words; later turns are
    dropped. Without a ``transcript`` the recording goes too: it no longer matches the words."""
    if not 0 <= index < len(messages) or messages[index].role != "user":
        raise ValueError(f"message {index} is not a user message")
    edited = replace(messages[index], text=text, transcript=transcript, id=new_id(), created=time.time())
    return list(messages[:index]), edited if transcript is not None else edited.without_audio()


def limit_images(messages: Sequence[Message], max_images: int) -> list[Message]:
    """Keep only the newest ``max_images`` images across the history (older ones are dropped)."""
    budget = max(0, max_images)
    kept: list[Message] = []
    for message in reversed(messages):
        images = message.images
        if images:
            keep = images[max(0, len(images) - budget) :] if budget else ()
            budget -= len(keep)
            message = message.with_images(keep)
        kept.append(message)
    kept.reverse()
    return kept


TRIM_BLOCK = 0.25  # history is cut in steps of this share of the budget
# Token counts are estimated message by message; the chat template adds a few tokens of its
# own (measured: 5-7 on a 1540-token prompt). Trimming keeps this much room, so a chat at the
# limit drops one more old turn instead of failing.
PROMPT_MARGIN_TOKENS = 32


def fit_to_context(
    system: Message | None,
    history: Sequence[Message],
    count_tokens: Callable[[Message], int],
    budget: int,
    block: float = TRIM_BLOCK,
) -> list[Message]:
    """System message + as many of the newest messages as fit in ``budget`` tokens.

    Whole messages are dropped from the oldest end, so a reply never stays without its
    question. How much goes is rounded up to whole blocks of ``block × budget`` tokens: the
    prompt's start then stays the same for the next several turns (and the model's prefix cache
    keeps serving them) instead of moving, and missing the cache, on every turn. The newest
    message is always kept (the model then reports what does not fit). The estimate is not
    trusted to the last token: :data:`PROMPT_MARGIN_TOKENS` of the budget stay free.
    """
    budget -= min(PROMPT_MARGIN_TOKENS, budget // 10)
    fixed = count_tokens(system) if system else 0
    costs = [count_tokens(m) for m in history]
    excess = fixed + sum(costs) - budget
    keep_from = 0
    if excess > 0:
        step = max(1, int(budget * block)) if block > 0 else 1
        cut = -(-excess // step) * step  # rounded up to whole blocks
        dropped = 0
        while keep_from < len(history) - 1 and dropped < cut:
            dropped += costs[keep_from]
            keep_from += 1
    kept = list(history[keep_from:])
    while len(kept) > 1 and kept[0].role == "assistant":  # never start with an orphan reply
        kept.pop(0)
    return ([system] if system else []) + kept
