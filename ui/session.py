"""What one browser tab remembers: the open conversation and the turn being answered.

Held in a per-tab ``gr.State`` (Gradio gives each session its own copy), so nothing about one
person's chat ever sits in module-level state another session could see.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps

import gradio as gr

from assistant.conversation import Message
from assistant.store import LOCAL_OWNER, StoredConversation

BUSY = "Wait for the answer to finish (or press Stop) first."


@dataclass
class Pending:
    """A user message about to be answered (a recording in it not yet transcribed), and how
    to undo the attempt if it fails."""

    user: Message
    previous: list[Message] = field(default_factory=list)  # the history before the attempt
    restore: dict | None = None  # the textbox value to give back on failure (typed turns only)
    # A new turn after the history (not a regenerate or edit): what another tab saved to this
    # chat meanwhile is loaded first, and the turn follows it.
    appends: bool = False
    # What a regenerate or an edit sets aside; kept as versions once the new answer is saved.
    replaced: list[Message] = field(default_factory=list)
    # Continue: the reply that stopped at the length limit, to be carried on.
    continues: Message | None = None


class ChatSession:
    # A plain class, not a dataclass: Gradio would try to serialise a dataclass state value.
    def __init__(self) -> None:
        self.owner = LOCAL_OWNER
        self.conversation_id: str | None = None
        self.messages: list[Message] = []  # answered exchanges only: the branch shown
        self.others: list[Message] = []  # the versions not shown (see assistant.conversation)
        self.version: int | None = None  # the stored version these messages were read as
        self.query = ""  # what the history list is filtered by (the search box)
        self.pending: Pending | None = None
        self.cancel = threading.Event()
        self.busy = False
        self.stopped = False  # Stop was pressed during the current turn
        self.error: str | None = None  # a problem to show once the turn has ended
        self.read_ahead: tuple[str, ...] = ()  # the draft photos the model was last asked to read
        # Told each piece of the reply's text as the model writes it (the voice reading it aloud).
        self.listener: Callable[[str], None] | None = None

    def __deepcopy__(self, memo) -> ChatSession:
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

    def open(
        self,
        conversation_id: str | None,
        messages: list[Message],
        version: int | None = None,
        others: list[Message] | None = None,
    ) -> None:
        self.conversation_id, self.messages, self.version = conversation_id, list(messages), version
        self.others = list(others or [])

    def show(self, stored: StoredConversation) -> None:
        """The conversation as the store has it."""
        self.open(stored.id, stored.messages, stored.version, stored.others)


def owner_of(request: gr.Request | None) -> str:
    """Whose history a request may touch: the logged-in user, or the one local user."""
    return (getattr(request, "username", None) if request is not None else None) or LOCAL_OWNER


def as_owner(handler: Callable) -> Callable:
    """``handler(tab, …)`` with the tab's owner set from the authenticated request first, on
    every call: never from what the tab remembers (a client may skip the page's load event)."""
    if inspect.isgeneratorfunction(handler):

        def stream(request: gr.Request, tab: ChatSession, *args):
            tab.owner = owner_of(request)
            yield from handler(tab, *args)

        return stream

    def call(request: gr.Request, tab: ChatSession, *args):
        tab.owner = owner_of(request)
        return handler(tab, *args)

    return call


def unless_busy(outputs: int, restore: Callable[[ChatSession], tuple] | None = None):
    """Refuse a page handler while its tab is answering: a warning, and every output left as it
    is (or as ``restore`` gives them, e.g. an edited bubble put back as it was)."""

    def decorate(handler):
        @wraps(handler)
        def guarded(*args, **kwargs):
            session = next(a for a in args if isinstance(a, ChatSession))
            if not session.busy:
                return handler(*args, **kwargs)
            gr.Warning(BUSY)
            return restore(session) if restore is not None else tuple(gr.skip() for _ in range(outputs))

        return guarded

    return decorate
