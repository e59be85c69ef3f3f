"""Issue 29, one test per hole (each fails on the code before its fix).

H6: one user's idle ``GET /voice/live`` streams held every worker thread of the voice routes,
so another user's ``POST /voice/say`` waited 28 s. Against a real ``app.py`` (tiny random model,
the embedded voice, two logins): bob's streams past his limit get 429 at once, the ones he may
keep hold no thread, alice is answered as if bob were not there, and a stream bob hangs up on
gives its slot back at once.

Speech work: 4,096 Arabic characters were 40 minutes of audio (the English voice spells each
letter), 153 s of CPU and +1.6 GB never returned; a NUL gave a 200 and a traceback. Now the
input is checked and its audio estimated before the 200, one ONNX run is bounded and gives its
memory back, and text the page reads aloud cannot break the voice.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.audio import MAX_SPEECH_S
from assistant.core import Assistant
from assistant.settings import Settings
from assistant.speech import LONG_SPEECH_S, PiperSynthesizer, SpokenReply
from tests.fakes import FakeChatModel
from tests.server import start_app, tiny_model
from tests.test_audio_api import make_app
from ui.voice import MAX_SAY_S, STREAMS

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test"
USERS = (("alice", "a"), ("bob", "b"))
# 4,096 characters of Arabic prose: the English voice reads each letter's name (~40 min of audio)
ARABIC = ("مرحبا بكم في هذا العالم الجميل، نحن نتحدث عن الطقس اليوم. " * 80)[:4096]
ENGLISH = (
    "The weather will be sunny tomorrow, with a light breeze from the west. "
    "Take a hat if you go outside. Paris is the capital of France. "
    "It is famous for the Eiffel Tower and its museums. "
)


# --------------------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    auth = [a for user, password in USERS for a in ("--auth", f"{user}:{password}")]
    data = tmp_path_factory.mktemp("voice-data")
    running = start_app(["--model", str(tiny_model()), "--data-dir", str(data), *auth])
    yield running
    running.stop()


def logged_in(app, user: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=app.url, timeout=15)
    client.post("/login", data={"username": user, "password": password}).raise_for_status()
    return client


class Raw:
    """One HTTP request on its own socket, its answer read only when asked: many can be open
    at once with no thread each, and hanging up is closing the socket."""

    def __init__(self, app, cookies: httpx.Cookies, method: str, path: str, body: dict | None = None):
        self.sock = socket.create_connection(("127.0.0.1", app.port), timeout=10)
        cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
        data = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\nConnection: close\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + data)
        self.received = b""

    def status(self, wait: float) -> int | None:
        """The answer's status, or None if none came within ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while b"\r\n\r\n" not in self.received:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not data:
                raise ConnectionError(f"closed without an answer: {self.received!r}")
            self.received += data
        return int(self.received.split(b" ", 2)[1])

    def headers(self) -> dict[str, str]:
        lines = self.received.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
        return {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}

    def body(self) -> bytes:
        self.sock.settimeout(10)
        while chunk := self.sock.recv(65536):
            self.received += chunk
        return self.received.split(b"\r\n\r\n", 1)[1]

    def close(self) -> None:
        self.sock.close()


def live(app, cookies, tab: str) -> Raw:
    return Raw(app, cookies, "GET", f"/voice/live?tab={tab}&after=0")


def answered(requests: list[Raw], count: int, within: float) -> tuple[list[Raw], list[Raw]]:
    """(those answered, those still waiting) once ``count`` have been answered (or time is up)."""
    deadline = time.monotonic() + within
    done: list[Raw] = []
    waiting = list(requests)
    while len(done) < count and time.monotonic() < deadline:
        for r in list(waiting):
            if r.status(0.05) is not None:
                done.append(r)
                waiting.remove(r)
    return done, waiting


def test_one_users_idle_streams_never_delay_anothers_requests(app):
    alice, bob = logged_in(app, *USERS[0]), logged_in(app, *USERS[1])
    assert alice.post("/voice/say", json={"text": "Hello."}).status_code == 200  # the voice warm
    limit = STREAMS["live"]
    streams = [live(app, bob.cookies, f"bob-tab-{i:04d}") for i in range(40)]  # the old pool: 32
    try:
        refused, held = answered(streams, 40 - limit, within=5)  # (the old code answered none)
        started = time.perf_counter()
        try:
            said = alice.post("/voice/say", json={"text": "Hello there. How are you today?"})
        except httpx.TimeoutException:
            pytest.fail("alice's /voice/say waited over 15 s behind bob's streams (the old code: ~28 s)")
        took = time.perf_counter() - started
        assert said.status_code == 200 and len(said.content) > 20_000  # ~1.5 s of speech
        assert took < 5.0, f"alice waited {took:.1f} s behind bob's streams (the old code: ~28 s)"
        assert alice.get("/voice/config").status_code == 200

        if len(refused) < 40 - limit:  # a slow machine: give the rest a little longer
            more, held = answered(held, 40 - limit - len(refused), within=10)
            refused += more
        assert [r.status(0) for r in refused] == [429] * (40 - limit)  # at once, not after 30 s
        assert len(held) == limit  # the ones bob may keep open still wait for a reply
        answer = refused[0]
        assert answer.headers()["retry-after"] == "2"
        assert answer.headers()["content-type"] == "application/json"
        assert "/voice/live" in json.loads(answer.body())["detail"]
        hers = live(app, alice.cookies, "alice-tab-0001")  # her own slots: not refused
        assert hers.status(1.0) is None
        hers.close()

        for r in held:  # bob's tabs go away: their slots come back at once
            r.close()
        deadline, again = time.monotonic() + 10, None
        while time.monotonic() < deadline:
            again = live(app, bob.cookies, "bob-tab-again")
            if again.status(0.3) is None:
                break
            again.close()
            again = None
        assert again is not None, "bob's closed streams still count against him"
        again.close()
    finally:
        for r in streams:
            r.close()
        alice.close()
        bob.close()


def test_speech_streams_past_a_users_limit_are_refused(app):
    alice, bob = logged_in(app, *USERS[0]), logged_in(app, *USERS[1])
    text = {"text": ENGLISH * 8}  # ~3 minutes of speech: the stream is open for a while
    says = [Raw(app, bob.cookies, "POST", "/voice/say", text) for _ in range(STREAMS["say"] + 2)]
    try:
        statuses = sorted(r.status(10) or 0 for r in says)
        assert statuses == [200] * STREAMS["say"] + [429] * 2
        theirs = alice.post("/voice/say", json={"text": "Mine is answered."})
        assert theirs.status_code == 200 and theirs.content
    finally:
        for r in says:
            r.close()
        alice.close()
        bob.close()


# --------------------------------------------------------------------------- speech in process


@pytest.fixture(scope="module")
def voice():
    return PiperSynthesizer()


@pytest.fixture(scope="module")
def api(voice):
    return TestClient(make_app(voice), headers={"Authorization": f"Bearer {KEY}"})


def speech(api, text: str, **body):
    return api.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": text, **body})


@pytest.mark.parametrize("control", ["\x00", "\x1b", "\x7f", "\x85"])
def test_a_control_character_in_speech_input_is_a_400_naming_input(api, control):
    response = speech(api, f"Hello{control} world.", response_format="pcm")
    assert response.status_code == 400, response.content[:200]
    error = response.json()["error"]
    assert error["param"] == "input" and error["type"] == "invalid_request_error"
    assert f"U+{ord(control):04X}" in error["message"] and "position 5" in error["message"]


def test_speech_input_that_would_run_for_many_minutes_is_refused_before_the_200(api):
    started = time.perf_counter()
    response = speech(api, ARABIC, response_format="wav")
    took = time.perf_counter() - started
    assert response.status_code == 400, f"{response.status_code} after {took:.0f} s"
    error = response.json()["error"]
    assert error["param"] == "input" and error["code"] == "speech_too_long"
    assert "minutes of speech" in error["message"]
    assert took < 10.0  # the estimate is phonemes only (the old code: 153 s, 115 MB of WAV)


def test_what_openai_allows_in_english_is_within_the_bound(voice):
    english = (ENGLISH * 20)[:4096]
    assert voice.seconds_of(english) < MAX_SPEECH_S  # ~4 minutes
    assert voice.seconds_of(english, speed=0.5) < MAX_SPEECH_S
    assert voice.seconds_of(ARABIC) > MAX_SPEECH_S * 3


@pytest.mark.parametrize("text", [ENGLISH, "مرحبا بكم في هذا العالم الجميل، نحن نتحدث عن الطقس اليوم."])
def test_the_estimate_errs_long_but_not_by_much(voice, text):
    made = sum(chunk.seconds for chunk in voice.speak(text))
    estimate = voice.seconds_of(text)
    assert made <= estimate <= made * 1.4, (made, estimate)


_MEMORY = r"""
import json
from pathlib import Path
from assistant.speech import PiperSynthesizer, give_back_memory

def status(name):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(name + ":"))
    return int(line.split()[1]) / 1024

def rss():
    return status("VmRSS")

voice = PiperSynthesizer(threads=1)
info = voice.voices[0]
voice.speak_piece("Hello there, this is a test of the voice.", info)
before = rss()
Path("/proc/self/clear_refs").write_text("5")  # the peak from here on: the long sentence's alone
# one sentence, no comma: ~70 s of speech (the old code made it in one ONNX run)
chunk = voice.speak_piece("مرحبا بكم في هذا العالم الجميل نحن نتحدث عن الطقس اليوم وغدا وبعد غد " * 2, info)
peak = status("VmHWM")
kept = rss() - before
give_back_memory(voice)  # what a long SpokenReply or /v1/audio/speech does at its end
print(json.dumps({"seconds": chunk.seconds, "peak": peak - before, "kept": kept, "after": rss() - before}))
"""


def test_a_long_sentence_is_made_in_bounded_runs_that_give_their_memory_back():
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["seconds"] > 40, figures  # it was said whole
    # one run of it took +1.9 GB and kept +1.6 GB; runs of <= ~12 s peak near +0.3 GB
    assert figures["peak"] < 800, figures
    assert figures["after"] < 150, figures


def test_a_long_spoken_reply_gives_its_memory_back_at_its_end(voice, monkeypatch):
    released = []
    monkeypatch.setattr(voice, "release_memory", lambda: released.append(True), raising=False)
    short = SpokenReply(voice, language="en")
    short.feed(ENGLISH)
    short.finish()
    assert sum(c.seconds for c in short) < LONG_SPEECH_S
    long = SpokenReply(voice, language="en")
    long.feed(ENGLISH * 7)  # ~70 s of speech
    long.finish()
    assert sum(c.seconds for c in long) > LONG_SPEECH_S
    long._worker.join(10)
    assert released == [True]  # once, after the long one only (a shrunk arena is refilled: ~20%)


def voice_page(tmp_path, voice) -> tuple[TestClient, Any]:
    """The whole server (page, API, /voice), alice logged in; and its per-user stream counts."""
    from app import build_server

    settings = Settings(data_dir=tmp_path / "data", auth=USERS)
    server, _ = build_server(Assistant(settings, FakeChatModel(), None, synthesizer=voice), settings)
    client = TestClient(server)
    assert client.post("/login", data={"username": "alice", "password": "a"}).status_code == 200
    return client, server.state.voice_streams


def test_say_is_bounded_by_its_work_not_only_its_characters(tmp_path, voice):
    client, streams = voice_page(tmp_path, voice)
    text = ARABIC[:3500]  # well under the 20,000 characters, but ~35 minutes of speech
    started = time.perf_counter()
    response = client.post("/voice/say", json={"text": text})
    took = time.perf_counter() - started
    assert response.status_code == 413, f"{response.status_code} after {took:.0f} s"
    assert "minutes of speech" in response.json()["detail"]
    assert took < 10.0
    assert voice.seconds_of(text) > MAX_SAY_S
    assert streams.open("alice", "say") == 0  # the slot was given back


def test_a_reply_with_a_nul_is_still_read_aloud(tmp_path, voice):
    client, streams = voice_page(tmp_path, voice)
    response = client.post("/voice/say", json={"text": "Hello\x00 world. Goodbye\x07 now."})
    assert response.status_code == 200
    assert len(response.content) > 22050  # > 0.5 s of speech (the old voice stopped at the NUL: 0)
    assert streams.open("alice", "say") == 0
