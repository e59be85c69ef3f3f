"""A chat taken out of the history and brought back: Markdown to read, JSON to import.

Both carry the photos (as ``data:`` URLs in Markdown, base64 in JSON), so an export stands on
its own instead of pointing at this server's file URLs. Importing trusts nothing: the format
and every field are checked, and a photo is kept only if its content is a supported image.
Recordings are not kept in the history, so neither format carries them (the transcript is).

An import is bounded by what the app itself would ever keep: one message's text (with its
transcript) of at most :data:`MAX_MESSAGE_CHARS`, :data:`MAX_MESSAGES` messages and
:data:`MAX_CHARS` characters in all. Before these bounds a single 62.5 MB message was imported
(seconds of work, again at every reopen).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

from assistant import limits, media
from assistant.conversation import DocumentAttachment, ImageAttachment, Message, VideoAttachment
from assistant.errors import InvalidParams

FORMAT = "multimodal-assistant/chat"
VERSION = 1
MAX_IMPORT_BYTES = 64 * 1024 * 1024
MAX_MESSAGES = 10_000
# One message's words (with its transcript): about 250,000 tokens of ordinary English text,
# twice what a 128k-token context (the largest of the local models this app is made for)
# holds, and far beyond a reply (at most max_new_tokens_cap, 4096 tokens).
MAX_MESSAGE_CHARS = 1_000_000
MAX_CHARS = 5_000_000  # all messages of one import together
MAX_TITLE_CHARS = 200  # as HistoryStore.rename keeps
ROLES = ("user", "assistant")
LATEST_STAMP = 253402300799.0  # 9999-12-31 23:59:59 UTC: later than that no clock shows a date


def _photo(source) -> tuple[str, bytes] | None:
    try:
        data = Path(str(source)).read_bytes()
    except OSError:
        return None  # a photo that is gone is left out, not an error
    return media.content_type(data), data


def to_markdown(title: str, messages: Sequence[Message], embed_photos: bool = True) -> str:
    """The chat as Markdown; photos inside as data: URLs, or (``embed_photos=False``, for the
    clipboard) as a "[photo]" mark: never as a server address."""
    out = [f"# {title}", ""]
    for m in messages:
        who = "You" if m.role == "user" else "Assistant"
        out += [f"**{who}** · {_when(m.created)}", ""]
        for source in m.images:
            photo = _photo(source) if embed_photos else None
            if photo is not None:
                out += [f"![photo](data:{photo[0]};base64,{base64.b64encode(photo[1]).decode()})", ""]
            elif not embed_photos:
                out += ["*[photo]*", ""]
        for attachment in m.attachments:  # clips and documents are named, not embedded
            if isinstance(attachment, VideoAttachment):
                out += ["*[video clip]*", ""]
            elif isinstance(attachment, DocumentAttachment):
                out += [f"*[document: {attachment.name or Path(str(attachment.source)).name}]*", ""]
        if m.text.strip():
            out += [m.text.strip(), ""]
        if m.transcript:
            out += [f"> (spoken) {m.transcript.strip()}", ""]
    return "\n".join(out).rstrip() + "\n"


def _when(stamp: float) -> str:
    """A message's time as shown in Markdown (a stamp no calendar holds: left out)."""
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))
    except (OverflowError, OSError, ValueError):
        return "?"


def _stamp(created) -> float:
    """When an imported message was written: its own stamp if it is a real time, else now."""
    if isinstance(created, (int, float)) and not isinstance(created, bool):
        stamp = float(created)
        if math.isfinite(stamp) and 0 < stamp <= LATEST_STAMP:
            return stamp
    return time.time()


def to_json(title: str, messages: Sequence[Message]) -> dict:
    rows = []
    for m in messages:
        photos = [p for p in (_photo(s) for s in m.images) if p is not None]
        rows.append(
            {
                "role": m.role,
                "text": m.text,
                "transcript": m.transcript,
                "created": m.created if math.isfinite(m.created) else None,  # (JSON has no Infinity)
                "attachments": [
                    {"kind": "image", "media_type": kind, "data": base64.b64encode(data).decode()}
                    for kind, data in photos
                ]
                + _documents_json(m),
            }
        )
    return {"format": FORMAT, "version": VERSION, "title": title, "exported": time.time(), "messages": rows}


def _documents_json(message: Message) -> list[dict]:
    """A message's documents inside the export, with their names (clips are left out: an export
    must stay importable, under MAX_IMPORT_BYTES)."""
    out = []
    for attachment in message.attachments:
        if isinstance(attachment, DocumentAttachment):
            found = _photo(attachment.source)  # any file: its type by content, its bytes
            if found is not None:
                media_type, data = found
                name = attachment.name or Path(str(attachment.source)).name
                out.append(
                    {
                        "kind": "document",
                        "media_type": media_type,
                        "name": name,
                        "data": base64.b64encode(data).decode(),
                    }
                )
    return out


def _bad(why: str) -> InvalidParams:
    return InvalidParams(f"this is not a chat export: {why}")


def from_json(raw: bytes | str, folder: Path) -> tuple[str, list[Message]]:
    """(title, messages) from an export made by :func:`to_json`; photos are written into
    ``folder`` (the store then keeps its own copies). InvalidParams says what is wrong."""
    if len(raw) > MAX_IMPORT_BYTES:
        raise InvalidParams(f"the file is {media.TOO_LARGE}")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _bad("it is not JSON") from None
    except RecursionError:  # (json nests a Python call per level: 100,000 levels overflow)
        raise _bad("it is nested too deeply") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _bad(f'no "format": "{FORMAT}"')
    if data.get("version") != VERSION:
        raise _bad(f"version {data.get('version')!r} is not {VERSION}")
    rows = data.get("messages")
    if not isinstance(rows, list) or not rows:
        raise _bad("no messages")
    if len(rows) > MAX_MESSAGES:
        raise InvalidParams(
            f"the chat has {len(rows):,} messages, more than the {MAX_MESSAGES:,} an import may hold"
        )
    title: str = data["title"][:MAX_TITLE_CHARS] if isinstance(data.get("title"), str) else ""
    messages = []
    total = 0
    for i, row in enumerate(rows):
        if (
            not isinstance(row, dict)
            or row.get("role") not in ROLES
            or not isinstance(row.get("text", ""), str)
        ):
            raise _bad(f"message {i + 1} has no user/assistant role or text")
        transcript = row.get("transcript")
        transcript = transcript if isinstance(transcript, str) else None
        size = len(row.get("text", "")) + len(transcript or "")
        if size > MAX_MESSAGE_CHARS:
            raise InvalidParams(
                f"message {i + 1} is {size:,} characters long, more than the {MAX_MESSAGE_CHARS:,} "
                "a message may have"
            )
        total += size
        if total > MAX_CHARS:
            raise InvalidParams(f"the chat holds more than the {MAX_CHARS:,} characters an import may have")
        _check_text(row.get("text", ""), f"message {i + 1}")
        _check_text(transcript or "", f"message {i + 1}")
        stamp = _stamp(row.get("created"))
        attachments = row.get("attachments") or []
        if not isinstance(attachments, list):
            raise _bad(f"the attachments of message {i + 1} are not a list")
        photos: list[ImageAttachment | DocumentAttachment] = []
        for item in attachments:
            if (
                not isinstance(item, dict)
                or item.get("kind") not in ("image", "document")
                or not isinstance(item.get("data"), str)
            ):
                continue
            if item["kind"] == "document":
                photos.append(_document_from(item, i, Path(folder)))
                continue
            try:
                content = base64.b64decode(item["data"], validate=True)
            except (binascii.Error, ValueError):
                raise _bad(f"a photo in message {i + 1} is not base64") from None
            if media.kind_of(content) != "image" or media.content_type(content) == "application/octet-stream":
                raise InvalidParams(f"a photo in message {i + 1} is not a supported image")
            path = Path(folder) / (hashlib.sha256(content).hexdigest()[:32] + media.suffix_for(content))
            path.write_bytes(content)
            photos.append(ImageAttachment(str(path)))
        if row["role"] == "assistant":
            photos = []
        photos.sort(key=lambda a: isinstance(a, DocumentAttachment))  # photos first, as sent
        messages.append(Message(row["role"], row.get("text", ""), tuple(photos), transcript, created=stamp))
    return title, messages


def _check_text(text: str, where: str) -> None:
    """Text the history can keep and the page can show: no lone UTF-16 surrogate (JSON's
    "\\ud800" decodes to one; SQLite and every JSON encoder downstream refuse it)."""
    try:
        limits.check_unicode(text)
    except InvalidParams:
        raise InvalidParams(
            f"{where} holds an invalid character (a lone surrogate such as \\ud800)"
        ) from None


def _document_from(item: dict, i: int, folder: Path) -> DocumentAttachment:
    """A document of an export, checked by its content like a new upload (a PDF or named text)."""
    try:
        content = base64.b64decode(item["data"], validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"a document in message {i + 1} is not base64") from None
    name = item.get("name") if isinstance(item.get("name"), str) else None
    name = Path(name).name[:200] if name else None
    _check_text(name or "", f"the name of a document in message {i + 1}")
    if media.kind_of(content, name=name or "") != "document":
        raise InvalidParams(f"a document in message {i + 1} is not a PDF, text or Markdown file")
    suffix = (
        media.suffix_for(content) if media.suffix_for(content) != ".bin" else Path(name or "x.txt").suffix
    )
    path = folder / (hashlib.sha256(content).hexdigest()[:32] + suffix)
    path.write_bytes(content)
    return DocumentAttachment(str(path), name)
