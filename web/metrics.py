"""Counts every HTTP request by route, method and status, and times it, for ``/metrics``.

Routes are named from a fixed list (and a few families: the page's Gradio calls, the voice
routes, other /v1 paths), never from the raw path: a path is what a client chose, and one
label value per path would let anyone grow the metrics without bound.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

NAMED = (
    "/v1/chat/completions",
    "/v1/audio/transcriptions",
    "/v1/audio/speech",
    "/v1/models",
    "/v1/embeddings",
    "/metrics",
    "/gradio_api/queue/join",
    "/gradio_api/queue/data",
    "/gradio_api/upload",
    "/voice/live",
    "/voice/say",
    "/voice/transcribe",
    "/voice/config",
    "/login",
    "/logout",
    "/",
)
FAMILIES = (
    ("/v1/", "/v1/other"),
    ("/gradio_api/file", "/gradio_api/file"),
    ("/gradio_api/", "/gradio_api/other"),
)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def route_of(path: str) -> str:
    if path in NAMED:
        return path
    return next((name for prefix, name in FAMILIES if path.startswith(prefix)), "other")


class RequestMetrics:
    """ASGI middleware; the outermost, so every answer counts (refusals of the others too)."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry, prefix: str):
        self.app = app
        labels = ["route", "method", "status"]
        self.requests = Counter(f"{prefix}http_requests", "HTTP requests answered, by route, method and status.", labels, registry=registry)  # fmt: skip
        self.duration = Histogram(f"{prefix}http_request_duration_seconds", "Time from a request to the end of its answer.", ["route"], buckets=BUCKETS, registry=registry)  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            route = route_of(scope.get("path", ""))
            self.requests.labels(route, scope.get("method", "GET"), str(status[0])).inc()
            self.duration.labels(route).observe(time.perf_counter() - started)
