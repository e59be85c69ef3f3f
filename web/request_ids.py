"""Gives every HTTP request its id (:mod:`assistant.request_ids`) and sends it back.

The caller's ``X-Request-Id`` is kept when it is a short token (a proxy in front may have set
it), else a new one is made; either way the answer carries it in ``X-Request-Id``, and every
log line written while the request is served names it.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assistant import request_ids


class RequestIds:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_ids.sane(Headers(scope=scope).get(request_ids.HEADER)) or request_ids.new()
        request_ids.use(rid)

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[request_ids.HEADER] = rid
            await send(message)

        await self.app(scope, receive, stamped)
