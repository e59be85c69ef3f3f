"""Figures for issue 29 (the voice routes and /v1/audio/speech under abuse), as dicts:

    python -m bench.security_voice [--only idle,speech] [--streams 40]

- :func:`measure_idle_streams`: a real ``app.py`` (tiny random model, the embedded voice, two
  logins); bob opens ``streams`` idle ``GET /voice/live`` at once, then alice asks
  ``POST /voice/say`` and ``GET /voice/config``: her wall times (and without bob, for
  comparison), what bob's streams were answered, the server's threads and resident memory.
- :func:`measure_long_speech`: ``POST /v1/audio/speech`` to a real ``app.py`` with 4,096 Arabic
  characters (read by the English voice, letter by letter), 400 of them (~4 minutes of audio, so
  still served), a long English text (served), and a NUL: status, wall time, bytes, and the
  server's resident memory before / at its peak / a second after the answer.

Each function starts and stops its own server; the figures come from /proc.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USERS = (("alice", "a"), ("bob", "b"))
KEY = "bench-key"
# 4,096 characters of Arabic prose (the embedded voice is English: espeak reads each letter's name)
ARABIC = ("مرحبا بكم في هذا العالم الجميل، نحن نتحدث عن الطقس اليوم. " * 80)[:4096]
ENGLISH = (
    "The weather will be sunny tomorrow, with a light breeze from the west. "
    "Take a hat if you go outside. Paris is the capital of France. "
    "It is famous for the Eiffel Tower and its museums. "
) * 25


def proc_status(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return 0.0


def rss_mb(pid: int) -> float:
    return proc_status(pid, "VmRSS") / 1024


def _start(args: list[str], data: str):
    from tests.server import start_app, tiny_model

    return start_app(["--model", str(tiny_model()), "--data-dir", data, *args])


def _logged_in(url: str, user: str, password: str, **kw):
    import httpx

    client = httpx.Client(base_url=url, **kw)
    client.post("/login", data={"username": user, "password": password}).raise_for_status()
    return client


def _timed(fn) -> tuple[float, int | str]:
    started = time.perf_counter()
    try:
        status: int | str = fn().status_code
    except Exception as exc:  # a timeout is a figure too
        status = type(exc).__name__
    return round(time.perf_counter() - started, 3), status


def measure_idle_streams(streams: int = 40, patience_s: float = 60.0) -> dict:
    """Bob's ``streams`` idle /voice/live requests against alice's /voice/say and /voice/config."""
    import httpx

    auth = [a for user, password in USERS for a in ("--auth", f"{user}:{password}")]
    with tempfile.TemporaryDirectory() as data:
        app = _start(auth, data)
        try:
            limits = httpx.Limits(max_connections=streams + 8, max_keepalive_connections=streams + 8)
            alice = _logged_in(app.url, *USERS[0], timeout=patience_s)
            bob = _logged_in(app.url, *USERS[1], timeout=patience_s, limits=limits)

            def say():
                return alice.post("/voice/say", json={"text": "Hello there. How are you today?"})

            def config():
                return alice.get("/voice/config")

            say()  # warm the voice
            alone_say, alone_config = _timed(say), _timed(config)
            threads_before = proc_status(app.proc.pid, "Threads")
            answers: list[int | str] = []
            opened: list[float] = []

            def listen(i: int) -> None:
                started = time.perf_counter()
                try:
                    r = bob.get("/voice/live", params={"tab": f"bench-tab-{i:04d}", "after": 0})
                    answers.append(r.status_code)
                except Exception as exc:
                    answers.append(type(exc).__name__)
                opened.append(time.perf_counter() - started)

            bobs = [threading.Thread(target=listen, args=(i,), daemon=True) for i in range(streams)]
            for t in bobs:
                t.start()
            time.sleep(2.0)  # all of bob's requests are in
            threads_during = proc_status(app.proc.pid, "Threads")
            rss_during = rss_mb(app.proc.pid)
            busy_say, busy_config = _timed(say), _timed(config)
            refused_fast = sum(1 for a, s in zip(answers, opened, strict=False) if a == 429 and s < 2.0)
            for t in bobs:
                t.join(patience_s)
            alice.close()
            bob.close()
        finally:
            app.stop()
    counts: dict[str, int] = {}
    for a in answers:
        counts[str(a)] = counts.get(str(a), 0) + 1
    return {
        "case": f"bob: {streams} idle GET /voice/live at once; alice: POST /voice/say, GET /voice/config",
        "alice_say_alone_s": alone_say[0],
        "alice_config_alone_s": alone_config[0],
        "alice_say_during_s": busy_say[0],
        "alice_say_status": busy_say[1],
        "alice_config_during_s": busy_config[0],
        "alice_config_status": busy_config[1],
        "bob_answers": counts,
        "bob_refused_within_2s": refused_fast,
        "server_threads_before": int(threads_before),
        "server_threads_during": int(threads_during),
        "server_rss_during_mb": round(rss_during),
    }


def _speech(client, text: str) -> tuple[float, int, int, str]:
    started = time.perf_counter()
    size, status, detail = 0, 0, ""
    body = {"model": "tts-1", "voice": "alloy", "input": text, "response_format": "wav"}
    try:
        with client.stream("POST", "/v1/audio/speech", json=body) as response:
            status = response.status_code
            for data in response.iter_bytes():
                size += len(data)
                if status >= 400:
                    detail += data.decode(errors="replace")
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}"
    return time.perf_counter() - started, status, size, detail[:200]


def measure_long_speech(
    cases: tuple[str, ...] = ("arabic", "arabic400", "english", "nul"), timeout_s: float = 600.0
) -> list[dict]:
    """/v1/audio/speech with long inputs: time, bytes and the server's resident memory."""
    import httpx

    texts = {
        "arabic": ARABIC,
        "arabic400": ARABIC[:400],  # ~4 minutes: within the bound, made in 57-character sentences
        "english": ENGLISH[:4096],
        "nul": "Hello\x00 world.",
    }
    rows = []
    with tempfile.TemporaryDirectory() as data:
        app = _start(["--api-key", KEY], data)
        try:
            headers = {"Authorization": f"Bearer {KEY}"}
            with httpx.Client(base_url=app.url, headers=headers, timeout=timeout_s) as client:
                warm = _speech(client, "Hello there.")  # the voice loaded and warm
                assert warm[1] == 200, warm
                for case in cases:
                    time.sleep(1.0)
                    before = rss_mb(app.proc.pid)
                    peak, done = [before], threading.Event()

                    def sample(peak=peak, done=done):
                        while not done.is_set():
                            peak.append(rss_mb(app.proc.pid))
                            time.sleep(0.02)

                    sampler = threading.Thread(target=sample)
                    sampler.start()
                    elapsed, status, size, detail = _speech(client, texts[case])
                    done.set()
                    sampler.join(5)
                    time.sleep(1.0)
                    rows.append(
                        {
                            "case": f"/v1/audio/speech, {case}: {len(texts[case])} characters, wav",
                            "status": status,
                            "wall_s": round(elapsed, 2),
                            "bytes": size,
                            "audio_s": round(max(0, size - 44) / 2 / 24000, 1) if status == 200 else None,
                            "detail": detail if status != 200 else "",
                            "rss_before_mb": round(before),
                            "rss_peak_growth_mb": round(max(peak) - before),
                            "rss_after_growth_mb": round(rss_mb(app.proc.pid) - before),
                        }
                    )
        finally:
            app.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.security_voice")
    p.add_argument("--only", default="idle,speech")
    p.add_argument("--streams", type=int, default=40)
    p.add_argument("--cases", default="arabic,arabic400,english,nul")
    args = p.parse_args(argv)
    if "idle" in args.only:
        print(json.dumps(measure_idle_streams(args.streams)), flush=True)
    if "speech" in args.only:
        for row in measure_long_speech(tuple(args.cases.split(","))):
            print(json.dumps(row, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
