"""OpenAI-compatible HTTP API (``/v1``), served beside the web page on one FastAPI app.

    install_api(server, assistant, settings)

adds ``GET /v1/models``, ``POST /v1/chat/completions`` (JSON or Server-Sent Events),
``POST /v1/audio/transcriptions``, ``POST /v1/audio/speech`` (and the docs at ``/v1/docs``),
and ``GET /metrics`` (Prometheus),
guarded by ``settings.api_key`` and the page's logins (``settings.auth``, as HTTP Basic) when
set. One module per endpoint (:mod:`api.routes` lists them); response bodies are the typed
models of :mod:`api.responses`, request bodies those of :mod:`api.schemas`.
"""

from __future__ import annotations

from fastapi import FastAPI

from api import metrics
from api.routes import build_router
from web.logins import Logins


def install_api(app: FastAPI, assistant, settings, logins=None) -> None:
    """``logins``: the page's users (a :class:`web.logins.Logins`), also accepted as HTTP Basic;
    by default made from ``settings.auth``."""
    if logins is None and settings.auth:
        logins = Logins(settings.auth)
    app.include_router(build_router(assistant, settings, logins))
    app.include_router(metrics.build_router(assistant, settings, logins))


__all__ = ["install_api"]
