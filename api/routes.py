"""The /v1 router: one route class for all, then each endpoint's module adds its routes.

=========================  ====================================================
``api.models``             ``GET /v1/models``, ``GET /v1/models/{id}``
``api.chat``               ``POST /v1/chat/completions`` (JSON or SSE)
``api.transcriptions``     ``POST /v1/audio/transcriptions``
``api.audio``              ``POST /v1/audio/speech``, ``GET /v1/audio/voices``
here                       ``/v1/docs``, ``/v1/openapi.json``, the JSON 404 for the rest
=========================  ====================================================

Every route is an :func:`api.auth.route_class` route: credentials, the body cap and OpenAI's
error JSON come first. Handlers return :mod:`api.responses` models without a return
annotation: FastAPI would take one for a ``response_model``, validate the answer again and
change ``/v1/openapi.json``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html

from api import audio, chat, embeddings, models, transcriptions
from api.auth import route_class
from api.errors import ApiError
from api.images import ImageFetcher
from api.streaming import Workers
from web.body import chat_body_limit
from web.logins import Logins


def image_fetcher(settings) -> ImageFetcher:
    return ImageFetcher(
        allow_remote=settings.allow_remote_images,
        max_bytes=settings.max_image_bytes,
        timeout_s=settings.remote_image_timeout_s,
        max_video_bytes=settings.max_video_bytes,
        max_document_bytes=settings.max_document_bytes,
    )


def install_docs(router: APIRouter) -> None:
    """The interactive docs and the schema, behind the same credentials as the routes."""

    @router.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request):
        return request.app.openapi()

    @router.get("/docs", include_in_schema=False)
    async def docs(request: Request):
        return get_swagger_ui_html(openapi_url="/v1/openapi.json", title="Multimodal assistant API")


def install_catch_all(router: APIRouter) -> None:
    """Last: any other /v1 path is a JSON 404 in OpenAI's shape, not FastAPI's."""

    @router.api_route(
        "/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
    )
    async def unknown_route(request: Request):
        raise ApiError(404, f"Unknown route: {request.method} {request.url.path}", code="unknown_url")


def build_router(assistant, settings, logins: Logins | None = None) -> APIRouter:
    if logins is None and settings.auth:
        logins = Logins(settings.auth)
    router = APIRouter(
        prefix="/v1", route_class=route_class(settings.api_key, chat_body_limit(settings), logins)
    )
    workers = Workers()  # one pool for the chat, transcription and speech routes
    models.install(router, assistant)
    chat.install(router, assistant, image_fetcher(settings), workers)
    transcriptions.install(router, assistant, settings, workers)
    audio.install(router, assistant, settings, workers)
    embeddings.install(router, assistant, workers)
    install_docs(router)
    install_catch_all(router)
    return router


__all__ = ["build_router"]
