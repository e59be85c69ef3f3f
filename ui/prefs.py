"""What the browser keeps for its user between visits (``gr.BrowserState``, encrypted in the
browser's localStorage): the last open chat, the unsent draft, the settings panel's values.

Each value is kept per user (``{owner: value}``), so a second login in the same browser starts
from its own. Nothing here is trusted: a chat id is opened only if the store says it is this
owner's, and a setting is applied only if its control would accept it.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import gradio as gr

from ui import render, sidebar
from ui.session import ChatSession, owner_of

SECRET_FILE = "browser-state.key"
NOT_YOURS = "That chat is not in your history (it was deleted, or belongs to another login)."


def secret(data_dir: Path) -> str:
    """The key the browser's copies are encrypted with; kept in the data dir so that what a
    browser remembers survives a server restart."""
    path = Path(data_dir).expanduser() / SECRET_FILE
    try:
        return path.read_text().strip() or _new_secret(path)
    except FileNotFoundError:
        return _new_secret(path)


def _new_secret(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(24)
    path.write_text(key)
    path.chmod(0o600)
    return key


def states(data_dir: Path) -> tuple[gr.BrowserState, gr.BrowserState, gr.BrowserState]:
    key = secret(data_dir)
    return (
        gr.BrowserState({}, storage_key="assistant-chat", secret=key),
        gr.BrowserState({}, storage_key="assistant-draft", secret=key),
        gr.BrowserState({}, storage_key="assistant-settings", secret=key),
    )


def _mine(kept, owner: str):
    return kept.get(owner) if isinstance(kept, dict) else None


def _with(kept, owner: str, value) -> dict:
    kept = dict(kept) if isinstance(kept, dict) else {}
    kept[owner] = value
    return kept


def remember_chat(request: gr.Request, kept, chat_id):
    chat_id = chat_id if isinstance(chat_id, str) else ""
    return _with(kept, owner_of(request), chat_id), chat_id


def remember_draft(request: gr.Request, kept, value):
    text = (value or {}).get("text", "") if isinstance(value, dict) else str(value or "")
    return _with(kept, owner_of(request), text[:20_000])


def settings_remembering(keys: list[str]):
    def remember(request: gr.Request, kept, *values):
        return _with(kept, owner_of(request), dict(zip(keys, values)))

    return remember


def restorer(store, controls: dict[str, gr.components.Component]):
    """The page's load event: reopen the chat the address names (``?chat=ID``) or the one
    this user had open last, and give back the draft and the settings."""

    def restore(request: gr.Request, tab: ChatSession, chat_kept, draft_kept, settings_kept):
        tab.owner = owner_of(request)
        asked = request.query_params.get("chat") if request is not None else None
        chat_id = asked or _mine(chat_kept, tab.owner) or None
        chat, stats, title = gr.skip(), gr.skip(), gr.skip()
        found = store.load(chat_id, tab.owner) if chat_id and chat_id.isalnum() else None
        if found is not None:
            tab.show(found)
            chat, stats, title = render.chat(tab.messages), "", found.title
        elif asked:
            gr.Warning(NOT_YOURS)
        draft = _mine(draft_kept, tab.owner)
        box = gr.MultimodalTextbox(value={"text": draft, "files": []}) if draft else gr.skip()
        kept = _mine(settings_kept, tab.owner) or {}
        values = [
            _accepted(control, kept[key]) if key in kept else gr.skip() for key, control in controls.items()
        ]
        return (chat, stats, title, sidebar.history_update(store, tab), box, *values)

    return restore


def _accepted(control, value):
    """A remembered value if the control accepts it now (the choices or limits may have changed)."""
    if isinstance(control, gr.Slider):
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and control.minimum <= value <= control.maximum
        ):
            return value
        return gr.skip()
    if isinstance(control, gr.Dropdown):
        names = [c[1] if isinstance(c, tuple) else c for c in control.choices or []]
        return value if value in names else gr.skip()
    return value if isinstance(value, str) else gr.skip()
