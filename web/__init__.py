"""What the one server in front of the page and the API enforces (see SECURITY.md).

    problem = exposure_problem(settings)       # refuse to serve a network without logins
    install(server, settings, store, logins)  # after gr.mount_gradio_app(server, …)

Each piece is a plain ASGI middleware with its own module: :mod:`web.headers` (CSP and other
headers), :mod:`web.body` (body caps while streaming), :mod:`web.sessions` (login rate limit,
session lifetime, logout), :mod:`web.files` (who may fetch which photo, upload types),
:mod:`web.payloads` (which files a call to the page may name), :mod:`web.origins` (no other
website may act with a user's login), :mod:`web.metrics` (requests counted for ``/metrics``),
:mod:`web.request_ids` (each request's id, in its answer and its log lines).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.types import Scope

from assistant.metrics import PREFIX
from assistant.settings import MB, Settings
from web import origins
from web.body import BodyLimit, chat_body_limit
from web.files import FileAccess, MediaGuard, UploadFilter, UploadOwners
from web.headers import SecurityHeaders
from web.logins import Logins
from web.metrics import RequestMetrics
from web.payloads import PayloadFiles
from web.request_ids import RequestIds
from web.sessions import GradioSessions, LoginGuard

PAGE_BODY_BYTES = 16 * MB  # the page's JSON calls (its files come through the upload route)
UPLOAD_FILES = 8  # files of the largest accepted size in one upload request


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or "": may well be reachable from elsewhere


def exposure_problem(settings: Settings) -> str | None:
    """Why the app must not start as configured (None: fine)."""
    if settings.auth or settings.allow_unauthenticated:
        return None
    mean_it = "or pass --allow-unauthenticated if anyone who can reach it may chat and read the history"
    if settings.share:
        return f"--share publishes the page on a public link: set --auth USER:PASSWORD (or --auth-file), {mean_it}"
    if not is_loopback(settings.host):
        return (
            f"--host {settings.host} serves the page and the API to your network without a login: "
            f"set --auth USER:PASSWORD (or --auth-file), {mean_it}"
        )
    return None


def body_limits(settings: Settings):
    api = chat_body_limit(settings)
    upload = UPLOAD_FILES * settings.max_upload_bytes + MB

    def limit_for(path: str) -> int:
        if path.startswith("/v1/"):
            return api
        if path.startswith("/gradio_api/upload"):
            return upload
        return PAGE_BODY_BYTES

    return limit_for


def find_gradio_app(server) -> Any:
    from gradio.routes import App

    for route in server.routes:
        if isinstance(getattr(route, "app", None), App):
            return route.app
    return None


def page_sessions(server, settings: Settings) -> GradioSessions:
    """The page's logins as Gradio keeps them, for the Gradio app mounted on ``server``
    (found at the first request: it is mounted after the routes that ask)."""
    found: list[Any] = []

    def gradio_app() -> Any:
        if not found:
            found.append(find_gradio_app(server))
        return found[0]

    return GradioSessions(gradio_app, settings.session_hours * 3600)


def user_lookup(server, settings: Settings) -> Callable[[Scope], str | None]:
    """scope -> who asks: the logged-in user with --auth (None: not logged in), else the one
    local user. For routes of this server outside the page and /v1 (the voice routes)."""
    from assistant.store import LOCAL_OWNER

    if not settings.auth:
        return lambda scope: LOCAL_OWNER
    return page_sessions(server, settings).user


def install(
    server, settings: Settings, store, logins: Logins, registry: CollectorRegistry | None = None
) -> None:
    """Add the middlewares to the FastAPI ``server`` on which the Gradio page is mounted;
    with a Prometheus ``registry``, every request is counted in it (:mod:`web.metrics`)."""
    from assistant.store import LOCAL_OWNER

    sessions = page_sessions(server, settings)
    access = FileAccess(
        media_dir=Path(store.media_dir),
        owner_of=store.owner_of,
        user_of=sessions.user if logins else (lambda scope: None),
        default_user=None if logins else LOCAL_OWNER,
        uploads=UploadOwners(),
    )
    # Innermost first: each add_middleware wraps everything added before it.
    server.add_middleware(MediaGuard, access=access)
    server.add_middleware(PayloadFiles, access=access)
    server.add_middleware(UploadFilter, access=access)
    if logins:
        server.add_middleware(LoginGuard, logins=logins, sessions=sessions)
    server.add_middleware(BodyLimit, limit_for=body_limits(settings))
    origins.install(server, settings.allowed_origins, settings.host, bool(logins))
    server.add_middleware(SecurityHeaders)
    if registry is not None:  # the others' refusals count too
        server.add_middleware(RequestMetrics, registry=registry, prefix=PREFIX)
    server.add_middleware(RequestIds)  # outermost: every log line of a request names it


__all__ = ["exposure_problem", "install", "is_loopback", "user_lookup"]
