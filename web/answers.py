"""How a middleware answers by itself, before any route: JSON, in OpenAI's error shape under
``/v1/`` (what API clients parse) and as ``{"detail": …}`` elsewhere (as FastAPI and Gradio do)."""

from __future__ import annotations

import json

from starlette.types import Send


def error_body(path: str, message: str, code: str) -> dict:
    if path.startswith("/v1/"):
        return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return {"detail": message}


async def send_json(send: Send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


async def refuse(
    send: Send, path: str, status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> None:
    """An error answered by a middleware, shaped for the route that was asked."""
    await send_json(send, status, error_body(path, message, code), headers)
