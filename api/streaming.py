"""Run the engine's blocking ``reply`` generator from async code, and format SSE.

Each ``next()`` runs in a worker thread from the API's own pool, so the event loop (and the
Gradio page on it) never waits on a generation, and requests queued behind the model cannot
use up the default thread pool the page relies on. A watcher sets the cancel event as soon as
the client goes away; ``finally`` closes the generator, which frees the model's turn.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator

import anyio
from starlette.requests import Request

from assistant.core import Event, Reply

API_THREADS = 64
_END = object()


class Workers:
    def __init__(self, threads: int = API_THREADS):
        self.limiter = anyio.CapacityLimiter(threads)

    async def run(self, fn, *args):
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    async def iterate(self, events: Reply, request: Request, cancel: threading.Event) -> AsyncIterator[Event]:
        watcher = asyncio.ensure_future(_watch_disconnect(request, cancel))
        try:
            while True:
                event = await self.run(next, events, _END)
                if event is _END:
                    return
                yield event
        finally:
            cancel.set()
            watcher.cancel()
            with anyio.CancelScope(shield=True):  # runs even when the client went away
                await self.run(events.close)


async def _watch_disconnect(request: Request, cancel: threading.Event) -> None:
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    except Exception:  # a server that cannot tell us: generation simply runs to the end
        return
    cancel.set()


def sse(payload: dict | str) -> bytes:
    data = (
        payload
        if isinstance(payload, str)
        else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    )
    return f"data: {data}\n\n".encode()
