"""What one browser tab remembers: the open conversation and the turn being answered.

Held in a per-tab ``gr.State`` (Gradio gives each session its own copy), so nothing about one
person's chat ever sits in module-level state another session could see.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from assistant.conversation import Message
from assistant.store import LOCAL_OWNER, StoredMessage


@dataclass
class Pending:
    """A user message about to be answered, and how to undo the attempt if it fails."""

    user: StoredMessage
    audio: str | None = None  # a recording still to transcribe
    previous: list[StoredMessage] = field(default_factory=list)  # the history before the attempt
    restore: dict | None = None  # the textbox value to give back on failure (typed turns only)


class ChatSession:
    # A plain class, not a dataclass: Gradio would try to serialise a dataclass state value.
    def __init__(self) -> None:
        self.owner = LOCAL_OWNER
        self.conversation_id: str | None = None
        self.messages: list[StoredMessage] = []  # answered exchanges only
        self.pending: Pending | None = None
        self.cancel = threading.Event()
        self.busy = False
        self.stopped = False  # Stop was pressed during the current turn
        self.error: str | None = None  # a problem to show once the turn has ended

    def __deepcopy__(self, memo) -> "ChatSession":
        # gr.State deep-copies its initial value for every new tab; an Event cannot be copied,
        # and a fresh tab should start empty anyway.
        return ChatSession()

    def begin(self, pending: Pending) -> None:
        self.pending, self.busy, self.stopped = pending, True, False
        self.cancel = threading.Event()  # a fresh one: an old Stop must not stop this turn

    def stop(self) -> None:
        if self.busy:
            self.stopped = True
            self.cancel.set()

    def open(self, conversation_id: str | None, messages: list[StoredMessage]) -> None:
        self.conversation_id, self.messages = conversation_id, list(messages)

    def engine_history(self) -> list[Message]:
        return [Message(m.role, m.words, m.images) for m in self.messages]
