"""``GET /metrics``: the engine's and the server's figures in Prometheus' text format.

Behind the same credentials as ``/v1`` (the API key as Bearer, or a page login as HTTP Basic):
a scrape config gives Prometheus one of them (``authorization`` or ``basic_auth``). The
figures are :mod:`assistant.metrics`' (replies, tokens, speech) and :mod:`web.metrics`' (HTTP
requests by route and status), on the Assistant's registry.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import route_class
from web.logins import Logins

PATH = "/metrics"


def build_router(assistant, settings, logins: Logins | None) -> APIRouter:
    router = APIRouter(route_class=route_class(settings.api_key, 0, logins))

    @router.get(PATH, include_in_schema=False)
    async def metrics():
        described = assistant.describe()
        assistant.metrics.model(described.chat_model or "", described.chat is not None)
        return Response(generate_latest(assistant.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


__all__ = ["PATH", "build_router"]
