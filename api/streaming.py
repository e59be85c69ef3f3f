"""Run the engine's blocking ``reply`` generator from async code, and format SSE.

A reply's generator runs in one worker thread from the API's own pool, so the event loop (and
the Gradio page on it) never waits on a generation, and requests queued behind the model cannot
use up the default thread pool the page relies on. The thread hands each event to the loop as
it comes (one wake-up a token, not a round trip to a pool thread per ``next()``: in front of
llama-server on 2 cores, that CPU was taken from the server's own decode). A watcher sets the
cancel event as soon as the client goes away; the thread then closes the generator, which frees
the model's turn.
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
        loop = asyncio.get_running_loop()
        arrived: asyncio.Queue = asyncio.Queue()

        def pump() -> None:
            # Iterates and closes the generator on this one thread (a generator cannot be
            # closed from another thread while it runs).
            try:
                for event in events:  # a cancelled reply ends by itself, with its Done
                    loop.call_soon_threadsafe(arrived.put_nowait, event)
            except BaseException as exc:  # handed to the reader, raised there
                loop.call_soon_threadsafe(arrived.put_nowait, _Failed(exc))
            finally:
                events.close()
                loop.call_soon_threadsafe(arrived.put_nowait, _END)

        watcher = asyncio.ensure_future(_watch_disconnect(request, cancel))
        pumping = asyncio.ensure_future(self.run(pump))
        try:
            while (event := await arrived.get()) is not _END:
                if isinstance(event, _Failed):
                    raise event.error
                yield event
        finally:
            cancel.set()
            watcher.cancel()
            with anyio.CancelScope(shield=True):  # runs even when the client went away
                await pumping


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


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
