"""The history sidebar: past conversations (newest first), open / rename / delete / new."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

import gradio as gr

from assistant.conversation import Message
from assistant.store import StaleConversation, plain_text
from ui import render
from ui.session import ChatSession, owner_of, unless_busy

log = logging.getLogger(__name__)

CHANGED_ELSEWHERE = "This chat was changed in another tab: it is shown as saved now. Try again."


def history_update(store, session: ChatSession):
    """The history list: plain-text titles with when each chat was last used, newest first
    (only the chats matching the search box, when something is typed there)."""
    found = (
        store.search(session.query, session.owner)
        if session.query.strip()
        else store.conversations(session.owner)
    )
    now = time.time()
    choices = [(f"{plain_text(c.title)} · {render.when(c.updated_at, now)}", c.id) for c in found]
    return gr.Radio(choices=choices, value=session.conversation_id)


def search(store, session: ChatSession, query: str):
    session.query = (query or "")[:200]
    return history_update(store, session)


def on_load(store, session: ChatSession, request: gr.Request):
    """A new tab: whose history to list (the logged-in user, or the one local user)."""
    session.owner = owner_of(request)
    return history_update(store, session)


@unless_busy(
    4, restore=lambda session: (gr.skip(), gr.skip(), gr.skip(), gr.Radio(value=session.conversation_id))
)
def open_conversation(store, session: ChatSession, conversation_id):
    found = store.load(conversation_id, session.owner) if conversation_id else None
    if found is None:
        gr.Warning("That conversation is gone.")
        return gr.skip(), gr.skip(), gr.skip(), history_update(store, session)
    session.open(found.id, found.messages, found.version)
    return render.chat(session.messages), "", found.title, history_update(store, session)


@unless_busy(4)
def new_chat(store, session: ChatSession):
    session.open(None, [])
    return [], "", "", history_update(store, session)


def rename(store, session: ChatSession, title: str):
    if session.conversation_id is None:
        gr.Info("Send a message first: new chats get their name from it.")
        return gr.skip()
    if not store.rename(session.conversation_id, title or "", session.owner):
        gr.Warning("Type a new name first.")
    return history_update(store, session)


@unless_busy(4)
def delete(store, session: ChatSession):
    if session.conversation_id is not None:
        store.delete(session.conversation_id, session.owner)
        gr.Info("Conversation deleted.")
    session.open(None, [])
    return [], "", "", history_update(store, session)


def save(store, session: ChatSession) -> bool:
    """Write the open conversation as the tab holds it (an emptied one is deleted); never
    stops the chat. Refused when another tab saved it since this one read it: the tab then
    shows what is stored (nothing anyone wrote is overwritten) and False is returned."""
    try:
        cid = session.conversation_id
        if (
            cid is not None
            and session.version is not None
            and store.version(cid, session.owner)
            not in (
                None,
                session.version,
            )
        ):
            found = store.load(cid, session.owner)
            if found is not None:
                session.open(found.id, found.messages, found.version)
                gr.Warning(CHANGED_ELSEWHERE)
                return False
        if not session.messages:
            if cid is not None:
                store.delete(cid, session.owner)
            session.open(None, [])
            return True
        saved = store.write(cid, session.messages, session.owner, base_version=session.version)
        session.open(saved.id, saved.messages, saved.version)
    except StaleConversation as stale:
        session.open(stale.current.id, stale.current.messages, stale.current.version)
        gr.Warning(CHANGED_ELSEWHERE)
        return False
    except (OSError, PermissionError) as exc:  # e.g. a full disk: keep chatting
        log.error("could not save the conversation: %s", exc)
        gr.Warning("This conversation could not be saved to the history.")
    return True


def save_turn(
    store, session: ChatSession, turn: list[Message], drop: Collection[str] = ()
) -> list[Message] | None:
    """Save the tab's history followed by ``turn`` (the turn being answered, as far as it
    got), never overwriting what another tab saved meanwhile: when the store has moved on, the
    turn is put after what is stored now (and the tab's history becomes that). Messages whose
    ids are in ``drop`` (an earlier save of this turn) are left out. Returns the history as
    stored (None: not saved)."""
    ids = {m.id for m in turn} | set(drop)
    try:
        for _ in range(5):
            messages = [*session.messages, *turn]
            if not messages:
                if session.conversation_id is not None:
                    store.delete(session.conversation_id, session.owner)
                session.open(None, [])
                return []
            try:
                saved = store.write(
                    session.conversation_id,
                    messages,
                    session.owner,
                    base_version=session.version if session.conversation_id else None,
                )
            except StaleConversation as stale:
                current = stale.current
                session.messages = [m for m in current.messages if m.id not in ids]
                session.version = current.version
                continue
            session.conversation_id, session.version = saved.id, saved.version
            return saved.messages
    except (OSError, PermissionError) as exc:
        log.error("could not save the conversation: %s", exc)
    gr.Warning("This conversation could not be saved to the history.")
    return None
