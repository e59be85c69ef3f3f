"""OpenAI-compatible HTTP API (``/v1``), served beside the web page on one FastAPI app.

    install_api(server, assistant, settings)

adds ``GET /v1/models``, ``POST /v1/chat/completions`` (JSON or Server-Sent Events) and
``POST /v1/audio/transcriptions``, guarded by ``settings.api_key`` when set.
"""

from __future__ import annotations

from fastapi import FastAPI

from api.routes import build_router


def install_api(app: FastAPI, assistant, settings) -> None:
    app.include_router(build_router(assistant, settings))


__all__ = ["install_api"]
