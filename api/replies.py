"""One chat completion: the engine's events shaped as OpenAI's JSON or SSE chunks."""

from __future__ import annotations

import time
import uuid

from fastapi.responses import JSONResponse, StreamingResponse

from api.errors import ApiError, from_exception
from api.streaming import sse
from assistant.core import Done, Token


class Completion:
    """One chat completion: knows the id, model and timestamps every chunk repeats."""

    def __init__(self, model: str, events):
        self.model, self.events = model, events
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    @staticmethod
    def usage(done: Done) -> dict:
        s = done.stats
        return {
            "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.tokens,
            "total_tokens": s.prompt_tokens + s.tokens,
            # as OpenAI and vLLM report it: prompt tokens served from the prefix cache
            "prompt_tokens_details": {"cached_tokens": s.cached_tokens},
        }

    @staticmethod
    def finish_reason(done: Done) -> str:
        return "length" if done.stats.finish_reason == "length" else "stop"

    async def complete(self) -> JSONResponse:
        done = None
        async for event in self.events:
            if isinstance(event, Done):
                done = event
        if done is None:  # cancelled: the client left
            raise ApiError(400, "the request was cancelled", code="cancelled")
        return JSONResponse(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": None,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": done.text},
                        "logprobs": None,
                        "finish_reason": self.finish_reason(done),
                    }
                ],
                "usage": self.usage(done),
            }
        )

    def chunk(self, delta: dict, finish_reason: str | None, include_usage: bool) -> bytes:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            body["usage"] = None  # OpenAI's shape: only the last chunk carries usage
        return sse(body)

    async def streaming(self, include_usage: bool) -> StreamingResponse:
        # Wait for the first token (or the end) before answering: until then an error can
        # still be a proper HTTP error response instead of a 200 stream that fails.
        first = None
        try:
            while not isinstance(first, (Token, Done)):
                first = await anext(self.events)
        except StopAsyncIteration:
            raise ApiError(400, "the request was cancelled", code="cancelled") from None

        async def body():
            try:
                yield self.chunk({"role": "assistant", "content": ""}, None, include_usage)
                event = first
                while True:
                    if isinstance(event, Token):
                        yield self.chunk({"content": event.text}, None, include_usage)
                    elif isinstance(event, Done):
                        yield self.chunk({}, self.finish_reason(event), include_usage)
                        if include_usage:
                            yield sse(
                                {
                                    "id": self.id,
                                    "object": "chat.completion.chunk",
                                    "created": self.created,
                                    "model": self.model,
                                    "system_fingerprint": None,
                                    "choices": [],
                                    "usage": self.usage(event),
                                }
                            )
                        break
                    event = await anext(self.events)
            except StopAsyncIteration:
                pass  # cancelled
            except Exception as exc:  # after the first token: the status is sent, say it in-band
                yield sse(from_exception(exc).body())
            finally:
                await self.events.aclose()
            yield sse("[DONE]")

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
