"""The history sidebar: past conversations (newest first), open / rename / delete / new, export
and import. The list itself (:func:`ui.actions.history_update`) and the saving of a turn are
in :mod:`ui.actions`, which every turn ends with."""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from pathlib import Path

import gradio as gr

from assistant import transfer
from assistant.errors import AssistantError
from assistant.store import StoreError, plain_text
from ui import inputs, render
from ui.actions import history_update, why_not_stored
from ui.session import ChatSession, unless_busy

log = logging.getLogger(__name__)


def search(store, session: ChatSession, query: str):
    session.query = (query or "")[:200]
    return history_update(store, session)


@unless_busy(
    4, restore=lambda session: (gr.skip(), gr.skip(), gr.skip(), gr.Radio(value=session.conversation_id))
)
def open_conversation(store, session: ChatSession, conversation_id):
    found = store.load(conversation_id, session.owner) if conversation_id else None
    if found is None:
        gr.Warning("That conversation is gone.")
        return gr.skip(), gr.skip(), gr.skip(), history_update(store, session)
    session.show(found)
    return render.chat(session.messages), "", found.title, history_update(store, session)


@unless_busy(4)
def new_chat(store, session: ChatSession):
    session.open(None, [])
    return [], "", "", history_update(store, session)


def rename(store, session: ChatSession, title: str):
    if session.conversation_id is None:
        gr.Info("Send a message first: new chats get their name from it.")
        return gr.skip()
    try:
        renamed = store.rename(session.conversation_id, title or "", session.owner)
    except StoreError as exc:
        gr.Warning(f"The chat could not be renamed: {exc.reason}.")
        return gr.skip()
    if not renamed:
        gr.Warning("Type a new name first.")
    return history_update(store, session)


@unless_busy(4)
def delete(store, session: ChatSession):
    if session.conversation_id is not None:
        try:
            store.delete(session.conversation_id, session.owner)
        except StoreError as exc:
            gr.Warning(f"The chat could not be deleted: {exc.reason}.")
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        gr.Info("Conversation deleted.")
    session.open(None, [])
    return [], "", "", history_update(store, session)


def export_chat(store, session: ChatSession):
    """The open chat as Markdown and JSON files (photos inside), for the download list. They
    lie in the chat's own media folder, so only its owner can fetch them."""
    found = store.load(session.conversation_id, session.owner) if session.conversation_id else None
    if found is None:
        gr.Info("Send a message first: there is nothing to export yet.")
        return gr.File(value=None, visible=False)
    folder = store.media_dir / found.id
    folder.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9]+", "-", plain_text(found.title)).strip("-")[:40] or "chat"
    markdown, exported = folder / f"{name}.md", folder / f"{name}.json"
    markdown.write_text(transfer.to_markdown(found.title, found.messages), encoding="utf-8")
    exported.write_text(
        json.dumps(transfer.to_json(found.title, found.messages), ensure_ascii=False), encoding="utf-8"
    )
    return gr.File(value=[str(markdown), str(exported)], visible=True)


def copy_text(store, session: ChatSession) -> str:
    """The open chat as Markdown for the clipboard (photos as "[photo]", not server links), as
    JSON ``{"at": time, "text": …}`` for page.js."""
    found = store.load(session.conversation_id, session.owner) if session.conversation_id else None
    if found is None:
        gr.Info("Send a message first: there is nothing to copy yet.")
        return ""
    gr.Info("The conversation is copied.")
    # With the time: copying the same chat twice is still a change page.js sees.
    text = transfer.to_markdown(found.title, found.messages, embed_photos=False)
    return json.dumps({"at": time.time(), "text": text})


@unless_busy(4)
def import_chat(store, session: ChatSession, upload):
    """A JSON export becomes a new chat in this user's history, and is opened."""
    path = inputs.file_path(upload) if upload else None
    try:
        raw = Path(path).read_bytes() if path else b""
    except OSError:
        gr.Warning("Could not import that file: it could not be read (upload it again).")
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    try:
        with tempfile.TemporaryDirectory() as folder:
            title, messages = transfer.from_json(raw, Path(folder))
            saved = store.write(None, messages, session.owner)
        if title:
            store.rename(saved.id, title, session.owner)
    except AssistantError as exc:
        why = str(exc)
    except OSError as exc:
        log.error("could not import a chat: %s", exc.__cause__ or exc)
        why = f"it could not be stored ({why_not_stored(exc)})"
    except Exception:  # what an export cannot hold is refused by name; anything else is a bug
        log.exception("importing a chat failed")
        why = "this app cannot read it as a chat export"
    else:
        why = ""
    if why:
        gr.Warning(f"Could not import that file: {why}")
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    found = store.load(saved.id, session.owner)
    assert found is not None
    session.show(found)
    gr.Info(f"Imported “{plain_text(found.title)}”.")
    return render.chat(session.messages), "", found.title, history_update(store, session)
