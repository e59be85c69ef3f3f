"""The SQLite chat history: create, list, rename, delete, reopen after a restart, images kept."""

from pathlib import Path

import pytest
from PIL import Image

from assistant.conversation import ImageAttachment, Message
from assistant.store import HistoryStore, title_from


def photo(path: Path, color=(200, 30, 30)) -> str:
    Image.new("RGB", (32, 24), color).save(path)
    return str(path)


def exchange(text: str, images=(), reply: str = "ok") -> list[Message]:
    return [Message.user(text, images), Message.assistant(reply)]


def test_create_list_and_load(tmp_path):
    store = HistoryStore(tmp_path / "data")
    first, _ = store.save(None, exchange("What is a llama?"))
    second, _ = store.save(None, exchange("Plan a trip to Lisbon"))
    listed = store.conversations()
    assert [c.id for c in listed] == [second, first]  # newest first
    assert [c.title for c in listed] == ["Plan a trip to Lisbon", "What is a llama?"]
    loaded = store.load(first)
    assert loaded.title == "What is a llama?"
    assert [(m.role, m.text) for m in loaded.messages] == [("user", "What is a llama?"), ("assistant", "ok")]


def test_saving_again_replaces_messages_and_moves_it_to_the_top(tmp_path):
    store = HistoryStore(tmp_path)
    a, messages = store.save(None, exchange("one"))
    b, _ = store.save(None, exchange("two"))
    store.save(a, messages + exchange("three", reply="3"))
    assert [c.id for c in store.conversations()] == [a, b]
    assert [m.text for m in store.load(a).messages] == ["one", "ok", "three", "3"]
    store.save(a, messages)  # undo: the tail goes away
    assert [m.text for m in store.load(a).messages] == ["one", "ok"]


def test_titles_come_from_the_first_words_or_the_transcript():
    assert title_from([Message("user", "  hello\n  there ")]) == "hello there"
    assert title_from([Message("user", "", transcript="what is this")]) == "what is this"
    assert title_from([Message.user("", ("a.png",))]) == "Photo"
    long = title_from([Message("user", "word " * 40)])
    assert len(long) <= 60 and long.endswith("…")


def test_rename_and_delete(tmp_path):
    store = HistoryStore(tmp_path)
    cid, _ = store.save(None, exchange("first words"))
    assert store.rename(cid, "  My   trip ")
    assert store.conversations()[0].title == "My trip"
    assert not store.rename(cid, "   ")  # an empty name is refused
    assert store.delete(cid)
    assert store.conversations() == [] and store.load(cid) is None
    assert not store.delete(cid)


def test_reopen_after_restart_keeps_text_transcripts_and_images(tmp_path):
    upload = photo(tmp_path / "upload.png")
    store = HistoryStore(tmp_path / "data")
    messages = [
        Message("user", "", (ImageAttachment(upload),), transcript="what colour is this"),
        Message.assistant("red"),
    ]
    cid, stored = store.save(None, messages)
    Path(upload).unlink()  # the web server's upload cache is temporary

    reopened = HistoryStore(tmp_path / "data").load(cid)  # a new process would do just this
    assert reopened.messages[0].transcript == "what colour is this"
    assert reopened.messages[0].words == "what colour is this"
    kept = Path(reopened.messages[0].images[0])
    assert kept.is_relative_to(tmp_path / "data" / "media") and kept == Path(stored[0].images[0])
    with Image.open(kept) as image:
        assert image.size == (32, 24)


def test_images_of_dropped_messages_and_deleted_chats_are_removed(tmp_path):
    store = HistoryStore(tmp_path / "data")
    cid, stored = store.save(None, exchange("a", [photo(tmp_path / "a.png")]))
    cid, stored = store.save(cid, stored + exchange("b", [photo(tmp_path / "b.png", (0, 0, 255))]))
    folder = tmp_path / "data" / "media" / cid
    assert len(list(folder.iterdir())) == 2
    store.save(cid, stored[:2])  # the second exchange was undone
    assert [p.name for p in folder.iterdir()] == [Path(stored[0].images[0]).name]
    store.delete(cid)
    assert not folder.exists()


def test_same_image_twice_is_stored_once(tmp_path):
    store = HistoryStore(tmp_path / "data")
    image = photo(tmp_path / "a.png")
    cid, stored = store.save(None, exchange("a", [image]) + exchange("again", [image]))
    assert stored[0].images == stored[2].images
    assert len(list((tmp_path / "data" / "media" / cid).iterdir())) == 1


def test_owners_only_see_their_own_conversations(tmp_path):
    store = HistoryStore(tmp_path)
    alice, _ = store.save(None, exchange("alice's question"), owner="alice")
    store.save(None, exchange("bob's question"), owner="bob")
    assert [c.title for c in store.conversations("alice")] == ["alice's question"]
    assert store.load(alice, owner="bob") is None
    assert not store.rename(alice, "mine now", owner="bob")
    assert not store.delete(alice, owner="bob")
    with pytest.raises(PermissionError):
        store.save(alice, exchange("overwrite"), owner="bob")


def test_a_history_from_before_typed_attachments_still_opens(tmp_path):
    import json
    import sqlite3

    image = photo(tmp_path / "old.png")
    db = sqlite3.connect(tmp_path / "history.sqlite3")  # the first schema, as older versions wrote it
    db.executescript(
        "CREATE TABLE conversations (id TEXT PRIMARY KEY, owner TEXT NOT NULL, title TEXT NOT NULL,"
        " created_at REAL NOT NULL, updated_at REAL NOT NULL);"
        "CREATE TABLE messages (conversation_id TEXT NOT NULL, position INTEGER NOT NULL, role TEXT NOT NULL,"
        " text TEXT NOT NULL, transcript TEXT, images TEXT NOT NULL, PRIMARY KEY (conversation_id, position));"
    )
    db.execute("INSERT INTO conversations VALUES ('abc', 'local', 'old chat', 1, 1)")
    db.execute(
        "INSERT INTO messages VALUES ('abc', 0, 'user', 'what is it', 'spoken', ?)", (json.dumps([image]),)
    )
    db.execute("INSERT INTO messages VALUES ('abc', 1, 'assistant', 'a square', NULL, '[]')")
    db.commit()
    db.close()

    store = HistoryStore(tmp_path)
    old = store.load("abc")
    assert [(m.role, m.text, m.transcript, m.images) for m in old.messages] == [
        ("user", "what is it", "spoken", (image,)),
        ("assistant", "a square", None, ()),
    ]
    _, saved = store.save("abc", [*old.messages, *exchange("and now?")])
    reopened = store.load("abc").messages
    assert [m.id for m in reopened] == [m.id for m in saved] and reopened[0].images == saved[0].images


def test_legacy_image_paths_move_into_typed_attachments_once(tmp_path, monkeypatch):
    import json
    import sqlite3

    first, second, note = photo(tmp_path / "a.png"), photo(tmp_path / "b.png", (0, 90, 200)), "/x/notes.md"
    db = sqlite3.connect(tmp_path / "history.sqlite3")
    db.executescript(  # the first schema: a message's photos as a JSON list of paths in ``images``
        "CREATE TABLE conversations (id TEXT PRIMARY KEY, owner TEXT NOT NULL, title TEXT NOT NULL,"
        " created_at REAL NOT NULL, updated_at REAL NOT NULL);"
        "CREATE TABLE messages (conversation_id TEXT NOT NULL, position INTEGER NOT NULL, role TEXT NOT NULL,"
        " text TEXT NOT NULL, transcript TEXT, images TEXT NOT NULL, PRIMARY KEY (conversation_id, position));"
        "INSERT INTO conversations VALUES ('abc', 'local', 'two photos', 1, 1);"
    )
    db.execute(
        "INSERT INTO messages VALUES ('abc', 0, 'user', 'compare', NULL, ?)", (json.dumps([first, second]),)
    )
    db.execute("INSERT INTO messages VALUES ('abc', 1, 'assistant', 'the left is red', NULL, '[]')")
    # A later version added ``attachments`` (older rows keep NULL there) and filled both columns.
    db.execute("ALTER TABLE messages ADD COLUMN attachments TEXT")
    typed = json.dumps([{"kind": "image", "path": first}, {"kind": "document", "path": note, "name": "n.md"}])
    db.execute(
        "INSERT INTO messages VALUES ('abc', 2, 'user', 'and these?', NULL, ?, ?)",
        (json.dumps([first]), typed),
    )
    db.commit()
    db.close()

    def stored_attachments():
        with sqlite3.connect(tmp_path / "history.sqlite3") as db:
            rows = db.execute("SELECT attachments FROM messages ORDER BY position").fetchall()
        return [json.loads(a) if a is not None else None for (a,) in rows]

    HistoryStore(tmp_path)
    migrated = stored_attachments()
    assert migrated == [
        [{"kind": "image", "path": first}, {"kind": "image", "path": second}],
        [],
        json.loads(typed),  # typed rows are left as they were
    ]
    loaded = HistoryStore(tmp_path).load("abc").messages  # opening again changes nothing
    assert stored_attachments() == migrated
    assert [m.images for m in loaded] == [(first, second), (), (first,)]
    assert loaded[2].documents == (note,) and loaded[2].attachments[1].name == "n.md"
    # Nothing is left to move, so a read-only history opens and reads the same.
    monkeypatch.setattr(
        HistoryStore, "_connect", lambda store: sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)
    )
    assert HistoryStore(tmp_path).load("abc").messages == loaded
    monkeypatch.undo()
    _, saved = HistoryStore(tmp_path).save("abc", loaded[:2])  # the photos are copied in on the next save
    assert [Path(p).read_bytes() for p in saved[0].images] == [
        Path(first).read_bytes(),
        Path(second).read_bytes(),
    ]


def test_a_stale_writer_is_refused_and_told_what_is_stored(tmp_path):
    from assistant.store import StaleConversation

    store = HistoryStore(tmp_path)
    first = store.write(None, exchange("From TAB ONE"))
    assert first.version == 1 and store.version(first.id) == 1
    # Tab two read version 1 too; tab one saves a turn first.
    tab_one = store.write(first.id, first.messages + exchange("one again"), base_version=1)
    assert tab_one.version == 2
    with pytest.raises(StaleConversation) as refused:
        store.write(first.id, first.messages + exchange("From TAB TWO"), base_version=1)
    assert [m.text for m in refused.value.current.messages][-2:] == ["one again", "ok"]
    assert refused.value.current.version == 2
    assert [m.text for m in store.load(first.id).messages] == ["From TAB ONE", "ok", "one again", "ok"]
    assert store.version(first.id, owner="mallory") is None


def test_an_old_database_gains_versions(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "history.sqlite3")
    db.executescript(
        "CREATE TABLE conversations (id TEXT PRIMARY KEY, owner TEXT NOT NULL, title TEXT NOT NULL,"
        " created_at REAL NOT NULL, updated_at REAL NOT NULL);"
        "INSERT INTO conversations VALUES ('abc', 'local', 'old', 1, 1);"
    )
    db.commit()
    db.close()
    store = HistoryStore(tmp_path)
    assert store.load("abc").version == 0
    assert store.write("abc", exchange("new"), base_version=0).version == 1


def test_titles_are_plain_text():
    assert title_from([Message("user", "**Bold** idea: `code` and [a link](http://x.y) # not")]) == (
        "Bold idea: code and a link # not"
    )
    assert title_from([Message("user", "## Heading\n- item *one*")]) == "Heading item one"
    assert title_from([Message("user", "snake_case_name stays")]) == "snake_case_name stays"


def test_search_finds_words_in_titles_and_messages_of_this_owner_only(tmp_path):
    store = HistoryStore(tmp_path)
    trip, _ = store.save(None, exchange("Plan a trip to Lisbon", reply="Visit the Alfama district"))
    llama, _ = store.save(None, exchange("What is a llama?"))
    store.save(None, exchange("Lisbon for alice"), owner="alice")
    assert [c.id for c in store.search("lisb")] == [trip]  # a prefix, any case
    assert [c.id for c in store.search("alfama")] == [trip]  # the reply's words too
    assert [c.id for c in store.search("trip alfama")] == [trip] and store.search("trip llama") == []
    assert {c.id for c in store.search("  ")} == {trip, llama}
    assert store.search('"quoted" OR *') == []  # FTS syntax is taken as words, never an error
    store.rename(llama, "Camelids")
    assert [c.id for c in store.search("camel")] == [llama]
    store.save(trip, exchange("Now about Porto"))
    assert store.search("alfama") == [] and [c.id for c in store.search("porto")] == [trip]  # re-indexed
    store.delete(trip)
    assert store.search("porto") == []


def test_an_existing_history_is_indexed_when_first_opened(tmp_path):
    import sqlite3

    store = HistoryStore(tmp_path)
    cid, _ = store.save(None, exchange("An old chat about volcanoes"))
    with sqlite3.connect(tmp_path / "history.sqlite3") as db:
        db.execute("DROP TABLE search_index")
    assert [c.id for c in HistoryStore(tmp_path).search("volcano")] == [cid]


def test_what_the_page_remembers_is_kept_per_owner_and_forgotten_on_none(tmp_path):
    from assistant import store as store_module

    store = HistoryStore(tmp_path)
    store.remember("alice", "page.draft.x", "hello \ud800")  # (kept escaped: SQLite takes no surrogate)
    store.remember("bob", "page.draft.x", {"a": 1})
    assert store.recall("alice", "page.draft.x") == "hello \ud800" and store.recall(
        "bob", "page.draft.x"
    ) == {"a": 1}
    store.remember("alice", "page.draft.x", None)
    assert store.recall("alice", "page.draft.x") is None and store.recall("carol", "page.draft.x") is None
    with pytest.raises(ValueError):
        store.remember("alice", "page.draft.x", "x" * store_module.PREFERENCE_BYTES)
    with store._open() as db, db:  # a year untouched: forgotten when the store is next opened
        db.execute("UPDATE preferences SET updated_at = 0")
    assert HistoryStore(tmp_path).recall("bob", "page.draft.x") is None
