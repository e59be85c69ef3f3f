"""Files named in calls to the page's functions: only the caller's own uploads and chat photos.

A call (``/gradio_api/queue/join``, ``/gradio_api/run/…``, ``/call/…``, the hidden ``/chat``
endpoint…) carries each attached file as a ``FileData`` object whose ``path`` the client
writes. Gradio copies that file into its cache before any handler runs, and serves the copy
back; mounted with ``gr.mount_gradio_app`` it checks no path at all (its check waits for
``Blocks.launch``, which this app never calls). So every JSON body posted to Gradio's API is
read here first: any object with a ``path`` must name a file this user uploaded, or a photo of
one of this user's chats (:class:`web.files.FileAccess`); otherwise the call is answered 403
before Gradio sees it. Bodies are already capped by :mod:`web.body`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from web.answers import send_json
from web.body import read_body, replaying
from web.files import FileAccess

API_PREFIX = "/gradio_api/"
# Routes that take files as multipart uploads, checked by web.files.UploadFilter instead.
NOT_CALLS = ("/gradio_api/upload", "/gradio_api/process_recording")
MAX_DEPTH = 64  # a page call nests a few levels; deeper is not a call of this app's page


class NotACall(Exception):
    pass


def named_paths(value: Any, depth: int = 0) -> Iterator[str]:
    """Every ``path`` of an object in a decoded JSON body (Gradio's FileData and its older
    spelling without ``meta``); a ``path`` that is not a string is yielded as its text."""
    if depth > MAX_DEPTH:
        raise NotACall("the request nests too deep")
    if isinstance(value, dict):
        if "path" in value and value["path"] is not None:
            yield str(value["path"])
        for item in value.values():
            yield from named_paths(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from named_paths(item, depth + 1)


def _resolved(path: str) -> Path | None:
    if "\0" in path or "://" in path:
        return None
    try:
        return Path(path).resolve()
    except (OSError, ValueError, RuntimeError):
        return None


class PayloadFiles:
    def __init__(self, app: ASGIApp, access: FileAccess):
        self.app, self.access = app, access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if scope.get("method") != "POST" or not path.startswith(API_PREFIX) or path.rstrip("/") in NOT_CALLS:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)  # (capped by web.body.BodyLimit, outside)
        if body is None:
            return
        refusal = self.refusal(scope, body)
        if refusal is not None:
            await send_json(send, 403, {"detail": refusal})
            return
        await self.app(scope, replaying(body, receive), send)

    def refusal(self, scope: Scope, body: bytes) -> str | None:
        """Why this call may not go on (None: it may)."""
        try:
            decoded = json.loads(body) if body.strip() else None
        except RecursionError:
            return "the request nests too deep"
        except ValueError:
            return None  # not JSON: Gradio refuses it on its own, and reads no file from it
        user = self.access.user(scope)
        try:
            for named in named_paths(decoded):
                target = _resolved(named)
                if target is None or not self.access.may_read(target, user):
                    name = Path(named).name[:80] if "\0" not in named else "a file"
                    return f"{name}: only files you attached in this page can be sent; attach it again"
        except NotACall as exc:
            return str(exc)
        return None
