"""What the page remembers for a user in one browser between visits: the last open chat, the
unsent draft, the settings panel's values. Kept on the server (``HistoryStore.remember``),
under the logged-in user and this browser's random token; the browser itself holds only that
token.

Why not in the browser: ``gr.BrowserState`` encrypts in the browser, with a key that is one of
the component's properties, so Gradio sends it in ``/config`` (and in the page) to everyone who
may load the page. Whoever shares a browser with a user could log in as themselves, read the
key and decrypt that user's draft and custom prompt from localStorage. The token is no such
secret: the server answers to it only for the user the request is logged in as.

The three BrowserStates that held the values themselves before (``{owner: value}``) are still
on the page, only so that what a browser kept is moved to the server, once per user and
browser, and taken out of it (:func:`mover`).

Nothing here is trusted: a chat id is opened only if the store says it is this owner's, and a
setting is applied only if its control would accept it. A value that cannot be kept (a full
disk, a read-only history) is just not remembered.
"""

from __future__ import annotations

import logging
import re
import secrets
from pathlib import Path

import gradio as gr

from assistant import limits
from ui import actions, render
from ui.session import ChatSession, owner_of

log = logging.getLogger(__name__)

SECRET_FILE = "browser-state.key"
NOT_YOURS = "That chat is not in your history (it was deleted, or belongs to another login)."
NAMES = ("chat", "draft", "settings")
MAX_DRAFT_CHARS = 20_000
_TOKEN = re.compile("[0-9a-f]{32}")


def secret(data_dir: Path) -> str:
    """The key of the BrowserStates (kept in the data dir, so that the old copies a browser
    holds can still be read to be moved). It protects nothing: Gradio publishes it."""
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


def states(data_dir: Path) -> tuple[gr.BrowserState, gr.BrowserState, gr.BrowserState, gr.BrowserState]:
    """This browser's token, then the old copies of the chat, the draft and the settings."""
    key = secret(data_dir)
    return (
        gr.BrowserState("", storage_key="assistant-browser", secret=key),
        gr.BrowserState({}, storage_key="assistant-chat", secret=key),
        gr.BrowserState({}, storage_key="assistant-draft", secret=key),
        gr.BrowserState({}, storage_key="assistant-settings", secret=key),
    )


def _browser(token) -> str | None:
    return token if isinstance(token, str) and _TOKEN.fullmatch(token) else None


def _mine(kept, owner: str):
    return kept.get(owner) if isinstance(kept, dict) else None


def _clean(value):
    """A value the page can show again: a lone surrogate (which a browser can send) would stop
    Gradio from encoding the page's next update, so it becomes U+FFFD."""
    if isinstance(value, str):
        return limits.without_lone_surrogates(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _keep(store, owner: str, browser: str | None, name: str, value) -> None:
    if browser is None:  # (the page's load event has not given this browser its token yet)
        return
    try:
        store.remember(owner, f"page.{name}.{browser}", _clean(value))
    except (OSError, ValueError) as exc:  # a full disk, a read-only history, a huge value
        log.debug("not remembered: %s for %s (%s)", name, owner, exc)


def _recall(store, owner: str, browser: str | None, name: str):
    if browser is None:
        return None
    try:
        return store.recall(owner, f"page.{name}.{browser}")
    except OSError as exc:
        log.warning("could not read what the page remembers for %s: %s", owner, exc)
        return None


def chat_remembering(store):
    """The history list's change: the chat now open (also written to #chat-id, for page.js)."""

    def remember_chat(request: gr.Request, browser, chat_id):
        chat_id = chat_id if isinstance(chat_id, str) and chat_id.isalnum() else ""
        _keep(store, owner_of(request), _browser(browser), "chat", chat_id or None)
        return chat_id

    return remember_chat


def draft_remembering(store):
    """The input box's every change, a send's clearing included (a sent message is no draft)."""

    def remember_draft(request: gr.Request, browser, value) -> None:
        text = (value or {}).get("text", "") if isinstance(value, dict) else str(value or "")
        text = text if isinstance(text, str) else ""
        _keep(store, owner_of(request), _browser(browser), "draft", text[:MAX_DRAFT_CHARS] or None)

    return remember_draft


def settings_remembering(store, keys: list[str]):
    def remember_settings(request: gr.Request, browser, *values) -> None:
        _keep(store, owner_of(request), _browser(browser), "settings", dict(zip(keys, values)))

    return remember_settings


def restorer(store, controls: dict[str, gr.components.Component]):
    """The page's load event: reopen the chat the address names (``?chat=ID``) or the one
    this user had open last in this browser, and give back the draft and the settings. An old
    copy the browser still holds for this user (until :func:`mover` has moved it) comes first."""

    def restore(request: gr.Request, tab: ChatSession, chat_kept, draft_kept, settings_kept, browser=None):
        tab.owner = owner_of(request)
        kept = _restored(store, tab.owner, _browser(browser), (chat_kept, draft_kept, settings_kept))
        asked = request.query_params.get("chat") if request is not None else None
        remembered = kept["chat"] if isinstance(kept["chat"], str) else None
        chat_id = asked or remembered or None
        chat, stats, title = gr.skip(), gr.skip(), gr.skip()
        found = store.load(chat_id, tab.owner) if chat_id and chat_id.isalnum() else None
        if found is not None:
            tab.show(found)
            chat, stats, title = render.chat(tab.messages), "", found.title
        elif asked:
            gr.Warning(NOT_YOURS)
        draft = kept["draft"] if isinstance(kept["draft"], str) else None
        box = gr.MultimodalTextbox(value={"text": draft, "files": []}) if draft else gr.skip()
        settings = kept["settings"] if isinstance(kept["settings"], dict) else {}
        values = [
            _accepted(control, settings[key]) if key in settings else gr.skip()
            for key, control in controls.items()
        ]
        return (chat, stats, title, actions.history_update(store, tab), box, *values)

    return restore


def _restored(store, owner: str, browser: str | None, old_copies) -> dict:
    moved = _recall(store, owner, browser, "moved") is True
    kept = {}
    for name, old in zip(NAMES, old_copies):
        old = None if moved else _clean(_mine(old, owner))
        kept[name] = old if old is not None else _recall(store, owner, browser, name)
    return kept


def mover(store):
    """After the load event: this browser gets its token if it has none, and this user's old
    copies are moved to the server and taken out of the browser (other logins' copies stay
    until those users come back). Returns the token and the three old copies as left."""

    def move(request: gr.Request, browser, chat_kept, draft_kept, settings_kept):
        owner, token = owner_of(request), _browser(browser) or secrets.token_hex(16)
        old = (chat_kept, draft_kept, settings_kept)
        if _recall(store, owner, token, "moved") is not True:
            for name, kept in zip(NAMES, old):
                value = _mine(kept, owner)
                if value is not None:
                    _keep(store, owner, token, name, value)
            _keep(store, owner, token, "moved", True)
        left = tuple(
            {k: v for k, v in kept.items() if k != owner} if isinstance(kept, dict) else {} for kept in old
        )
        return (token, *left)

    return move


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
