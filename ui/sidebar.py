"""The history sidebar: past conversations (newest first), open / rename / delete / new."""

from __future__ import annotations

import errno
import json
import logging
import re
import tempfile
import time
from collections.abc import Collection, Sequence
from pathlib import Path

import gradio as gr

from assistant import transfer
from assistant.conversation import Message
from assistant.errors import AssistantError
from assistant.store import StaleConversation, StoreError, plain_text
from ui import inputs, render
from ui.session import ChatSession, unless_busy

log = logging.getLogger(__name__)

CHANGED_ELSEWHERE = "This chat was changed in another tab: it is shown as saved now. Try again."
UNSAVED = (
    "This conversation could not be saved to the history ({}): what is shown will be gone after a reload."
)


def why_not_stored(exc: OSError) -> str:
    """A few words on why the history (or a file of it) could not be written: never the
    exception's own text, which may name server paths."""
    if isinstance(exc, StoreError):
        return exc.reason
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the server's disk is full"
    if exc.errno == errno.EROFS:
        return "the history folder is read-only"
    if isinstance(exc, PermissionError) and exc.errno is None:  # (HistoryStore: not this owner's)
        return "it belongs to another login"
    return "a file of it could not be stored"


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
                session.show(found)
                gr.Warning(CHANGED_ELSEWHERE)
                return False
        if not session.messages:
            if cid is not None:
                store.delete(cid, session.owner)
            session.open(None, [])
            return True
        saved = store.write(
            cid, session.messages, session.owner, base_version=session.version, others=session.others
        )
        session.show(saved)
    except StaleConversation as stale:
        session.show(stale.current)
        gr.Warning(CHANGED_ELSEWHERE)
        return False
    except OSError as exc:  # e.g. a full disk: keep chatting (PermissionError is one too)
        log.error("could not save the conversation: %s", exc.__cause__ or exc)
        gr.Warning(UNSAVED.format(why_not_stored(exc)))
    return True


def save_turn(
    store,
    session: ChatSession,
    turn: list[Message],
    drop: Collection[str] = (),
    replaced: Sequence[Message] = (),
    warn: bool = True,
) -> list[Message] | None:
    """Save the tab's history followed by ``turn`` (the turn being answered, as far as it
    got), never overwriting what another tab saved meanwhile: when the store has moved on, the
    turn is put after what is stored now (and the tab's history becomes that). Messages whose
    ids are in ``drop`` (an earlier save of this turn) are left out. ``replaced`` is what a
    regenerate or an edit set aside: kept as versions. Returns the history as stored (None:
    not saved, and, with ``warn``, a toast says so)."""
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
                    others=[*session.others, *replaced],
                )
            except StaleConversation as stale:
                current = stale.current
                session.messages = [m for m in current.messages if m.id not in ids]
                session.others = [m for m in current.others if m.id not in ids]
                session.version = current.version
                continue
            session.conversation_id, session.version = saved.id, saved.version
            return saved.messages
        why = "another tab kept changing it"
    except OSError as exc:  # a full disk, a read-only database (StoreError): keep chatting
        log.error("could not save the conversation: %s", exc.__cause__ or exc)
        why = why_not_stored(exc)
    if warn:
        gr.Warning(UNSAVED.format(why))
    return None


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
