"""Files the server hands out and takes in, around Gradio's own file routes.

- :class:`MediaGuard`: a saved chat's photos (``--data-dir``/media/<conversation>/…) are served
  only to the user who owns that conversation (404 to anyone else, as if absent), with the
  type read from the file's content, never from its name: a GIF named ``.svg`` is a GIF.
- :class:`UploadFilter`: ``/gradio_api/upload`` keeps only files named as the photos,
  recordings and chat exports (``.json``, to import) the page accepts; anything else is deleted again and answered 415. (What they
  contain is checked when they are used.) Gradio's ``delete_cache`` sweeps old uploads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assistant import media
from web.answers import send_json

FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")
UPLOAD_ROUTES = ("/gradio_api/upload", "/gradio_api/upload/")
# Names of the photos and recordings the page accepts (HEIC/AVIF pass, to be refused with a reason).
IMAGE_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".png",
    ".gif",
    ".webp",
    ".bmp",
    ".tif",
    ".tiff",
    ".heic",
    ".heif",
    ".avif",
)
AUDIO_SUFFIXES = (
    ".wav",
    ".wave",
    ".mp3",
    ".ogg",
    ".oga",
    ".opus",
    ".webm",
    ".weba",
    ".m4a",
    ".mp4",
    ".aac",
    ".flac",
)
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv")
DOCUMENT_SUFFIXES = (".pdf", ".txt", ".md", ".markdown")
IMPORT_SUFFIXES = (".json",)  # a chat export to import (checked field by field: assistant.transfer)
UPLOAD_SUFFIXES = frozenset(
    IMAGE_SUFFIXES + AUDIO_SUFFIXES + VIDEO_SUFFIXES + DOCUMENT_SUFFIXES + IMPORT_SUFFIXES
)
MAX_UPLOAD_RESPONSE = 1024 * 1024


def requested_file(path: str) -> Path | None:
    """The file a Gradio file route would serve for this URL path, resolved (None: not one)."""
    for prefix in FILE_ROUTES:
        if path.startswith(prefix):
            try:
                return Path(path[len(prefix) :]).resolve()
            except (OSError, ValueError):
                return None
    return None


class UploadOwners:
    """Who uploaded each file of the upload folder (with logins), so only they may fetch it.
    The same content uploaded twice lands at the same path: then it has several owners."""

    def __init__(self, limit: int = 100_000):
        self.limit = limit
        self._owners: dict[str, set[str]] = {}

    def add(self, path: Path, user: str) -> None:
        self._owners.setdefault(str(path), set()).add(user)
        while len(self._owners) > self.limit:
            del self._owners[next(iter(self._owners))]

    def owners(self, path: Path) -> set[str] | None:
        return self._owners.get(str(path))


class FileAccess:
    """Who may read which file: an upload only whoever uploaded it, a saved chat's photo
    (``media_dir``/<conversation>/…) only the owner of that conversation (``owner_of``, from
    the store). ``user_of(scope)`` is the logged-in user, ``default_user`` the one user of an
    app without logins."""

    def __init__(
        self,
        media_dir: Path,
        owner_of: Callable[[str], str | None],
        user_of: Callable[[Scope], str | None],
        default_user: str | None,
        uploads: UploadOwners,
    ):
        self.media_dir = Path(media_dir).resolve()
        self.owner_of, self.user_of, self.default_user = owner_of, user_of, default_user
        self.uploads = uploads

    def user(self, scope: Scope) -> str | None:
        return self.user_of(scope) or self.default_user

    def conversation_owner(self, target: Path) -> str | None:
        parts = target.relative_to(self.media_dir).parts
        return self.owner_of(parts[0]) if len(parts) > 1 and parts[0].isalnum() else None

    def may_read(self, target: Path, user: str | None) -> bool:
        """Whether ``user`` may hand ``target`` (resolved) to the page's functions: only their
        own uploads and their own chats' photos, nothing else on the server."""
        if user is None:
            return False
        uploaders = self.uploads.owners(target)
        if uploaders is not None:
            return user in uploaders
        if target.is_relative_to(self.media_dir):
            return self.conversation_owner(target) == user
        return False


class MediaGuard:
    """The file routes: someone else's upload or chat photo is answered 404, as if absent;
    other files (the page's own outputs) are left to Gradio's checks."""

    def __init__(self, app: ASGIApp, access: FileAccess):
        self.app, self.access = app, access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = requested_file(scope.get("path", "")) if scope["type"] == "http" else None
        if target is None:
            await self.app(scope, receive, send)
            return
        access = self.access
        user = access.user(scope)
        uploaders = access.uploads.owners(target)
        if uploaders is not None and user not in uploaders:
            await send_json(send, 404, {"detail": "File not found."})
            return
        if not target.is_relative_to(access.media_dir):
            await self.app(scope, receive, send)
            return
        if user is None or access.conversation_owner(target) != user:
            await send_json(send, 404, {"detail": "File not found."})
            return
        kind = media.content_type(target)

        async def typed(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 300:
                headers = MutableHeaders(scope=message)
                headers["content-type"] = kind
                headers["content-disposition"] = (
                    "inline" if kind.startswith(("image/", "audio/", "video/")) else "attachment"
                )
            await send(message)

        await self.app(scope, receive, typed)


class UploadFilter:
    """Remembers who uploaded each accepted file (``access.user``: the logged-in user, or the
    one local user of an app without logins)."""

    def __init__(self, app: ASGIApp, access: FileAccess):
        self.app, self.access = app, access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in UPLOAD_ROUTES or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []
        passed = False

        async def held(message: Message) -> None:
            nonlocal start, passed
            if passed:
                await send(message)
            elif message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if sum(map(len, chunks)) > MAX_UPLOAD_RESPONSE or start is None or start["status"] != 200:
                    passed = True  # not a list of uploaded paths: pass it on unchanged
                    if start is not None:
                        await send(start)
                    await send({**message, "body": b"".join(chunks)})

        await self.app(scope, receive, held)
        if passed or start is None:
            return
        body = b"".join(chunks)
        try:
            paths = [Path(p) for p in json.loads(body)]
        except (ValueError, TypeError):
            paths = []
        refused = [p.name for p in paths if p.suffix.lower() not in UPLOAD_SUFFIXES]
        if refused:
            for p in paths:
                p.unlink(missing_ok=True)
            detail = (
                f"{refused[0]}: only photos (JPEG, PNG, WebP, GIF, BMP, TIFF), recordings "
                "(WAV, MP3, Ogg/Opus, WebM, M4A, FLAC), videos (MP4, MOV, WebM, MKV) and documents "
                "(PDF, text, Markdown) can be uploaded"
            )
            await send_json(send, 415, {"detail": detail})
            return
        user = self.access.user(scope)
        if user is not None:
            for p in paths:
                self.access.uploads.add(p.resolve(), user)
        await send(start)
        await send({"type": "http.response.body", "body": body})
