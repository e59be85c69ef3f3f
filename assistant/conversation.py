"""Messages, the user's turn, and history operations. Knows no model.

Images in messages are *sources* (a path, raw bytes or an already-loaded ``PIL.Image``); the
engine normalises them with :mod:`assistant.media` just before they reach a model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Union

Role = Literal["system", "user", "assistant"]
ImageSource = Union[str, Path, bytes, Any]  # Any = PIL.Image.Image (kept out of this module)
AudioSource = Union[str, Path, bytes]


@dataclass(frozen=True)
class Message:
    role: Role
    text: str = ""
    images: tuple[ImageSource, ...] = ()


@dataclass(frozen=True)
class UserTurn:
    """What a person sends in one go: words, photos, and/or a voice recording."""

    text: str = ""
    images: tuple[ImageSource, ...] = ()
    audio: AudioSource | None = None

    def is_empty(self) -> bool:
        return not self.text.strip() and not self.images and self.audio is None


@dataclass
class Conversation:
    """An ordered list of user/assistant messages (the system prompt is kept apart)."""

    messages: list[Message] = field(default_factory=list)

    def add(self, message: Message) -> None:
        self.messages.append(message)

    def undo_last_turn(self) -> Message | None:
        """Drop the last assistant reply and the user message it answered; return that user message."""
        while self.messages and self.messages[-1].role == "assistant":
            self.messages.pop()
        return self.messages.pop() if self.messages else None

    def for_regenerate(self) -> tuple["Conversation", Message]:
        """History without the last exchange, plus the user message to answer again."""
        history = Conversation(list(self.messages))
        user = history.undo_last_turn()
        if user is None or user.role != "user":
            raise ValueError("there is no user message to regenerate a reply for")
        return history, user

    def edit_user_message(self, index: int, text: str) -> tuple["Conversation", Message]:
        """History before user message ``index`` and the edited message; later turns are dropped."""
        if not 0 <= index < len(self.messages) or self.messages[index].role != "user":
            raise ValueError(f"message {index} is not a user message")
        edited = replace(self.messages[index], text=text)
        return Conversation(list(self.messages[:index])), edited


def typed_and_spoken(text: str, transcript: str | None) -> str:
    """What a person said in one message: the typed words, then the voice transcript."""
    return "\n\n".join(t for t in (text.strip(), (transcript or "").strip()) if t)


def limit_images(messages: Sequence[Message], max_images: int) -> list[Message]:
    """Keep only the newest ``max_images`` images across the history (older ones are dropped)."""
    budget = max(0, max_images)
    kept: list[Message] = []
    for message in reversed(messages):
        if message.images:
            keep = message.images[max(0, len(message.images) - budget) :] if budget else ()
            budget -= len(keep)
            message = replace(message, images=tuple(keep))
        kept.append(message)
    kept.reverse()
    return kept


def fit_to_context(
    system: Message | None,
    history: Sequence[Message],
    count_tokens: Callable[[Message], int],
    budget: int,
) -> list[Message]:
    """System message + as many of the newest messages as fit in ``budget`` tokens.

    Whole turns are dropped from the oldest end, so a reply never stays without its question.
    The newest message is always kept (the model then reports what does not fit).
    """
    used = count_tokens(system) if system else 0
    kept: list[Message] = []
    for message in reversed(history):
        cost = count_tokens(message)
        if kept and used + cost > budget:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    while len(kept) > 1 and kept[0].role == "assistant":  # never start with an orphan reply
        kept.pop(0)
    return ([system] if system else []) + kept
