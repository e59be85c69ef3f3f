"""A cap on request bodies, enforced while they stream in.

A ``Content-Length`` over the cap is answered 413 before a byte is read; a body sent without
one (chunked) is counted as it arrives and cut off with a 413 the moment it passes the cap, so
nothing behind this middleware ever holds more than the cap in memory.

:func:`chat_body_limit` is the cap of /v1 requests, here for both that use it: this server's
middleware (:func:`web.body_limits`) and the API's own route class (``api.routes``).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assistant.settings import MB, Settings
from web.answers import refuse


def chat_body_limit(settings: Settings) -> int:
    """The largest /v1 request body: a chat with its images as base64 data URLs, or an audio file."""
    chat_body = (settings.max_images_in_context + 4) * settings.max_image_bytes * 4 // 3 + MB
    clip_or_document = max(settings.max_video_bytes, settings.max_document_bytes) * 4 // 3 + MB
    return max(chat_body, settings.max_audio_bytes + MB, clip_or_document)


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """``limit_for(path)`` gives each path's cap in bytes (None: no cap)."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int | None]):
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.limit_for(path)
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(send, path, limit)
            return
        received, over, started = 0, False, False

        async def counted() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:  # whatever the app says after its body was cut off, the answer is 413
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._refuse(send, path, limit)

    @staticmethod
    async def _refuse(send: Send, path: str, limit: int) -> None:
        message = f"the request body is larger than {limit / MB:.0f} MB"
        await refuse(send, path, 413, message, "request_too_large", {"connection": "close"})


async def read_body(receive: Receive, limit: int | None = None) -> bytes | None:
    """The whole request body (None: the client went away first). Over ``limit`` bytes:
    BodyTooLarge, before more is read."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app ``body`` (already read by a middleware) first, then
    whatever the client sends next (its disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
