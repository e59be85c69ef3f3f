"""The history sidebar: past conversations (newest first), open / rename / delete / new."""

from __future__ import annotations

import logging

import gradio as gr

from ui import render
from ui.session import ChatSession, owner_of, unless_busy

log = logging.getLogger(__name__)


def history_update(store, session: ChatSession):
    choices = [(c.title, c.id) for c in store.conversations(session.owner)]
    return gr.Radio(choices=choices, value=session.conversation_id)


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
    session.open(found.id, found.messages)
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


def save(store, session: ChatSession) -> None:
    """Write the open conversation (an emptied one is deleted); never stops the chat."""
    try:
        if not session.messages:
            if session.conversation_id is not None:
                store.delete(session.conversation_id, session.owner)
            session.conversation_id = None
            return
        session.conversation_id, session.messages = store.save(
            session.conversation_id, session.messages, session.owner
        )
    except (OSError, PermissionError) as exc:  # e.g. a full disk: keep chatting
        log.error("could not save the conversation: %s", exc)
        gr.Warning("This conversation could not be saved to the history.")
