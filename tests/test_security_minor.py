"""The smaller findings of the security review of issue 29, one test (or a few) per hole; each
fails on the code before its fix.

Page events go through the real routes where it matters: ``app.build_server`` with a
FakeChatModel behind Starlette's TestClient, each event joined to Gradio's queue
(``/gradio_api/queue/join``) and read back from its event stream, the events a handler chains
(``.success`` / ``.then``) fired after it as the browser would. The IPv6 cases of the image
fetcher are in tests/test_api.py.
"""

from __future__ import annotations

import json
import sqlite3
import warnings
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from fastapi.testclient import TestClient

from assistant import transfer
from assistant.conversation import Message
from assistant.core import Assistant
from assistant.errors import InvalidParams
from assistant.settings import Settings
from assistant.store import HistoryStore, StoreError
from tests.fakes import FakeChatModel
from ui import actions, prefs, sidebar
from ui.actions import report_error, respond
from ui.session import ChatSession

PANEL = ("default", "", 0.7, 0.95, 64, "")  # persona, custom prompt, temperature, top-p, max tokens, seed
SURROGATE = "\ud800"


# --------------------------------------------------------------------------- driving the page


class Page:
    """One browser tab of the whole server: events by the element that fires them, their
    chained events after them, every message of the event stream kept. What the events give
    the page's BrowserStates is kept in ``browser`` (its localStorage) and read back from it."""

    def __init__(self, tmp_path: Path, **settings):
        from app import build_server

        settings.setdefault("data_dir", tmp_path / "data")
        self.settings = Settings(**settings)
        server, self.blocks = build_server(Assistant(self.settings, FakeChatModel()), self.settings)
        # Entered: its lifespan starts Gradio's queue. (An address of its own: a page without
        # logins answers only to that.)
        self.client = TestClient(server, base_url="http://127.0.0.1:7860").__enter__()
        self.store = HistoryStore(self.settings.data_dir)
        self.session = "tab-1"
        self.browser: dict[int, object] = {}  # BrowserState id -> value

    def close(self):
        self.client.__exit__(None, None, None)

    def load(self) -> list[dict]:
        """The page opened (or reloaded): its load event and what follows it."""
        return self.fire(self.fn(name="restore"))

    def login(self, user: str, password: str, session: str | None = None):
        self.client.cookies.clear()
        assert self.client.post("/login", data={"username": user, "password": password}).status_code == 200
        self.session = session or f"tab-of-{user}"

    def fn(self, elem_id: str | None = None, event: str = "", name: str | None = None) -> int:
        ids = {i for i, b in self.blocks.blocks.items() if getattr(b, "elem_id", None) == elem_id}
        for index, f in self.blocks.fns.items():
            if f.trigger_after is not None:
                continue
            if (name is not None and f.name == name) or any(t[0] in ids and t[1] == event for t in f.targets):
                return index
        raise LookupError(elem_id or name)

    def inputs(self, index: int, given: dict) -> list:
        values = []
        for i, component in enumerate(self.blocks.fns[index].inputs):
            if i in given:
                values.append(given[i])
            elif isinstance(component, gr.BrowserState):
                values.append(self.browser.get(component._id))
            elif isinstance(component, gr.State):
                values.append(None)
            else:
                values.append(getattr(component, "value", None))
        return values

    def fire(self, index: int, given: dict | None = None, chain: bool = True) -> list[dict]:
        """The event's messages, then those of the events chained after it (as the browser
        fires them: .success only after a success)."""
        body = {
            "data": self.inputs(index, given or {}),
            "fn_index": index,
            "trigger_id": None,
            "session_hash": self.session,
            "event_data": None,
        }
        # (json.dumps writes a lone surrogate as \\ud800, as a browser's JSON.stringify does)
        joined = self.client.post(
            "/gradio_api/queue/join", content=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        assert joined.status_code == 200, joined.text
        messages = []
        with self.client.stream("GET", f"/gradio_api/queue/data?session_hash={self.session}") as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                messages.append(message)
                if message.get("msg") == "close_stream":  # (sent after the session's last event)
                    break
        last = [m for m in messages if m.get("msg") != "close_stream"][-1]
        if last.get("success"):
            for component, value in zip(self.blocks.fns[index].outputs, last["output"]["data"]):
                if isinstance(component, gr.BrowserState) and value != {"__type__": "update"}:
                    self.browser[component._id] = value
        for after, f in self.blocks.fns.items() if chain else ():
            if f.trigger_after != index or last.get("msg") != "process_completed":
                continue
            if f.trigger_only_on_success and not last.get("success"):
                continue
            messages += self.fire(after)
        return messages


def completed(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m.get("msg") == "process_completed"]


def toasts(messages: list[dict], level: str = "warning") -> list[str]:
    return [m["log"] for m in messages if m.get("msg") == "log" and m.get("level") == level]


def errors(messages: list[dict]) -> list[str]:
    return [m["output"].get("error") for m in completed(messages) if not m["success"]]


@pytest.fixture
def page(tmp_path):
    running = Page(tmp_path)
    yield running
    running.close()


@pytest.fixture
def env(tmp_path):
    settings = Settings(model="fake", data_dir=tmp_path / "data")
    model = FakeChatModel(chunks=["Hello", ", ", "world", "!"])
    return SimpleNamespace(
        assistant=Assistant(settings, model),
        store=HistoryStore(settings.data_dir),
        session=ChatSession(),
        tmp=tmp_path,
    )


def turn(env, text: str):
    actions.send(env.session, {"text": text, "files": []})
    return list(respond(env.assistant, env.store, env.session, *PANEL))


def export(tmp_path: Path, rows: list, **extra) -> str:
    path = tmp_path / "chat.json"
    path.write_text(json.dumps({"format": transfer.FORMAT, "version": 1, "messages": rows, **extra}))
    return str(path)


def imported(env, path: str) -> tuple[tuple, list[str]]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = sidebar.import_chat(env.store, env.session, path)
    return out, [str(w.message) for w in seen]


# --------------------------------------------------------------------------- 1. import bounds


def test_an_import_holding_one_huge_message_is_refused_and_nothing_is_kept(env):
    rows = [
        {"role": "user", "text": "a" * (transfer.MAX_MESSAGE_CHARS + 1)},
        {"role": "assistant", "text": "ok"},
    ]
    out, said = imported(env, export(env.tmp, rows))
    assert out == (gr.skip(),) * 4 and env.store.conversations() == []
    assert said == [
        f"Could not import that file: message 1 is {transfer.MAX_MESSAGE_CHARS + 1:,} characters long, "
        f"more than the {transfer.MAX_MESSAGE_CHARS:,} a message may have"
    ]


def test_a_transcript_counts_with_its_text_and_the_bound_itself_is_accepted(env):
    half = transfer.MAX_MESSAGE_CHARS // 2
    over = [{"role": "user", "text": "a" * half, "transcript": "b" * (half + 1)}]
    with pytest.raises(InvalidParams, match="more than the 1,000,000 a message may have"):
        transfer.from_json(json.dumps({"format": transfer.FORMAT, "version": 1, "messages": over}), env.tmp)
    at = [{"role": "user", "text": "a" * half, "transcript": "b" * half}, {"role": "assistant", "text": "ok"}]
    _, said = imported(env, export(env.tmp, at))
    assert said == [] and len(env.store.load(env.session.conversation_id).messages[0].text) == half


def test_an_import_is_bounded_in_characters_and_messages_as_a_whole(env):
    each = transfer.MAX_MESSAGE_CHARS
    many_words = [{"role": "user", "text": "a" * each} for _ in range(transfer.MAX_CHARS // each + 1)]
    with pytest.raises(InvalidParams, match="more than the 5,000,000 characters an import may have"):
        transfer.from_json(
            json.dumps({"format": transfer.FORMAT, "version": 1, "messages": many_words}), env.tmp
        )
    many = [{"role": "user", "text": "hi"}] * (transfer.MAX_MESSAGES + 1)
    with pytest.raises(InvalidParams, match="the chat has 10,001 messages, more than the 10,000"):
        transfer.from_json(json.dumps({"format": transfer.FORMAT, "version": 1, "messages": many}), env.tmp)


# --------------------------------------------------------------------------- 2. no exception text


def test_a_nul_or_a_lone_surrogate_in_the_search_box_just_searches(page):
    page.store.save(None, [Message.user("Plan a trip to Lisbon"), Message.assistant("ok")])
    search = page.fn("search", "change")
    for query in ("lisb\x00", "\x00", f"lisb{SURROGATE}", "trip\x00lisb"):
        messages = page.fire(search, {1: query})
        assert errors(messages) == [], query
        (done,) = completed(messages)
        titles = [label for label, _ in done["output"]["data"][0]["choices"]]
        assert [t.split(" · ")[0] for t in titles] == ["Plan a trip to Lisbon"], query
    assert [s.title for s in page.store.search("lisb\x00trip")] == ["Plan a trip to Lisbon"]


def test_an_import_nested_too_deeply_is_refused_by_name(env):
    path = env.tmp / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    out, said = imported(env, str(path))
    assert out == (gr.skip(),) * 4
    assert said == ["Could not import that file: this is not a chat export: it is nested too deeply"]


@pytest.mark.parametrize("created", ["Infinity", "-Infinity", "NaN", "1e300", "-5", "true", '"2024"'])
def test_an_import_with_an_impossible_time_is_stamped_now_and_exports(env, created):
    rows = [
        {"role": "user", "text": "hi", "created": "WHEN"},
        {"role": "assistant", "text": "ok", "created": 1.7e9},
    ]
    raw = json.dumps({"format": transfer.FORMAT, "version": 1, "title": "When?", "messages": rows})
    raw = raw.replace(
        '"WHEN"', created
    )  # (json.loads reads Infinity and NaN; json.dumps writes no such text)
    path = env.tmp / "when.json"
    path.write_text(raw)
    _, said = imported(env, str(path))
    assert said == [] and env.store.load(env.session.conversation_id).title == "When?"
    stamps = [m.created for m in env.session.messages]
    assert 1.7e9 < stamps[0] < 4.1e9 and stamps[1] == 1700000000
    files = sidebar.export_chat(env.store, env.session).value
    assert len(files) == 2
    assert "hi" in json.loads(sidebar.copy_text(env.store, env.session))["text"]


def test_a_message_stored_with_an_impossible_time_still_exports():
    messages = [Message("user", "hi", created=float("inf"))]
    markdown = transfer.to_markdown("t", messages)
    assert "**You** · ?" in markdown and "hi" in markdown
    assert "Infinity" not in json.dumps(transfer.to_json("t", messages))


@pytest.mark.parametrize(
    "row, why",
    [
        ({"role": "user", "text": f"hi {SURROGATE}"}, "message 1 holds an invalid character"),
        ({"role": "user", "text": "hi", "transcript": SURROGATE}, "message 1 holds an invalid character"),
        ({"role": "user", "text": "hi", "attachments": 5}, "the attachments of message 1 are not a list"),
    ],
)
def test_an_import_holding_what_no_chat_can_is_refused_by_name(env, row, why):
    _, said = imported(env, export(env.tmp, [row]))
    assert len(said) == 1 and said[0].startswith("Could not import that file: ") and why in said[0]
    assert env.store.conversations() == []


def test_a_lone_surrogate_sent_from_the_page_is_refused_and_the_tab_goes_on(page):
    send = page.fn("input", "submit")
    messages = page.fire(send, {1: {"text": f"hi {SURROGATE} there", "files": []}})
    assert [m for m in messages if m.get("msg") == "unexpected_error"] == []
    first = completed(messages)[0]["output"]["data"]
    assert first == [{"__type__": "update"}, {"__type__": "update"}]  # the chat and the box as they were
    assert errors(messages) == [
        "the text contains an invalid character (a lone surrogate such as \\ud800): send valid Unicode text"
    ]
    after = page.fire(send, {1: {"text": "hi there", "files": []}})  # the tab is not left busy
    assert errors(after) == [] and "Hello, world!" in json.dumps(after)


def test_a_lone_surrogate_in_the_draft_does_not_end_the_tab_and_comes_back_replaced(page):
    page.load()
    draft = page.fn(name="remember_draft")
    messages = page.fire(draft, {1: {"text": f"draft {SURROGATE}", "files": []}})
    assert [m for m in messages if m.get("msg") == "unexpected_error"] == [] and errors(messages) == []
    restored = completed(page.load())[0]["output"]["data"]
    assert restored[4]["value"]["text"] == "draft \ufffd"


def test_a_lone_surrogate_in_an_edited_bubble_is_refused_keeping_the_edit(env):
    turn(env, "first")
    before = list(env.session.messages)
    edit = gr.EditData(None, {"index": [0, 0], "value": f"fixed {SURROGATE}", "previous_value": "first"})
    assert actions.edit(env.session, edit) == (gr.skip(), gr.skip())
    assert env.session.messages == before and not env.session.busy
    with pytest.raises(gr.Error, match="lone surrogate"):
        report_error(env.session)


def test_a_name_with_control_characters_or_a_surrogate_is_cleaned(env):
    turn(env, "first")
    assert env.store.rename(env.session.conversation_id, f"My\x00 trip{SURROGATE}")
    assert env.store.conversations()[0].title == "My trip"


# --------------------------------------------------------------------------- 3. read-only or full


def read_only(store: HistoryStore):
    """Connections that SQLite opens read-only: every write is refused (as by chmod for a
    user other than root)."""

    def connect():
        db = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True, timeout=10)
        db.execute("PRAGMA foreign_keys = ON")
        return db

    return connect


def full_disk(store: HistoryStore):
    """Connections to a database that may not grow: SQLite answers "database or disk is full"
    (SQLITE_FULL), as on a full disk."""
    connect = store._connect

    def connect_full():
        db = connect()
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
        return db

    return connect_full


@pytest.mark.parametrize("broken, reason", [(read_only, "read-only"), (full_disk, "disk is full")])
def test_a_turn_goes_on_unsaved_when_the_history_cannot_be_written(env, monkeypatch, broken, reason):
    turn(env, "saved before")
    monkeypatch.setattr(env.store, "_connect", broken(env.store))
    long_words = "x" * 50_000  # (so the full database has to grow)
    for text in (f"first {long_words}", "and another"):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            chat, stats, box, _ = turn(env, text)[-1]
        said = [str(w.message) for w in seen]
        assert len(said) == 1 and reason in said[0] and "could not be saved" in said[0], said
        assert chat[-1] == {"role": "assistant", "content": "Hello, world!"} and "tokens/s" in stats
        assert box.submit_btn is True and not env.session.busy
        report_error(env.session)  # no error toast on top
    assert [m.text for m in env.session.messages][-2:] == ["and another", "Hello, world!"]
    monkeypatch.undo()
    assert [m.text for m in env.store.load(env.session.conversation_id).messages] == [
        "saved before",
        "Hello, world!",
    ]


def test_a_read_only_history_through_the_page_tells_the_user_and_keeps_chatting(page, monkeypatch):
    monkeypatch.setattr(HistoryStore, "_connect", lambda store: read_only(store)())  # the server's store too
    send = page.fn("input", "submit")
    for text in ("hello", "still there?"):
        messages = page.fire(send, {1: {"text": text, "files": []}})
        assert errors(messages) == [] and [m for m in messages if m.get("msg") == "unexpected_error"] == []
        assert toasts(messages) == [
            "This conversation could not be saved to the history (the history database is read-only):"
            " what is shown will be gone after a reload."
        ]
        chat = completed(messages)[1]["output"]["data"][0]  # the answer's last update
        assert [(m["role"], m["content"][-1]["text"]) for m in chat][-2:] == [
            ("user", text),
            ("assistant", "Hello, world!"),
        ]
    monkeypatch.undo()
    assert page.store.conversations() == []


def test_renaming_deleting_importing_undoing_with_a_read_only_history_say_so(env, monkeypatch, tmp_path):
    turn(env, "kept")
    path = export(tmp_path, [{"role": "user", "text": "imported"}])
    monkeypatch.setattr(env.store, "_connect", read_only(env.store))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert sidebar.rename(env.store, env.session, "New name") == gr.skip()
        assert sidebar.delete(env.store, env.session) == (gr.skip(),) * 4
        assert sidebar.import_chat(env.store, ChatSession(), path) == (gr.skip(),) * 4
        actions.undo(env.store, env.session)
    assert [str(w.message) for w in seen] == [
        "The chat could not be renamed: the history database is read-only.",
        "The chat could not be deleted: the history database is read-only.",
        "Could not import that file: it could not be stored (the history database is read-only)",
        "This conversation could not be saved to the history (the history database is read-only):"
        " what is shown will be gone after a reload.",
    ]


def test_the_store_says_why_in_its_own_words(tmp_path, monkeypatch):
    store = HistoryStore(tmp_path)
    monkeypatch.setattr(store, "_connect", full_disk(store))
    with pytest.raises(StoreError) as failed:
        store.save(None, [Message.user("x" * 50_000), Message.assistant("ok")])
    assert str(failed.value) == "the server's disk is full"
    assert isinstance(failed.value, OSError) and isinstance(failed.value.__cause__, sqlite3.OperationalError)


# --------------------------------------------------------------------------- 4. what the browser keeps


def test_the_browser_keeps_a_token_only_and_the_server_answers_to_it_per_user(tmp_path):
    page = Page(tmp_path, auth=(("alice", "a"), ("bob", "b")))
    try:
        page.login("alice", "a")
        cid, _ = page.store.save(None, [Message.user("alice's chat"), Message.assistant("ok")], "alice")
        page.load()  # (the history list now offers that chat)
        draft = page.fire(page.fn(name="remember_draft"), {1: {"text": "my secret draft", "files": []}})
        assert completed(draft)[0]["output"]["data"] == []  # nothing for the browser to store
        custom = page.fn(name="remember_settings")
        index = [type(c).__name__ for c in page.blocks.fns[custom].inputs].index("Textbox")
        assert completed(page.fire(custom, {index: "my secret prompt"}))[0]["output"]["data"] == []
        # The one event that writes the BrowserStates gives the token and empties the old copies.
        writers = {
            f.name for f in page.blocks.fns.values() if any(isinstance(c, gr.BrowserState) for c in f.outputs)
        }
        assert writers == {"move"}
        assert "secret" not in json.dumps(page.browser) and [v for v in page.browser.values() if v] != []
        assert (
            errors(page.fire(page.fn(name="remember_chat"), {1: cid})) == []
        )  # the history list: chat opened
        mine = completed(page.load())[0]["output"]["data"]  # a reload
        assert mine[4]["value"]["text"] == "my secret draft" and "my secret prompt" in json.dumps(mine)
        assert mine[2] == "alice's chat"  # the title: it is open again
        page.login("bob", "b")  # the same browser, another login: its token gives bob nothing of alice's
        assert "secret" not in json.dumps(completed(page.load())[0]["output"]["data"])
        page.login("alice", "a")
        page.browser = {}  # alice in another browser: as before, each browser remembers its own
        assert "secret" not in json.dumps(completed(page.load())[0]["output"]["data"])
    finally:
        page.close()


def test_what_a_browser_held_before_is_moved_to_the_server_and_taken_out_of_it(env):
    restore = prefs.restorer(env.store, {"custom_prompt": gr.Textbox()})
    move = prefs.mover(env.store)
    alice = SimpleNamespace(username="alice", query_params={})
    held = ({}, {"alice": "old draft", "bob": "bob's draft"}, {"alice": {"custom_prompt": "old prompt"}})
    *_, box, prompt = restore(alice, ChatSession(), *held)  # a browser from before: no token yet
    assert box.value["text"] == "old draft" and prompt == "old prompt"
    token, *left = move(alice, "", *held)
    assert left == [{}, {"bob": "bob's draft"}, {}]  # bob's copy stays until bob comes back
    *_, box, prompt = restore(alice, ChatSession(), *left, token)
    assert box.value["text"] == "old draft" and prompt == "old prompt"  # now from the server
    # Moved once: what the browser claims for alice later is not taken.
    planted = ({}, {"alice": "planted"}, {"alice": {"custom_prompt": "planted"}})
    assert move(alice, token, *planted)[0] == token
    *_, box, prompt = restore(alice, ChatSession(), *planted, token)
    assert box.value["text"] == "old draft" and prompt == "old prompt"
    *_, box, prompt = restore(alice, ChatSession(), {}, {}, {}, "0" * 32)  # another browser's token
    assert box == gr.skip() and prompt == gr.skip()
