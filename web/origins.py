"""Which other web pages may talk to this server with a user's login: none, unless listed.

A browser attaches the user's session cookie (or the Basic login it remembers) to requests that
another site's page makes, and then lets that page read the answer only if the answer names its
origin in ``Access-Control-Allow-Origin``. Gradio's own CORS middleware names any origin when
the server is reached under a name other than localhost (behind a proxy, on a LAN), with
credentials allowed: another site could then read a user's chats. Here:

- Starlette's ``CORSMiddleware`` answers for the listed origins only (``--allowed-origins``;
  none by default). Its presence makes Gradio's own one stand down.
- :class:`OriginCheck` refuses, with 403, any request that can change something (every method
  but GET, HEAD and OPTIONS) coming from a page of another origin — a form post or a ``fetch``
  that the browser sends without asking first — and strips any ``Access-Control-Allow-*``
  header an inner route sets for an origin that is not allowed.

Same origin means the ``Origin`` header names the host the request was sent to (``Host``, or
``X-Forwarded-Host`` behind a reverse proxy, which a page cannot set on a cross-site request),
or the browser says so itself (``Sec-Fetch-Site: same-origin``: behind a proxy that rewrites
``Host`` to its upstream's address and says nothing of the original).

- :class:`HostCheck`, for an app without logins: a site whose name is made to resolve to this
  machine (DNS rebinding) is "same origin" with itself, and would need no login to read the
  chats. Such an app answers only to IP addresses, ``localhost``, its ``--host`` and the hosts
  of ``--allowed-origins``; a request for any other name gets 403 saying so.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.answers import refuse

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _host_port(netloc: str) -> tuple[str, int | None]:
    try:
        parts = urlsplit(f"//{netloc.strip()}")
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return "", None


def same_origin(origin: str, headers: Headers) -> bool:
    """Whether ``origin`` (as sent in ``Origin``) is the host this request was sent to."""
    try:
        parts = urlsplit(origin.strip())
        origin_host, origin_port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        return False
    if parts.scheme not in _DEFAULT_PORTS or not origin_host:
        return False  # "null" (a sandboxed frame, a file), or not a web origin at all
    origin_port = origin_port or _DEFAULT_PORTS[parts.scheme]
    for header in ("x-forwarded-host", "host"):
        value = headers.get(header)
        if not value:
            continue
        host, port = _host_port(value.split(",")[0])
        # Without a port the request came to the scheme's default one, as seen by whoever
        # terminated it (a TLS proxy may forward https:443 to our http): compare names only.
        if host and host == origin_host and (port is None or port == origin_port):
            return True
    return False


class OriginCheck:
    """``allowed``: origins (``https://host[:port]``, lower case) trusted like this server's own."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str] = ()):
        self.app, self.allowed = app, frozenset(allowed)

    def trusted(self, origin: str, headers: Headers) -> bool:
        return origin.rstrip("/").lower() in self.allowed or same_origin(origin, headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        cross_site = headers.get("sec-fetch-site") == "cross-site"
        if origin is None and not cross_site:
            await self.app(scope, receive, send)  # not sent by another site's page
            return
        # The browser's own word that the page is this site's (a proxy may have rewritten Host
        # without saying so in X-Forwarded-Host, as nginx does by default); no page can forge it.
        same_site_page = headers.get("sec-fetch-site") == "same-origin"
        if same_site_page or (origin is not None and self.trusted(origin, headers)):
            await self.app(scope, receive, send)
            return
        if scope.get("method", "GET") not in SAFE_METHODS:
            await refuse(send, scope.get("path", ""), 403, CROSS_SITE, "cross_origin")
            return

        async def no_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for name in [k for k in out if k.startswith("access-control-allow-")]:
                    del out[name]
            await send(message)

        await self.app(scope, receive, no_cors)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


class HostCheck:
    """``names``: host names (lower case) this app may be reached under, besides IP addresses
    and ``localhost``."""

    def __init__(self, app: ASGIApp, names: Iterable[str] = ()):
        self.app, self.names = app, frozenset({"localhost", *names})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host, _ = _host_port(Headers(scope=scope).get("host", ""))
        if not host or _is_address(host) or host in self.names or host.endswith(".localhost"):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await refuse(
            send,
            scope.get("path", ""),
            403,
            f"this app has no logins, so it answers only to its own address, not to {host!r} "
            f"(another website could reach it under such a name): open it by IP address or "
            f"localhost, or start it with --allowed-origins https://{host}",
            "unknown_host",
        )


CROSS_SITE = "requests from other websites are refused: open this app's own page (or list the site with --allowed-origins)"


def install(server, allowed: Iterable[str], host: str, logins: bool) -> None:
    """The middlewares on the FastAPI ``server``; call it last, so they run first. ``host``:
    the address the app binds; ``logins``: whether it has any."""
    allowed = tuple(allowed)
    server.add_middleware(
        CORSMiddleware,
        allow_origins=list(allowed),
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Sample-Rate", "X-Reply-Serial", "Retry-After"],
    )
    server.add_middleware(OriginCheck, allowed=allowed)
    if not logins:
        names = {_host_port(urlsplit(o).netloc)[0] for o in allowed} | {host.strip().lower()}
        server.add_middleware(HostCheck, names=names)
