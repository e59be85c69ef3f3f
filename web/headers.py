"""Security headers on every response, and a Content-Security-Policy the page can live with.

The policy backs up the chat view's sanitizer (:mod:`ui.render`): even if hostile markup got
through, the browser would load no remote image, audio or video (nothing leaks in a URL), post
no form anywhere but here, run no script it was not handed by this server, and the page cannot
be framed by another site. Gradio's page needs a few inline ``<script>`` blocks (its config):
each HTML response gets a fresh nonce, stamped on its own script tags, and only those run.
Inline *styles* must stay allowed (Gradio's components set them); the sanitizer removes
``style`` attributes from chat messages.
"""

from __future__ import annotations

import re
import secrets

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SCRIPT_TAG = re.compile(rb"<script(?=[\s>])", re.IGNORECASE)
_MAX_HTML_BYTES = 8 * 1024 * 1024  # larger HTML passes unstamped (and its inline scripts do not run)

# The FastAPI docs page loads Swagger UI from its CDN.
DOCS_PATH = "/v1/docs"
DOCS_CDN = "https://cdn.jsdelivr.net"


def policy(nonce: str, path: str = "/") -> str:
    extra = f" {DOCS_CDN}" if path == DOCS_PATH else ""
    directives = {
        "default-src": "'self'",
        "script-src": f"'self' 'nonce-{nonce}'{extra}",
        "style-src": f"'self' 'unsafe-inline'{extra}",
        "img-src": "'self' data: blob:" + (" https://fastapi.tiangolo.com" if extra else ""),
        "media-src": "'self' data: blob:",
        "font-src": "'self' data:",
        "connect-src": "'self'",
        "worker-src": "'self' blob:",
        "frame-src": "'self'",
        "object-src": "'none'",
        "base-uri": "'self'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


STATIC_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), geolocation=(), payment=(), usb=(), microphone=(self)",
}


def _page(path: str) -> bool:
    """Pages this server renders (Gradio's, the API docs), never a served file: only their
    script tags get the nonce."""
    return "file=" not in path and not path.startswith(("/gradio_api/file", "/file"))


class SecurityHeaders:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(18)
        path = scope.get("path", "")
        start: Message | None = None
        held: list[bytes] = []

        async def stamped(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in STATIC_HEADERS.items():
                    headers[name] = value
                headers["Content-Security-Policy"] = policy(nonce, path)
                is_html = headers.get("content-type", "").startswith("text/html")
                length = headers.get("content-length", "")
                if is_html and _page(path) and length.isdigit() and int(length) <= _MAX_HTML_BYTES:
                    start = message  # hold it: the body changes length once stamped
                    return
                await send(message)
                return
            if start is not None and message["type"] == "http.response.body":
                held.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = _SCRIPT_TAG.sub(f'<script nonce="{nonce}"'.encode(), b"".join(held))
                MutableHeaders(scope=start)["content-length"] = str(len(body))
                await send(start)
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, stamped)
