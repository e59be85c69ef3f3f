"""The page's voice: replies read aloud as they stream, a speaker on every reply, dictation and a
hands-free voice mode. The browser side is ui/static/voice.js; this module is its server side.

How a reply is heard while it is written: the page's answer handler is wrapped
(:func:`speaking`); when the tab asked for replies to be read (the hidden ``#voice-state`` box:
``{"tab": KEY, "read": true, "language": …}``), each piece of text the model writes (the reply's
token events, through ``ChatSession.listener``) is fed to a
:class:`~assistant.speech.SpokenReply` (sentences cut on this thread, synthesis in the
SpokenReply's worker — never the model's thread). The tab's script fetches
``GET /voice/live?tab=KEY&after=N``, which streams that reply's speech as raw 16-bit PCM while it
is made, and plays it with Web Audio from the first sentence. Stop, a new turn or talking over
it (barge-in) ends the generation and the speech at once.

Routes (each checks who asks: the logged-in user with --auth, else the one local user; a tab's
live speech is only served to the user whose tab it is). No thread waits for a reply to start
or for its next sentence (the hub and the speech wake the event loop), and each user has only
a few of each route open at once (``STREAMS``; past it: 429 with Retry-After), so one user's
streams never delay another's requests (issue 29: 32 idle ``/voice/live`` of one user used to
hold every worker thread, and another user's ``/voice/say`` waited 28 s):

- ``GET  /voice/config``      what is loaded (voice, speech recognition), for the buttons
- ``GET  /voice/live``        the reply being written in this tab, as speech
- ``POST /voice/say``         any text (a speaker button's reply) as speech
- ``POST /voice/transcribe``  a recording (dictation, voice mode) as text, with its language
- ``GET  /voice.js``          the script

Why end of speech is found in the browser: the microphone is there, and a voice query is short,
so a 20 ms energy check with an adaptive noise floor (after the browser's echo cancellation,
noise suppression and gain control) decides "speech started / ended / someone talks over the
reply" with no round trip and no model download (vad-web would fetch an ONNX model and a WASM
runtime from a CDN, which the page's CSP forbids and an offline install lacks; streaming every
frame to the server would add a round trip per decision). The utterance is then checked on the
server by faster-whisper's own Silero VAD (``vad_filter``) before it is transcribed, so a cough
or a door that passed the energy check gives no text and no turn.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import gradio as gr
from fastapi import Request
from fastapi.responses import StreamingResponse

import web
from assistant.errors import AssistantError
from assistant.speech import MAX_SPOKEN_S, pcm16, speech_seconds
from ui.session import ChatSession, owner_of

log = logging.getLogger(__name__)

SCRIPT = Path(__file__).parent / "static" / "voice.js"
HEAD = '<script src="/voice.js" defer></script>'
TAB_KEY = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
WAIT_FOR_REPLY_S = 30.0  # /voice/live waits this long for the tab's next reply to start
MAX_SAY_CHARS = 20_000  # a cheap first bound; the work is bounded by MAX_SAY_S
MAX_SAY_S = MAX_SPOKEN_S  # speech one /voice/say may make (20,000 English characters: ~20 min)
VOICE_WAIT_S = 60.0  # a reply's first words, to choose its voice
LISTENER_TIMEOUT_S = 15.0  # a reply's speech nobody fetches is dropped after its first sentence
THREADS = 32  # transcriptions and speech estimates (a user holds at most STREAMS of them)
# Requests of each route one user may have open at once: a tab keeps one /voice/live open
# (idle or speaking), a speaker button one /voice/say.
STREAMS = {"live": 6, "say": 2, "transcribe": 2}
RETRY_AFTER_S = 2
RECHECK_S = 1.0  # an async wait looks again this often even if no wake-up came (belt and braces)


class Nudge:
    """Wakes a coroutine from any thread: ``nudge()`` (thread-safe), ``await nudge.wait(t)``."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def __call__(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._event.set)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            await self._event.wait()


# --- the speech of each tab's reply ----------------------------------------------------------


class VoiceHub:
    """The reply being read aloud in each tab, by (owner, tab key); a new one replaces (and
    silences) the one before."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._serial = 0
        self._live: dict[tuple[str, str], tuple[int, Any]] = {}
        self._waiting: dict[tuple[str, str], set[Nudge]] = {}

    def start(self, owner: str, tab: str, spoken) -> int:
        """(Any thread.) ``spoken`` is now the tab's reply; those waiting for it are woken."""
        with self._lock:
            old = self._live.get((owner, tab))
            self._serial += 1
            serial = self._serial
            self._live[(owner, tab)] = (serial, spoken)
            waiting = list(self._waiting.get((owner, tab), ()))
        if old is not None:
            old[1].cancel()
        for nudge in waiting:
            nudge()
        return serial

    def stop(self, owner: str, tab: str) -> None:
        with self._lock:
            old = self._live.pop((owner, tab), None)
        if old is not None:
            old[1].cancel()

    async def wait(self, owner: str, tab: str, after: int, timeout: float) -> tuple[int, Any] | None:
        """The tab's reply newer than serial ``after`` (waits for one to start, holding no
        thread), or None after ``timeout`` seconds."""
        key, nudge = (owner, tab), Nudge()
        with self._lock:
            self._waiting.setdefault(key, set()).add(nudge)
        try:
            with anyio.move_on_after(timeout):
                while True:
                    nudge.clear()
                    with self._lock:
                        found = self._live.get(key)
                    if found is not None and found[0] > after:
                        return found
                    await nudge.wait(RECHECK_S)
            return None
        finally:
            with self._lock:
                waiting = self._waiting.get(key, set())
                waiting.discard(nudge)
                if not waiting:
                    self._waiting.pop(key, None)

    def waiting(self) -> int:
        """How many requests wait for a reply to start (for tests and figures)."""
        with self._lock:
            return sum(len(w) for w in self._waiting.values())

    def latest(self, owner: str, tab: str) -> int:
        with self._lock:
            return (self._live.get((owner, tab)) or (0, None))[0]


class Streams:
    """How many requests of each route every user has open; one past ``limits`` is refused."""

    def __init__(self, limits: dict[str, int]) -> None:
        self.limits = limits
        self._open: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def take(self, user: str, kind: str) -> Callable[[], None]:
        """A slot of ``kind`` for ``user`` (``_Refused`` 429 if all are taken); call what this
        returns to give it back (once or more: only the first counts)."""
        key = (user, kind)
        with self._lock:
            if self._open.get(key, 0) >= self.limits[kind]:
                raise _Refused(
                    429,
                    f"you already have {self.limits[kind]} /voice/{kind} requests open: close one, "
                    f"or retry in {RETRY_AFTER_S} s",
                    {"Retry-After": str(RETRY_AFTER_S)},
                )
            self._open[key] = self._open.get(key, 0) + 1
        given_back = threading.Event()

        def give_back() -> None:
            with self._lock:
                if given_back.is_set():
                    return
                given_back.set()
                self._open[key] -= 1
                if not self._open[key]:
                    del self._open[key]

        return give_back

    def open(self, user: str, kind: str) -> int:
        with self._lock:
            return self._open.get((user, kind), 0)


class SpeechStream(StreamingResponse):
    """A reply's speech as raw 16-bit PCM, read from its SpokenReply as each sentence is made
    (no thread waits for it). Once sent, or when the listener goes away (even before the first
    byte), the speech stops and the user's slot is given back."""

    def __init__(self, spoken, serial: int | None = None):
        self.spoken = spoken
        self.give_back: Callable[[], None] = lambda: None
        super().__init__(
            _pcm(spoken),
            media_type="audio/pcm",
            headers={
                "X-Sample-Rate": str(spoken.sample_rate or 22050),
                "X-Reply-Serial": str(serial or 0),
                "Cache-Control": "no-store",
            },
        )

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.spoken.cancel()  # the end, Stop, or the page went away
            self.give_back()


async def _pcm(spoken) -> AsyncIterator[bytes]:
    nudge = Nudge()
    spoken.watch(nudge)
    try:
        while True:
            nudge.clear()
            chunks = spoken.ready()
            if chunks is None:
                return
            for chunk in chunks:
                yield pcm16(chunk.samples)
            if not chunks:
                await nudge.wait(RECHECK_S)
    finally:
        spoken.unwatch(nudge)
        spoken.cancel()


async def chosen_voice(spoken, timeout: float):
    """The voice ``spoken`` is read with, once its first words tell (None: none reads it, or
    nothing came within ``timeout``); waits without a thread."""
    nudge = Nudge()
    spoken.watch(nudge)
    try:
        with anyio.move_on_after(timeout):
            while True:
                nudge.clear()
                if spoken.decided:
                    break
                await nudge.wait(RECHECK_S)
        return spoken.chosen_voice
    finally:
        spoken.unwatch(nudge)


async def until_gone(request: Request, waiting):
    """``await waiting``, or None as soon as the client hangs up (its request slot is freed
    then, not when the wait would have ended)."""
    result = None
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            try:
                while (await request.receive())["type"] != "http.disconnect":
                    pass
            except Exception:  # a server that cannot tell: wait to the end
                return
            group.cancel_scope.cancel()

        group.start_soon(watch)
        result = await waiting
        group.cancel_scope.cancel()
    return result


def voice_state(raw: str | None) -> dict:
    """The hidden box's JSON as the tab wrote it; anything odd reads as 'do not speak'."""
    try:
        state = json.loads(raw or "{}")
    except ValueError:
        return {}
    if not isinstance(state, dict) or not TAB_KEY.match(str(state.get("tab", ""))):
        return {}
    language = state.get("language")
    return {
        "tab": state["tab"],
        "read": state.get("read") is True,
        "language": language if isinstance(language, str) and re.fullmatch(r"[a-z]{2}", language) else None,
    }


def speaking(hub: VoiceHub, assistant, handler: Callable) -> Callable:
    """``handler`` (the page's answer generator, ``(request, tab, *panel)``) taking the hidden
    voice state first, and reading the reply aloud as it streams when the tab asks for it."""

    def answer(request: gr.Request, voice: str, tab: ChatSession, *panel):
        state = voice_state(voice)
        if not state.get("read") or assistant.synthesizer is None:
            yield from handler(request, tab, *panel)
            return
        owner = owner_of(request)
        spoken = assistant.speak_stream(language=state["language"], listener_timeout_s=LISTENER_TIMEOUT_S)
        hub.start(owner, state["tab"], spoken)
        # Fed from the reply's own words as the model writes them (a Continue's only: it carries
        # on a reply already said), never from the chat as rendered.
        tab.listener = spoken.feed
        finished = False
        try:
            yield from handler(request, tab, *panel)
            finished = not tab.stopped and not tab.error
        finally:
            tab.listener = None
            if finished:
                spoken.finish()
            else:  # stopped, failed, or the tab went away
                spoken.cancel()

    return answer


def controls() -> tuple[gr.Textbox, gr.Button]:
    """The hidden box voice.js keeps its state in, and the hidden button voice mode sends with
    (the visible buttons are drawn by voice.js)."""
    state = gr.Textbox(visible="hidden", elem_id="voice-state", show_label=False, value="")
    return state, gr.Button(visible="hidden", elem_id="voice-send")


def sending(send: Callable, answer: Callable) -> Callable:
    """Voice mode's send: the page's send and answer handlers as one event. The box's Enter
    runs them as two chained events, and each event is a round trip through Gradio's queue
    (70-180 ms measured here): a spoken question should not wait for it twice."""

    def send_and_answer(request: gr.Request, voice: str, tab: ChatSession, box, *panel):
        chat, box_update = send(tab, box)
        yield chat, gr.skip(), box_update, gr.skip()
        yield from answer(request, voice, tab, *panel)

    return send_and_answer


def wire(button: gr.Button, answer: dict, send: Callable, session, box, *then: dict) -> None:
    """``button`` (voice mode's send) runs send + answer in one event, with the answer's outputs
    and limits, then each of ``then`` (``.then(**step)``: the error report, the versions...)."""
    options = {k: v for k, v in answer.items() if k not in ("fn", "inputs")}
    voice_state, _, *panel = answer["inputs"]
    event = button.click(sending(send, answer["fn"]), [voice_state, session, box, *panel], **options)
    for step in then:
        event = event.then(**step)


# --- HTTP -----------------------------------------------------------------------------------


def install(server, assistant, settings, blocks) -> None:
    """The /voice routes and /voice.js on the FastAPI ``server`` (before the page is mounted)."""
    from fastapi.responses import FileResponse, JSONResponse, Response

    hub: VoiceHub = blocks.voice_hub
    limiter = anyio.CapacityLimiter(THREADS)
    streams = Streams(STREAMS)
    server.state.voice_streams = streams
    user_of = web.user_lookup(server, settings)  # as every other route of this server asks

    def who(request: Request) -> str:
        user = user_of(request.scope)
        if user is None:
            raise _Refused(401, "log in first")
        return user

    async def run(fn, *args):
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)

    def guarded(handler, kind: str | None = None):
        """``handler`` with errors as JSON, and (``kind``) one of the user's slots held until its
        answer is sent (a speech stream: until it ends)."""

        async def route(request: Request):
            give_back = None
            try:
                if kind is not None:
                    give_back = streams.take(who(request), kind)
                response = await handler(request)
            except _Refused as exc:
                response = JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)
            except AssistantError as exc:
                retry = getattr(exc, "retry_after_s", None)  # past a user's limit
                headers = {"Retry-After": str(retry)} if retry is not None else None
                response = JSONResponse({"detail": str(exc)}, status_code=exc.http_status, headers=headers)
            except BaseException:
                if give_back is not None:
                    give_back()
                raise
            if give_back is not None:
                if isinstance(response, SpeechStream):
                    response.give_back = give_back
                else:
                    give_back()
            return response

        return route

    async def config(request: Request):
        who(request)
        synth = assistant.synthesizer
        return {
            "tts": synth is not None,
            "asr": assistant.transcriber is not None,
            "voices": [{"name": v.name, "language": v.language} for v in synth.voices] if synth else [],
        }

    async def live(request: Request):
        owner = who(request)
        tab = request.query_params.get("tab", "")
        if not TAB_KEY.match(tab):
            raise _Refused(400, "tab must be the page's own key")
        try:
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            raise _Refused(400, "after must be a whole number") from None
        found = await until_gone(request, hub.wait(owner, tab, after, WAIT_FOR_REPLY_S))
        if found is None:
            return Response(status_code=204, headers={"X-Reply-Serial": str(hub.latest(owner, tab))})
        serial, spoken = found
        return await _spoken_or_missing(request, spoken, serial)

    async def _spoken_or_missing(request: Request, spoken, serial: int):
        voice = await until_gone(request, chosen_voice(spoken, VOICE_WAIT_S))
        if voice is None:
            spoken.cancel()
            return JSONResponse(
                {
                    "missing_language": spoken.missing_language,
                    "voices": [v.language for v in spoken.synthesizer.voices],
                },
                status_code=200 if spoken.missing_language else 204,
                headers={"X-Reply-Serial": str(serial)},
            )
        return SpeechStream(spoken, serial)

    async def say(request: Request):
        who(request)
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise _Refused(415, 'send JSON: {"text": …}')
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise _Refused(400, "the body is not JSON") from None
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise _Refused(400, "text is empty")
        if len(text) > MAX_SAY_CHARS:
            raise _Refused(413, f"text is longer than {MAX_SAY_CHARS} characters")
        synth = assistant.require_voice()
        seconds = await run(speech_seconds, synth, text)
        if seconds > MAX_SAY_S:
            raise _Refused(
                413,
                f"text would be about {seconds / 60:.0f} minutes of speech; "
                f"at most {MAX_SAY_S / 60:.0f} are read at once",
            )
        language = body.get("language") if isinstance(body.get("language"), str) else None
        assistant.quotas.admit(who(request))  # a reply's own speech (/voice/live) is not counted again
        spoken = assistant.speak_stream(language=language or None)
        spoken.feed(text)
        spoken.finish()
        return await _spoken_or_missing(request, spoken, 0)

    async def transcribe(request: Request):
        who(request)
        if request.headers.get("x-voice") != "1":  # a header a cross-site form cannot send
            raise _Refused(400, "missing X-Voice header")
        data = await request.body()
        if not data:
            raise _Refused(400, "the recording is empty")
        if len(data) > settings.max_audio_bytes:
            raise _Refused(413, "the recording is too large")
        language = request.query_params.get("language") or None
        assistant.quotas.admit(who(request))
        transcript = await run(assistant.transcribe, data, language)
        return {
            "text": transcript.text,
            "language": transcript.language,
            "seconds": transcript.duration_s,
            "elapsed_s": round(transcript.elapsed_s, 4),
        }

    def script():
        return FileResponse(SCRIPT, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    server.add_api_route("/voice/config", guarded(config), methods=["GET"], include_in_schema=False)
    server.add_api_route("/voice/live", guarded(live, "live"), methods=["GET"], include_in_schema=False)
    server.add_api_route("/voice/say", guarded(say, "say"), methods=["POST"], include_in_schema=False)
    server.add_api_route(
        "/voice/transcribe", guarded(transcribe, "transcribe"), methods=["POST"], include_in_schema=False
    )
    server.add_api_route("/voice.js", script, include_in_schema=False)


class _Refused(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers
