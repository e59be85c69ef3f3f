"""``POST /v1/chat/completions``: one reply of the engine, as OpenAI's JSON or Server-Sent Events.

The route checks what the request asks (the model, ``n``, ``stream_options``), converts the
messages (:mod:`api.messages`), and calls ``assistant.reply`` once, for the caller the route
class put on ``request.state.user``; :class:`Completion` shapes the engine's events as a
``chat.completion`` or a stream of ``chat.completion.chunk`` events (:mod:`api.responses`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from api.errors import ApiError, from_exception, from_invalid_params
from api.images import ImageFetcher
from api.messages import convert
from api.models import public_name
from api.responses import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    Delta,
    FinishReason,
    PromptTokensDetails,
    Usage,
)
from api.schemas import ChatCompletionBase, ChatCompletionRequest, generation_values
from api.streaming import Workers, sse
from assistant.core import Done, Token
from assistant.errors import InvalidParams


def served_name(assistant, asked: str) -> str:
    """The chat model's public name, if ``asked`` names it (by that name or as configured)."""
    served = assistant.require_chat().info.name
    name = public_name(served)
    if asked not in (name, served):
        raise ApiError(
            404,
            f"The model '{asked}' does not exist; this server serves '{name}'",
            param="model",
            code="model_not_found",
        )
    return name


def check_options(body: ChatCompletionBase) -> None:
    if body.n not in (None, 1):
        raise ApiError(400, "n must be 1: this server returns one choice per request", param="n")
    if body.stream_options is not None and not body.stream:
        raise ApiError(400, "stream_options is only allowed when stream is true", param="stream_options")


def generation_params(assistant, body: ChatCompletionBase):
    values, fields = generation_values(body)
    try:
        return assistant.params(**values)
    except InvalidParams as exc:
        raise from_invalid_params(exc, fields) from None


def caller(request: Request, body: ChatCompletionBase) -> str:
    """Whose prefix cache the reply may use: the caller's, split further by ``cache_salt``."""
    user: str = request.state.user
    return user + (f"\0{body.cache_salt}" if body.cache_salt else "")


def install(router: APIRouter, assistant, fetcher: ImageFetcher, workers: Workers) -> None:
    """Add the route to the /v1 router (before its catch-all)."""

    @router.post("/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        name = served_name(assistant, body.model)
        check_options(body)
        history, message, system_prompt = await convert(body.messages, fetcher)
        params = generation_params(assistant, body)
        cancel = threading.Event()
        reply = assistant.reply(
            history,
            message,
            params,
            system_prompt=system_prompt,
            literal_system=True,
            cancel=cancel,
            user=caller(request, body),
        )
        completion = Completion(name, workers.iterate(reply, request, cancel))
        if body.stream:
            return await completion.streaming(bool(body.stream_options and body.stream_options.include_usage))
        return await completion.complete()


class Completion:
    """One chat completion: knows the id, model and timestamps every chunk repeats."""

    def __init__(self, model: str, events):
        self.model, self.events = model, events
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    @staticmethod
    def usage(done: Done) -> Usage:
        s = done.stats
        return Usage(
            prompt_tokens=s.prompt_tokens,
            completion_tokens=s.tokens,
            total_tokens=s.prompt_tokens + s.tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=s.cached_tokens),
        )

    @staticmethod
    def finish_reason(done: Done) -> FinishReason:
        return "length" if done.stats.finish_reason == "length" else "stop"

    async def complete(self) -> JSONResponse:
        done = None
        async for event in self.events:
            if isinstance(event, Done):
                done = event
        if done is None:  # cancelled: the client left
            raise ApiError(400, "the request was cancelled", code="cancelled")
        completion = ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[
                Choice(message=AssistantMessage(content=done.text), finish_reason=self.finish_reason(done))
            ],
            usage=self.usage(done),
        )
        return JSONResponse(completion.model_dump())

    def chunk(self, choices: list[ChunkChoice], include_usage: bool, usage: Usage | None = None) -> bytes:
        chunk = ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )
        # OpenAI's shape: usage only with include_usage, and null but in the last chunk
        return sse(chunk.model_dump(exclude=None if include_usage else {"usage"}))

    def delta(self, delta: Delta, include_usage: bool, finish_reason: FinishReason | None = None) -> bytes:
        return self.chunk([ChunkChoice(delta=delta, finish_reason=finish_reason)], include_usage)

    def text_chunks(self, include_usage: bool):
        """The chunk of each token, from the typed chunk rendered once around a placeholder:
        only the text is encoded per token (building and dumping the model each time was
        CPU taken from a server decoding on the same cores)."""
        head, tail = self.delta(Delta(content="\0"), include_usage).split(b'"\\u0000"')
        return lambda text: head + json.dumps(text, ensure_ascii=False).encode() + tail

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
            text_chunk = self.text_chunks(include_usage)
            try:
                yield self.delta(Delta(role="assistant", content=""), include_usage)
                event = first
                while True:
                    if isinstance(event, Token):
                        yield text_chunk(event.text)
                    elif isinstance(event, Done):
                        yield self.delta(Delta(), include_usage, self.finish_reason(event))
                        if include_usage:
                            yield self.chunk([], include_usage, self.usage(event))
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


__all__ = ["Completion", "install"]
