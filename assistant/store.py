"""Chat history kept in SQLite under the data dir, with copies of the files people sent.

One row per conversation, one row per message. Saving replaces a conversation's messages as a
whole: regenerate, edit and undo rewrite the tail, and conversations are small. Each save bumps
the conversation's ``version``; a writer that says which version it read (``write(...,
base_version=…)``) is refused with :class:`StaleConversation` when another writer (a second tab)
saved in between, so nobody's turns are overwritten by a stale copy. Attachments
are copied into ``media/<conversation id>/`` (named by content hash) because the upload cache
of the web server is temporary; the copies are what saved messages point at.

Every call opens its own short-lived connection, so the store is safe to share between the
web server's worker threads. When SQLite cannot do what is asked (a full disk, a read-only or
locked database) the store raises :class:`StoreError`, an ``OSError`` with a short reason of
its own, never SQLite's text; the page then keeps chatting without saving.

Besides the history, the store keeps what the page remembers for a user in a browser between
visits (the last open chat, the unsent draft, the settings): :meth:`HistoryStore.remember`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from assistant import media
from assistant.conversation import ATTACHMENT_KINDS, Attachment, ImageAttachment, Message, reachable

DB_NAME = "history.sqlite3"
TITLE_CHARS = 60
LOCAL_OWNER = "local"  # conversations of an app without --auth

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    title TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_by_owner ON conversations (owner, updated_at);
CREATE TABLE IF NOT EXISTS messages (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    transcript TEXT,
    images TEXT NOT NULL,
    PRIMARY KEY (conversation_id, position)
);
CREATE TABLE IF NOT EXISTS preferences (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (owner, name)
);
"""
# Added since the first schema; a database from before gets them on open.
# ``attachments``: every file of a message, typed (JSON); the first schema's ``images`` (image
# paths) is moved into it on open (see _type_legacy_images) and is only written after that.
# ``shown`` 0: a version not on the branch shown (its ``parent_id`` says where it hangs).
NEW_MESSAGE_COLUMNS = {
    "attachments": "TEXT",
    "message_id": "TEXT",
    "created_at": "REAL",
    "parent_id": "TEXT",
    "shown": "INTEGER NOT NULL DEFAULT 1",
}
NEW_CONVERSATION_COLUMNS = {"version": "INTEGER NOT NULL DEFAULT 0"}
# Full-text search over each conversation's title and words (SQLite FTS5), one row per chat.
SEARCH_SCHEMA = "CREATE VIRTUAL TABLE search_index USING fts5(conversation_id UNINDEXED, title, body)"
# What a search query may hold: SQLite's FTS5 reads a query up to its first NUL ("unterminated
# string"), and no stored text holds a control character or a lone surrogate to be found.
_NOT_SEARCHABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_NOT_IN_A_TITLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
PREFERENCE_BYTES = 256 * 1024  # one remembered value, at most (a draft, the settings)
PREFERENCE_DAYS = 365  # what the page remembers and nobody changed for a year is forgotten


class StoreError(OSError):
    """The history could not be read or written: ``reason`` says why in a few words of our
    own (SQLite's message stays in the log, as the ``__cause__``)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _reason(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = f"{name} {exc}".lower()
    if "full" in text:
        return "the server's disk is full"
    if "readonly" in text or "read-only" in text:
        return "the history database is read-only"
    if "busy" in text or "locked" in text:
        return "the history database is busy"
    return "the history database cannot be used"


class StaleConversation(Exception):
    """The conversation changed since the writer read it; ``current`` is what is stored now."""

    def __init__(self, current: StoredConversation):
        super().__init__("the conversation was changed elsewhere")
        self.current = current


@dataclass(frozen=True)
class Summary:
    id: str
    title: str
    updated_at: float


@dataclass(frozen=True)
class StoredConversation:
    id: str
    title: str
    messages: list[Message] = field(default_factory=list)
    version: int = 0
    others: list[Message] = field(default_factory=list)  # versions not shown (see conversation.py)


_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MARKS = re.compile(r"(\*\*|__|~~|`+|(?<!\w)[*_](?=\S)|(?<=\S)[*_](?!\w))")
_LINE_MARK = re.compile(r"^\s{0,3}(#{1,6}\s+|>\s?|[-*+]\s+|\d+[.)]\s+)", re.MULTILINE)


def plain_text(text: str) -> str:
    """Markdown read as plain words (for titles): no **, `, #, link targets or HTML tags."""
    text = _LINK.sub(r"\1", text)
    text = _LINE_MARK.sub("", text)
    text = re.sub(r"</?[A-Za-z][^>]*>", "", text)
    return " ".join(_MARKS.sub("", text).split())


def title_from(messages: list[Message]) -> str:
    """The first user words as plain text, shortened; 'Photo' for a picture-only start."""
    for m in messages:
        if m.role != "user":
            continue
        words = plain_text(m.words)
        if words:
            return words if len(words) <= TITLE_CHARS else words[: TITLE_CHARS - 1].rstrip() + "…"
        if m.images:
            return "Photo"
    return "New chat"


def _attachments_json(attachments: tuple[Attachment, ...]) -> str:
    # "name": the name a document was sent under (its saved copy is named by content)
    return json.dumps(
        [
            {
                "kind": a.kind,
                "path": str(a.source),
                **({"name": n} if (n := getattr(a, "name", None)) else {}),
            }
            for a in attachments
        ]
    )


def _attachments_from(stored: str) -> tuple[Attachment, ...]:
    return tuple(
        ATTACHMENT_KINDS[item["kind"]](item["path"], *([item["name"]] if item.get("name") else []))
        for item in json.loads(stored)
        if item["kind"] in ATTACHMENT_KINDS
    )


def _type_legacy_images(db: sqlite3.Connection) -> None:
    """Rows written before attachments were typed (their ``attachments`` is NULL: the column was
    added to their table later) get their ``images`` paths as image attachments, in one
    transaction. Once done nothing is NULL, so opening again finds nothing and writes nothing
    (a read-only history still opens). ``images`` stays filled on every save, for versions
    before typed attachments, but nothing here reads it."""
    if db.execute("SELECT 1 FROM messages WHERE attachments IS NULL LIMIT 1").fetchone() is None:
        return
    db.execute("BEGIN IMMEDIATE")  # (another process opening the same history waits)
    rows = db.execute(
        "SELECT conversation_id, position, images FROM messages WHERE attachments IS NULL"
    ).fetchall()
    db.executemany(
        "UPDATE messages SET attachments = ? WHERE conversation_id = ? AND position = ?",
        [
            (_attachments_json(tuple(ImageAttachment(path) for path in json.loads(images))), cid, position)
            for cid, position, images in rows
        ],
    )
    db.commit()


class HistoryStore:
    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir).expanduser()
        self.media_dir = self.data_dir / "media"
        self.media_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / DB_NAME
        with self._open() as db, db:
            db.executescript(SCHEMA)
            have = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
            for column, kind in NEW_MESSAGE_COLUMNS.items():
                if column not in have:
                    db.execute(f"ALTER TABLE messages ADD COLUMN {column} {kind}")
            have = {row[1] for row in db.execute("PRAGMA table_info(conversations)")}
            for column, kind in NEW_CONVERSATION_COLUMNS.items():
                if column not in have:
                    db.execute(f"ALTER TABLE conversations ADD COLUMN {column} {kind}")
            _type_legacy_images(db)
            self.searchable = self._ensure_search(db)
        try:  # (the page remembers per browser, and browsers come and go)
            with self._open() as db, db:
                db.execute(
                    "DELETE FROM preferences WHERE updated_at < ?", (time.time() - PREFERENCE_DAYS * 86400,)
                )
        except StoreError:  # a read-only history forgets nothing
            pass

    def _ensure_search(self, db: sqlite3.Connection) -> bool:
        """The search index (built from what is stored when first made); False: this SQLite
        has no FTS5, and search falls back to a plain scan."""
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'search_index'").fetchone():
            return True
        try:
            db.execute(SEARCH_SCHEMA)
        except sqlite3.OperationalError:
            return False
        for (cid,) in db.execute("SELECT id FROM conversations").fetchall():
            self._index(db, cid)
        return True

    def _index(self, db: sqlite3.Connection, conversation_id: str) -> None:
        db.execute("DELETE FROM search_index WHERE conversation_id = ?", (conversation_id,))
        head = db.execute("SELECT title FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if head is None:
            return
        rows = db.execute(
            "SELECT text, transcript FROM messages WHERE conversation_id = ? ORDER BY position",
            (conversation_id,),
        ).fetchall()
        body = "\n".join(t for row in rows for t in row if t)
        db.execute(
            "INSERT INTO search_index (conversation_id, title, body) VALUES (?, ?, ?)",
            (conversation_id, head[0], body),
        )

    def search(self, query: str, owner: str = LOCAL_OWNER, limit: int = 50) -> list[Summary]:
        """This owner's conversations whose title or messages hold every word of ``query``
        (prefixes count: 'lis' finds Lisbon), most recently changed first. Control characters
        and lone surrogates in ``query`` separate words (nothing stored holds them)."""
        words = _NOT_SEARCHABLE.sub(" ", query).split()
        if not words:
            return self.conversations(owner)
        with self._open() as db:
            if self.searchable:
                match = " ".join('"' + w.replace('"', '""') + '"*' for w in words)
                rows = db.execute(
                    "SELECT c.id, c.title, c.updated_at FROM search_index s JOIN conversations c"
                    " ON c.id = s.conversation_id WHERE search_index MATCH ? AND c.owner = ?"
                    " ORDER BY c.updated_at DESC LIMIT ?",
                    (match, owner, limit),
                ).fetchall()
            else:
                rows = [
                    row
                    for row in db.execute(
                        "SELECT id, title, updated_at FROM conversations WHERE owner = ? ORDER BY updated_at DESC",
                        (owner,),
                    ).fetchall()
                    if all(w.lower() in (row[1] + self._words(db, row[0])).lower() for w in words)
                ][:limit]
        return [Summary(*row) for row in rows]

    @staticmethod
    def _words(db: sqlite3.Connection, conversation_id: str) -> str:
        rows = db.execute(
            "SELECT text, transcript FROM messages WHERE conversation_id = ?", (conversation_id,)
        )
        return "\n".join(t for row in rows for t in row if t)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10)
        db.execute("PRAGMA foreign_keys = ON")
        return db

    @contextmanager
    def _open(self) -> Iterator[sqlite3.Connection]:
        """A connection, closed after use; what SQLite refuses (a full disk, a read-only or
        locked database, a commit that fails) comes out as :class:`StoreError`."""
        try:
            with closing(self._connect()) as db:
                yield db
        except sqlite3.OperationalError as exc:
            raise StoreError(_reason(exc)) from exc

    # -- what the page remembers per user ----------------------------------------------

    def remember(self, owner: str, name: str, value) -> None:
        """Keep ``value`` (JSON-able) as this owner's ``name``; ``None`` forgets it. A value
        larger than :data:`PREFERENCE_BYTES` is not kept (ValueError)."""
        with self._open() as db, db:
            if value is None:
                db.execute("DELETE FROM preferences WHERE owner = ? AND name = ?", (owner, name))
                return
            text = json.dumps(value)  # (ASCII: a lone surrogate would be kept escaped)
            if len(text) > PREFERENCE_BYTES:
                raise ValueError(f"{name} is larger than {PREFERENCE_BYTES} bytes")
            db.execute(
                "INSERT INTO preferences (owner, name, value, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (owner, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (owner, name, text, time.time()),
            )

    def recall(self, owner: str, name: str):
        """What :meth:`remember` kept for this owner under ``name`` (None: nothing)."""
        with self._open() as db:
            row = db.execute(
                "SELECT value FROM preferences WHERE owner = ? AND name = ?", (owner, name)
            ).fetchone()
        return json.loads(row[0]) if row else None

    # -- conversations -----------------------------------------------------------------

    def conversations(self, owner: str = LOCAL_OWNER) -> list[Summary]:
        """This owner's conversations, most recently changed first."""
        with self._open() as db:
            rows = db.execute(
                "SELECT id, title, updated_at FROM conversations WHERE owner = ? ORDER BY updated_at DESC",
                (owner,),
            ).fetchall()
        return [Summary(*row) for row in rows]

    def load(self, conversation_id: str, owner: str = LOCAL_OWNER) -> StoredConversation | None:
        with self._open() as db:
            return self._load(db, conversation_id, owner)

    def version(self, conversation_id: str, owner: str = LOCAL_OWNER) -> int | None:
        """How many times this conversation was saved (None: not this owner's, or gone)."""
        with self._open() as db:
            row = db.execute(
                "SELECT version FROM conversations WHERE id = ? AND owner = ?", (conversation_id, owner)
            ).fetchone()
        return row[0] if row else None

    def _load(self, db: sqlite3.Connection, conversation_id: str, owner: str) -> StoredConversation | None:
        head = db.execute(
            "SELECT title, version FROM conversations WHERE id = ? AND owner = ?", (conversation_id, owner)
        ).fetchone()
        if head is None:
            return None
        rows = db.execute(
            "SELECT role, text, attachments, transcript, message_id, created_at, parent_id, shown"
            " FROM messages WHERE conversation_id = ? ORDER BY position",
            (conversation_id,),
        ).fetchall()
        messages: list[Message] = []
        others: list[Message] = []
        for role, text, attachments, transcript, message_id, created, parent, shown in rows:
            identity = {"id": message_id} if message_id else {}
            if created is not None:
                identity["created"] = created
            message = Message(
                role, text, _attachments_from(attachments), transcript, parent=parent, **identity
            )
            (messages if shown else others).append(message)
        return StoredConversation(conversation_id, head[0], messages, head[1], others)

    def save(
        self, conversation_id: str | None, messages: list[Message], owner: str = LOCAL_OWNER
    ) -> tuple[str, list[Message]]:
        """Create or overwrite a conversation. Attached files are copied into the media dir
        first; returns the id and the messages as stored (their paths point at the copies)."""
        saved = self.write(conversation_id, messages, owner)
        return saved.id, saved.messages

    def write(
        self,
        conversation_id: str | None,
        messages: list[Message],
        owner: str = LOCAL_OWNER,
        base_version: int | None = None,
        others: Sequence[Message] = (),
    ) -> StoredConversation:
        """:meth:`save`, refused with :class:`StaleConversation` when ``base_version`` is given
        and the stored conversation is no longer that version (someone else saved since).
        ``others`` are the versions not shown; those that no longer hang off the conversation
        (an undone message's) are dropped."""
        conversation_id = conversation_id or uuid.uuid4().hex
        shown = [replace(m, parent=messages[i - 1].id if i else None) for i, m in enumerate(messages)]
        stored, kept = (
            [
                replace(
                    m,
                    attachments=tuple(
                        replace(a, source=self._keep_file(conversation_id, str(a.source)))
                        for a in m.attachments
                    ),
                )
                for m in group
            ]
            for group in (shown, reachable(shown, others))
        )
        now = time.time()
        with self._open() as db, db:
            db.execute("BEGIN IMMEDIATE")  # read the version and write under one lock
            row = db.execute(
                "SELECT owner, version FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
            if row is not None and row[0] != owner:
                raise PermissionError("conversation belongs to somebody else")
            if base_version is not None and row is not None and row[1] != base_version:
                current = self._load(db, conversation_id, owner)
                assert current is not None
                raise StaleConversation(current)
            version = 1 if row is None else row[1] + 1
            if row is None:
                db.execute(
                    "INSERT INTO conversations (id, owner, title, created_at, updated_at, version)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (conversation_id, owner, title_from(stored), now, now, version),
                )
            else:
                db.execute(
                    "UPDATE conversations SET updated_at = ?, version = ? WHERE id = ?",
                    (now, version, conversation_id),
                )
            db.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
            db.executemany(
                "INSERT INTO messages (conversation_id, position, role, text, transcript, images, attachments, message_id,"
                " created_at, parent_id, shown) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        conversation_id,
                        i,
                        m.role,
                        m.text,
                        m.transcript,
                        json.dumps([str(p) for p in m.images]),
                        _attachments_json(m.attachments),
                        m.id,
                        m.created,
                        m.parent,
                        int(i < len(stored)),
                    )
                    for i, m in enumerate([*stored, *kept])
                ],
            )
            if self.searchable:
                self._index(db, conversation_id)
        self._drop_unused_files(conversation_id, [*stored, *kept])
        title = self._title(conversation_id)
        return StoredConversation(conversation_id, title, stored, version, kept)

    def _title(self, conversation_id: str) -> str:
        with self._open() as db:
            row = db.execute("SELECT title FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        return row[0] if row else ""

    def owner_of(self, conversation_id: str) -> str | None:
        """Whose conversation this is (None: no such conversation)."""
        with self._open() as db:
            row = db.execute("SELECT owner FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        return row[0] if row else None

    def rename(self, conversation_id: str, title: str, owner: str = LOCAL_OWNER) -> bool:
        title = " ".join(_NOT_IN_A_TITLE.sub(" ", title).split())[:200]
        if not title:
            return False
        with self._open() as db, db:
            renamed = (
                db.execute(
                    "UPDATE conversations SET title = ? WHERE id = ? AND owner = ?",
                    (title, conversation_id, owner),
                ).rowcount
                > 0
            )
            if renamed and self.searchable:
                self._index(db, conversation_id)
            return renamed

    def delete(self, conversation_id: str, owner: str = LOCAL_OWNER) -> bool:
        with self._open() as db, db:
            gone = (
                db.execute(
                    "DELETE FROM conversations WHERE id = ? AND owner = ?", (conversation_id, owner)
                ).rowcount
                > 0
            )
            if gone and self.searchable:
                db.execute("DELETE FROM search_index WHERE conversation_id = ?", (conversation_id,))
        if gone:
            shutil.rmtree(self._conversation_media(conversation_id), ignore_errors=True)
        return gone

    # -- attached files ------------------------------------------------------------------------

    def _conversation_media(self, conversation_id: str) -> Path:
        if not conversation_id.isalnum():  # ids are uuid hex: never a path
            raise ValueError(f"bad conversation id {conversation_id!r}")
        return self.media_dir / conversation_id

    def _keep_file(self, conversation_id: str, path: str) -> str:
        """A copy of ``path`` inside this conversation's media dir (already there: unchanged)."""
        folder = self._conversation_media(conversation_id)
        source = Path(path)
        if source.parent == folder:
            return str(source)
        data = source.read_bytes()
        # Named by content, typed by content: the name a user gave the file says nothing.
        target = folder / (hashlib.sha256(data).hexdigest()[:32] + media.suffix_for(data))
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
        return str(target)

    def _drop_unused_files(self, conversation_id: str, messages: list[Message]) -> None:
        """Files only an undone or edited-away message used are deleted with it."""
        folder = self._conversation_media(conversation_id)
        used = {Path(str(a.source)).name for m in messages for a in m.attachments}
        for file in folder.glob("*") if folder.is_dir() else ():
            if file.name not in used:
                file.unlink(missing_ok=True)
