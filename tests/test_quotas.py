"""Per-user limits (``--user-requests-per-minute``, ``--user-tokens-per-day``): the counting on a
fake clock, the 429s through ``/v1`` with two logged-in users, and ``python -m assistant usage``."""

from __future__ import annotations

import base64
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from assistant.core import Assistant
from assistant.quotas import FILE, Quotas, RateLimited
from assistant.settings import Settings
from tests.fakes import FakeChatModel
from tests.test_api import FakeTranscriber

NOON = datetime(2026, 12, 7, 12, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float = NOON):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_requests_a_minute_are_counted_per_user_over_the_last_60_s(tmp_path):
    clock = Clock()
    quotas = Quotas(tmp_path, requests_per_minute=3, clock=clock)
    for _ in range(3):
        quotas.admit("alice")
        clock.now += 10
    with pytest.raises(RateLimited) as refused:
        quotas.admit("alice")
    assert refused.value.retry_after_s == 31 and "3 requests in the last minute" in str(refused.value)
    quotas.admit("bob")  # another user is not affected
    clock.now += 31
    quotas.admit("alice")  # the first request left the window


def test_tokens_a_day_stop_at_the_limit_until_midnight_utc_and_survive_a_restart(tmp_path):
    clock = Clock()
    quotas = Quotas(tmp_path, tokens_per_day=1000, clock=clock)
    quotas.admit("alice")
    quotas.spend("alice", 1200)  # a reply may end past the limit; the next one is refused
    again = Quotas(tmp_path, tokens_per_day=1000, clock=clock)  # the app restarted
    with pytest.raises(RateLimited) as refused:
        again.admit("alice")
    assert refused.value.retry_after_s == 12 * 3600 + 1 and "midnight UTC" in str(refused.value)
    again.admit("bob")
    clock.now += 12 * 3600 + 1
    again.admit("alice")  # a new day


def test_a_cache_salt_does_not_make_a_caller_a_new_user(tmp_path):
    quotas = Quotas(tmp_path, requests_per_minute=1, clock=Clock())
    quotas.admit("alice\0salt-1")
    with pytest.raises(RateLimited):
        quotas.admit("alice\0salt-2")


def test_nothing_is_counted_or_written_without_a_limit(tmp_path):
    quotas = Quotas(tmp_path)
    for _ in range(100):
        quotas.admit("alice")
    quotas.spend("alice", 10**9)
    assert not (tmp_path / FILE).exists()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ALICE, BOB = basic("alice", "wonderland"), basic("bob", "builder")


def server(tmp_path, **limits):
    from app import build_server

    s = Settings(data_dir=tmp_path / "data", auth=(("alice", "wonderland"), ("bob", "builder")), **limits)
    app, _ = build_server(Assistant(s, FakeChatModel(), FakeTranscriber()), s)
    return TestClient(app, base_url="http://127.0.0.1")


def ask(client, headers):
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
    return client.post("/v1/chat/completions", json=body, headers=headers)


def test_past_the_limit_v1_answers_429_with_retry_after_and_other_users_go_on(tmp_path):
    client = server(tmp_path, user_requests_per_minute=2)
    assert client.get("/v1/models", headers=ALICE).status_code == 200  # counts for nothing
    assert [ask(client, ALICE).status_code for _ in range(2)] == [200, 200]
    refused = ask(client, ALICE)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and "try again in" in error["message"]
    streamed = client.post(
        "/v1/chat/completions",
        json={"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers=ALICE,
    )
    assert streamed.status_code == 429  # refused before the stream starts, not inside it
    assert ask(client, BOB).status_code == 200


def test_transcriptions_count_too(tmp_path):
    client = server(tmp_path, user_requests_per_minute=1)
    files = {"file": ("a.wav", b"RIFF....WAVE", "audio/wav")}  # FakeTranscriber reads no audio
    sent = client.post("/v1/audio/transcriptions", files=files, data={"model": "fake-whisper"}, headers=ALICE)
    assert sent.status_code == 200
    assert ask(client, ALICE).status_code == 429


def test_tokens_a_day_through_v1_and_the_usage_command(tmp_path):
    client = server(tmp_path, user_tokens_per_day=10)
    assert ask(client, ALICE).status_code == 200  # its prompt and reply take more than 10 tokens
    assert ask(client, ALICE).status_code == 429
    assert ask(client, BOB).status_code == 200
    done = subprocess.run(
        [sys.executable, "-m", "assistant", "usage", "--data-dir", str(tmp_path / "data"), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert {line.split('"user": "')[1].split('"')[0] for line in done.stdout.splitlines()} == {"alice", "bob"}
    assert '"requests": 1' in done.stdout


def test_the_usage_command_says_when_nothing_was_counted(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "assistant", "usage", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.startswith("error: no usage counted")


def test_the_voice_routes_count_and_say_when_to_try_again(tmp_path):
    from app import build_server

    s = Settings(data_dir=tmp_path / "data", user_requests_per_minute=1)
    app, _ = build_server(Assistant(s, FakeChatModel(), FakeTranscriber()), s)
    client = TestClient(app, base_url="http://127.0.0.1")
    heard = client.post("/voice/transcribe", content=b"RIFF....WAVE", headers={"X-Voice": "1"})
    assert heard.status_code == 200, heard.text
    again = client.post("/voice/transcribe", content=b"RIFF....WAVE", headers={"X-Voice": "1"})
    assert again.status_code == 429 and int(again.headers["retry-after"]) >= 1
    assert "try again in" in again.json()["detail"]
