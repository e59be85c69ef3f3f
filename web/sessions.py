"""The page's logins, around Gradio's own: wrong passwords rate-limited, sessions that expire,
a logout that sends the browser back to this server only.

Gradio checks the password and keeps each login as a random token (cookie) in memory. This
middleware adds what it lacks:

- ``POST /login`` is refused with 429 while the client has too many recent failures for that
  user name (:class:`web.logins.Logins`); every answer Gradio gives is counted. The form is
  parsed as Gradio parses it, and one with a field twice is refused (the limiter would count
  one name while Gradio checks another).
- The session cookies are ``SameSite=Lax``: another site's page cannot send them.
- A session lasts ``session_s`` from its login: its cookies carry that ``Max-Age``, and a token
  older than that is dropped from Gradio's table on its next use, so the user logs in again.
  Logging out, or restarting the server, ends every session at once.
- ``/logout`` redirects to this app's own root path, never to a host named in the request's
  ``X-Forwarded-Host``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.answers import send_json
from web.body import BodyTooLarge, read_body, replaying
from web.logins import Logins, TooManyAttempts

MAX_LOGIN_BODY = 64 * 1024
# Gradio sets one of its two session cookies SameSite=None: other sites' pages would send it.
_SAME_SITE = re.compile(r";\s*samesite=[^;]*", re.IGNORECASE)
TOKEN_COOKIE = "access-token"


def _cookies(scope: Scope) -> dict[str, str]:
    raw = b"; ".join(v for k, v in scope.get("headers") or [] if k == b"cookie").decode("latin-1")
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


class GradioSessions:
    """Looks into the Gradio app mounted on this server (``gradio_app()``, found lazily)."""

    def __init__(
        self, gradio_app: Callable[[], Any], session_s: float, clock: Callable[[], float] = time.time
    ):
        self._gradio_app, self.session_s, self.clock = gradio_app, session_s, clock
        self.started: dict[str, float] = {}  # token -> when its login happened

    @property
    def app(self) -> Any:
        return self._gradio_app()

    def tokens(self, scope: Scope) -> list[str]:
        app = self.app
        if app is None:
            return []
        names = (f"{TOKEN_COOKIE}-{app.cookie_id}", f"{TOKEN_COOKIE}-unsecure-{app.cookie_id}")
        cookies = _cookies(scope)
        return [cookies[n] for n in names if n in cookies]

    def user(self, scope: Scope) -> str | None:
        """The logged-in user of a request (None: not logged in, or the app has no logins)."""
        app = self.app
        for token in self.tokens(scope):
            self.expire_if_old(token)
            user = app.tokens.get(token) if app is not None else None
            if user is not None:
                return user
        return None

    def started_now(self, token: str) -> None:
        now = self.clock()
        self.started[token] = now
        for old, at in list(self.started.items()):  # forget the expired ones as we go
            if now - at > self.session_s:
                self._end(old)

    def expire_if_old(self, token: str) -> None:
        app = self.app
        if app is None or token not in app.tokens:
            self.started.pop(token, None)
            return
        started = self.started.setdefault(token, self.clock())
        if self.clock() - started > self.session_s:
            self._end(token)

    def _end(self, token: str) -> None:
        self.started.pop(token, None)
        app = self.app
        if app is not None:
            app.tokens.pop(token, None)


class LoginGuard:
    def __init__(self, app: ASGIApp, logins: Logins, sessions: GradioSessions):
        self.app, self.logins, self.sessions = app, logins, sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for token in self.sessions.tokens(scope):
            self.sessions.expire_if_old(token)
        path = scope.get("path", "")
        if path in ("/login", "/login/") and scope.get("method") == "POST":
            await self._login(scope, receive, send)
        elif path in ("/logout", "/logout/"):
            await self.app(scope, receive, self._local_redirect(scope, send))
        else:
            await self.app(scope, receive, send)

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await read_body(receive, MAX_LOGIN_BODY)
        except BodyTooLarge:
            await send_json(send, 413, {"detail": "the login form is too large"})
            return
        if body is None:
            return
        fields = await _form_fields(scope, body)
        if fields is None:
            await send_json(
                send, 400, {"detail": "send the login as a form with one username and one password"}
            )
            return
        repeated = sorted({name for name, _ in fields if sum(1 for n, _ in fields if n == name) > 1})
        if repeated:  # the limiter and Gradio must read the same name
            await send_json(send, 400, {"detail": f"the login form has {repeated[0]!r} more than once"})
            return
        user = str(dict(fields).get("username", "")).strip()  # as Gradio reads it
        client = (scope.get("client") or ("?", 0))[0]
        wait = self.logins.retry_after(client, user)
        if wait > 0:
            error = TooManyAttempts(wait)
            await send_json(send, 429, {"detail": str(error)}, {"retry-after": str(error.retry_after_s)})
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 200:
                    self.logins.succeeded(client, user)
                    self._limit_cookies(message)
                elif 400 <= status < 500:
                    self.logins.failed(client, user)
            await send(message)

        await self.app(scope, replaying(body, receive), watch)

    def _limit_cookies(self, start: Message) -> None:
        """The session cookies live no longer than the session; remember when it began."""
        headers = MutableHeaders(scope=start)
        cookies = headers.getlist("set-cookie")
        if not cookies:
            return
        del headers["set-cookie"]
        for cookie in cookies:
            name, _, rest = cookie.partition("=")
            if name.startswith(TOKEN_COOKIE):
                self.sessions.started_now(rest.split(";", 1)[0])
                cookie = (
                    _SAME_SITE.sub("", cookie) + f"; SameSite=Lax; Max-Age={int(self.sessions.session_s)}"
                )
            headers.append("set-cookie", cookie)

    def _local_redirect(self, scope: Scope, send: Send) -> Send:
        home = (scope.get("root_path") or "").rstrip("/") + "/"

        async def rewritten(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "location" in headers:
                    headers["location"] = home
            await send(message)

        return rewritten


async def _form_fields(scope: Scope, body: bytes) -> list[tuple[str, str]] | None:
    """The login form's fields in order, parsed as Gradio parses them (URL-encoded or
    multipart, as the page's own login sends it); None if it is not a form."""
    sent = False

    async def once() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    kind = Headers(scope=scope).get("content-type", "")
    if not kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        return None
    try:
        async with Request(scope, once).form(max_files=0, max_fields=16) as form:
            return [(name, value if isinstance(value, str) else "") for name, value in form.multi_items()]
    except Exception:  # a damaged form (Starlette's parsers raise their own kinds)
        return None
