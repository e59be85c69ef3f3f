"""Figures for the hardening goals (SECURITY.md), printed as JSON lines:

    python -m bench.security [--only text,png] [--mb 50]

- ``text``: a ``--mb`` MB text message to ``/v1/chat/completions`` of a real ``app.py`` (tiny
  random model): time to the 400, the server's resident memory before / at its peak / after,
  and the slowest of the health checks (``GET /v1/models``) sent meanwhile.
- ``data``: the second round's data holes (H1 a server file named in a page message, H2
  another site with a user's login, H3 another user's prompt through the prefix cache, H8 the
  login limiter), tried against a real ``app.py`` with three logins (bench/security_data.py).
- ``media``: clips with one keyframe, 999 streams or frames larger than their header; PDF
  content bombs, one user's PDF behind another's (bench/security_media.py).
- ``voice``: another user's idle voice streams, long and malformed speech input
  (bench/security_voice.py).
- ``png``: peak memory and time of decoding one 16-bit 10000×10000 PNG (just under the pixel
  cap), each in a fresh process, with this tree's ``assistant/media/images.py`` and with the one of
  ``--before`` (a git revision; default the commit before the 16-bit change).

Standalone: not a section of ``python -m bench`` (whose files others own).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
ENV = json.loads(os.environ.get("BENCH_ENV", "{}"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure_text(megabytes: int, repeat: int = 1) -> dict:
    import httpx

    from tests.server import start_app, tiny_model

    key = "bench-key"
    with tempfile.TemporaryDirectory() as data:
        app = start_app(["--model", str(tiny_model()), "--data-dir", data, "--api-key", key], env=ENV)
        try:
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            with httpx.Client(base_url=app.url, headers=headers, timeout=600) as client:
                model = client.get("/v1/models").json()["data"][0]["id"]
                body = json.dumps(
                    {"model": model, "messages": [{"role": "user", "content": "a" * (megabytes * MB)}]}
                ).encode()
                time.sleep(1.0)
                before = rss_mb(app.proc.pid)
                peak, done = [before], threading.Event()
                health: list[float] = []

                def sample():
                    while not done.is_set():
                        peak.append(rss_mb(app.proc.pid))
                        time.sleep(0.005)

                def check_health():
                    with httpx.Client(base_url=app.url, headers=headers, timeout=60) as other:
                        while not done.is_set():
                            t = time.perf_counter()
                            other.get("/v1/models").raise_for_status()
                            health.append(time.perf_counter() - t)
                            time.sleep(0.02)

                threads = [threading.Thread(target=sample), threading.Thread(target=check_health)]
                for t in threads:
                    t.start()
                started = time.perf_counter()
                response = client.post("/v1/chat/completions", content=body)
                elapsed = time.perf_counter() - started
                for _ in range(repeat - 1):  # memory kept by the allocator is reused, not grown
                    client.post("/v1/chat/completions", content=body)
                time.sleep(0.3)
                done.set()
                for t in threads:
                    t.join(10)
            time.sleep(1.0)  # the connection closed
            after = rss_mb(app.proc.pid)
        finally:
            app.stop()
    return {
        "case": f"{megabytes} MB text message to /v1/chat/completions, sent {repeat}x",
        "status": response.status_code,
        "answer_s": round(elapsed, 3),
        "rss_before_mb": round(before),
        "rss_peak_growth_mb": round(max(peak) - before),
        "rss_after_growth_mb": round(after - before),
        "health_checks": len(health),
        "slowest_health_check_s": round(max(health), 3) if health else None,
    }


_DECODE = r"""
import importlib.util, io, resource, sys, time
import numpy as np
from PIL import Image
spec = importlib.util.spec_from_file_location("media_under_test", sys.argv[1])
media = importlib.util.module_from_spec(spec); spec.loader.exec_module(media)
data = open(sys.argv[2], "rb").read()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
img = media.load_image(data, max_bytes=None, max_pixels=100_000_000, max_side=1024)
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base, img.mode, *img.size)
"""


def png16(path: Path, side: int = 10_000) -> Path:
    if not path.exists():
        import numpy as np
        from PIL import Image

        ramp = (np.arange(side, dtype=np.uint32) * 65535 // (side - 1)).astype(np.uint16)
        Image.fromarray(np.broadcast_to(ramp, (side - 1, side)).copy()).save(path, compress_level=9)
    return path


def measure_png(before: str) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        image = png16(Path(tmp) / "16bit.png")
        old = Path(tmp) / "media_before.py"
        old.write_text(
            subprocess.run(
                ["git", "show", f"{before}:assistant/media.py"],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        for label, module in (("before", old), ("after", ROOT / "assistant" / "media" / "images.py")):
            out = subprocess.run(
                [sys.executable, "-c", _DECODE, str(module), str(image)],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            ).stdout.split()
            results.append(
                {
                    "case": f"16-bit 10000x9999 PNG ({image.stat().st_size // 1024} KB), {label} ({module.name})",
                    "decode_s": round(float(out[0]), 2),
                    "peak_growth_mb": round(float(out[1])),
                    "result": f"{out[2]} {out[3]}x{out[4]}",
                }
            )
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.security")
    p.add_argument("--only", default="text,png,data,media,voice")
    p.add_argument("--mb", type=int, default=50)
    p.add_argument("--repeat", type=int, default=3, help="send the text message this many times")
    p.add_argument("--before", default="f800c53", help="git revision whose media.py is 'before'")
    args = p.parse_args(argv)
    assert importlib.util.find_spec("httpx")
    if "text" in args.only:
        print(json.dumps(measure_text(args.mb, args.repeat)))
    if "png" in args.only:
        for row in measure_png(args.before):
            print(json.dumps(row))
    if "data" in args.only:
        from bench.security_data import measure_data_holes

        for row in measure_data_holes():
            print(json.dumps(row), flush=True)
    if "media" in args.only:  # H4, H5, H7: clips and PDFs, this tree against the commit before
        from bench import security_media

        security_media.main([])
    if "voice" in args.only:  # H6 and the speech bounds, against a real app.py
        from bench import security_voice

        security_voice.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
