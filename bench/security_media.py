"""Figures for the media holes of issue 29 (H4, H7, the frame size, H5), as JSON lines:

    python -m bench.security_media [--only keyframe,streams,resized,pdf_bomb,pdf_pages,pdf_parallel,pdf_legit,pdf_server]
                                   [--before db33d2c] [--timeout 180]

Each ``measure_*`` function returns one dict of figures. "before" runs the ``--before``
revision's ``assistant/video.py`` / ``assistant/documents.py`` (written to a temporary file and
imported in a fresh process, as ``bench.security``'s PNG case does); "after" runs this tree's
``assistant.media.video`` / ``assistant.media.documents``.
Wall time, CPU seconds and the peak resident memory (``ru_maxrss`` growth, or ``/proc``'s
``VmHWM`` of a process that had to be killed; for PDFs read in workers, the workers' own peak
too). A "before" that does not return within ``--timeout`` s is killed and reported so.
``pdf_server`` starts a real ``app.py`` (tiny random model, two logins) and sends a PDF bomb as
one user and a small PDF as another.

Standalone: not a section of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "db33d2c"  # the commit before the issue-29 media fixes
TIMEOUT_S = 180.0
_TICK = os.sysconf("SC_CLK_TCK")


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def _old_file(rev: str, path: str, folder: Path) -> Path:
    out = folder / f"{Path(path).stem}_{rev}.py"
    text = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    out.write_text(text)
    return out


# A probe run in a fresh process: imports the module under test from a file (or by name), runs
# one case, prints one JSON line. Its baseline memory is taken after the imports.
_PROBE = r"""
import importlib, importlib.util, json, os, resource, sys, threading, time
which, module_path, case, *args = sys.argv[1:]
if os.environ.get("BENCH_OLD_MEDIA"):  # a "before" file runs against its own revision's media.py
    import assistant
    spec = importlib.util.spec_from_file_location("assistant.media", os.environ["BENCH_OLD_MEDIA"])
    old = importlib.util.module_from_spec(spec); sys.modules[spec.name] = old; spec.loader.exec_module(old)
    assistant.media = old
if module_path.endswith(".py"):
    spec = importlib.util.spec_from_file_location("module_under_test", module_path)
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod)
else:
    mod = importlib.import_module(module_path)
from assistant.errors import MediaError
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
def worker_peaks():
    try:
        from assistant.media import pdf_worker
        return [int(l.split()[1]) // 1024 for pid in pdf_worker.POOL.pids()
                for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM:")]
    except Exception:
        return []
out = {}
workers = [0]
done = threading.Event()
def watch():
    while not done.is_set():
        workers[0] = max([workers[0], *worker_peaks()])
        time.sleep(0.01)
base = peak_mb()
threading.Thread(target=watch, daemon=True).start()
t0, c0 = time.perf_counter(), time.process_time()
try:
    if case == "clip":
        kw = {}
        if hasattr(mod, "DecodeWork"):
            work = mod.DecodeWork(); kw["work"] = work
        clip = mod.load_clip(args[0], **kw)
        out["result"] = f"accepted: {len(clip.frames)} frames {clip.frames[0].size[0]}x{clip.frames[0].size[1]}"
        if kw:
            out.update(frames_decoded=work.frames, packets=work.packets, seeks=work.seeks)
    elif case == "pdf":
        data = open(args[0], "rb").read()
        doc = mod.load_document(data, name=args[1])
        pages = mod.render_pages(doc, mod.pages_to_show(doc, ""))
        out["result"] = f"accepted: {doc.page_count} pages, {len(pages)} drawn"
    elif case == "parallel":
        bomb, small = open(args[0], "rb").read(), open(args[1], "rb").read()
        times = {}
        def read(name, data):
            t = time.perf_counter()
            try:
                mod.load_document(data, name=name); times[name] = ["accepted"]
            except MediaError as exc:
                times[name] = [str(exc)[:90]]
            times[name].append(round(time.perf_counter() - t, 2))
        a = threading.Thread(target=read, args=("bomb.pdf", bomb)); a.start()
        lock = getattr(mod, "_PDFIUM", None)
        pool = getattr(getattr(mod, "pdf_worker", None), "POOL", None)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not ((lock is not None and lock.locked()) or (pool is not None and pool.busy)):
            time.sleep(0.005)
        read("small.pdf", small)
        out["small_pdf_s_while_bomb_is_read"] = times["small.pdf"][1]
        out["bomb_still_being_read_then"] = a.is_alive()
        a.join()
        out["bomb"] = times["bomb.pdf"]
        out["result"] = times["small.pdf"][0]
except MediaError as exc:
    out["result"] = "refused: " + str(exc)
done.set()
out.update(wall_s=round(time.perf_counter() - t0, 2), cpu_s=round(time.process_time() - c0, 2),
           peak_growth_mb=round(peak_mb() - base))
if workers[0]:
    out["worker_peak_rss_mb"] = workers[0]
print(json.dumps(out))
"""


def _probe(
    which: str, module: str, case: str, *args: str, timeout: float = TIMEOUT_S, old_media: Path | None = None
) -> dict:
    """Run the probe; a run past ``timeout`` is killed and its CPU time and peak memory read.
    ``old_media``: the ``assistant/media.py`` the module under test imports as ``assistant.media``."""
    extra = {"BENCH_OLD_MEDIA": str(old_media)} if old_media else {}
    proc = subprocess.Popen(
        [sys.executable, "-c", _PROBE, which, module, case, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **extra},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        cpu, hwm = _cpu_s(proc.pid), _status_kb(proc.pid, "VmHWM") // 1024
        proc.kill()
        proc.communicate()
        return {
            "which": which,
            "result": f"did not return within {timeout:g} s (killed)",
            "cpu_s": round(cpu, 1),
            "peak_rss_mb": hwm,
        }
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        return {"which": which, "result": f"crashed (rc {proc.returncode}): {err.strip()[-300:]}"}
    return {"which": which, **json.loads(lines[-1])}


def _before_after(
    rev: str, path: str, module: str, case: str, *args: str, timeout: float = TIMEOUT_S
) -> list[dict]:
    """``path`` at ``rev`` (before, with that revision's ``assistant/media.py``) against this
    tree's ``module`` (after)."""
    with tempfile.TemporaryDirectory() as tmp:
        old = _old_file(rev, path, Path(tmp))
        media = _old_file(rev, "assistant/media.py", Path(tmp))
        return [
            _probe(f"before ({rev})", str(old), case, *args, timeout=timeout, old_media=media),
            _probe("after", module, case, *args, timeout=timeout),
        ]


# --------------------------------------------------------------------------- clips


def measure_keyframe_clip(before: str = BEFORE, timeout: float = 60.0) -> dict:
    """H4: 130 s of 320x180 H.264 behind a single keyframe (~90 KB)."""
    from tests.clip_samples import single_keyframe_clip

    with tempfile.TemporaryDirectory() as tmp:
        clip = single_keyframe_clip(Path(tmp) / "k.mp4")
        runs = _before_after(
            before, "assistant/video.py", "assistant.media.video", "clip", str(clip), timeout=timeout
        )
        size = clip.stat().st_size
    return {"case": f"130-s clip, one keyframe ({size // 1024} KB)", "runs": runs}


def measure_stream_clip(before: str = BEFORE, streams: int = 999) -> dict:
    """H7: a 1-s clip whose tiny track is stored 999 times."""
    from tests.clip_samples import many_streams_clip

    with tempfile.TemporaryDirectory() as tmp:
        clip = many_streams_clip(Path(tmp) / "streams.mp4", streams)
        runs = _before_after(before, "assistant/video.py", "assistant.media.video", "clip", str(clip))
        size = clip.stat().st_size
    return {"case": f"clip with {streams} streams ({size // 1024} KB)", "runs": runs}


def measure_resized_clip(before: str = BEFORE) -> dict:
    """A 64x64 header followed by 7680x4320 frames."""
    from tests.clip_samples import resizing_clip

    with tempfile.TemporaryDirectory() as tmp:
        clip = resizing_clip(Path(tmp) / "resizing.mp4")
        runs = _before_after(before, "assistant/video.py", "assistant.media.video", "clip", str(clip))
        size = clip.stat().st_size
    return {"case": f"64x64 header, 7680x4320 frames ({size // 1024} KB)", "runs": runs}


# --------------------------------------------------------------------------- PDFs


def _pdf_case(label: str, data: bytes, before: str, timeout: float, case: str = "pdf", *extra: bytes) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, blob in enumerate((data, *extra)):
            path = Path(tmp) / f"doc{i}.pdf"
            path.write_bytes(blob)
            paths.append(str(path))
        args = [*paths] if case == "parallel" else [paths[0], "doc.pdf"]
        runs = _before_after(
            before, "assistant/documents.py", "assistant.media.documents", case, *args, timeout=timeout
        )
    return {"case": f"{label} ({len(data) // 1024} KB)", "runs": runs}


def measure_pdf_bomb(before: str = BEFORE, megabytes: int = 64, timeout: float = TIMEOUT_S) -> dict:
    """H5: one page whose content stream inflates to ``megabytes`` MB of filled squares."""
    from tests.pdf_samples import content_bomb

    return _pdf_case(
        f"PDF, 1 page, content inflating to {megabytes} MB", content_bomb(megabytes), before, timeout
    )


def measure_pdf_pages_bomb(before: str = BEFORE, pages: int = 500, timeout: float = 300.0) -> dict:
    """H5: ``pages`` pages sharing one 3 MB content stream."""
    from tests.pdf_samples import content_bomb

    return _pdf_case(
        f"PDF, {pages} pages sharing one 3 MB content stream", content_bomb(3, pages=pages), before, timeout
    )


def measure_pdf_parallel(before: str = BEFORE, timeout: float = 300.0) -> dict:
    """H5: a 12-page PDF read while another user's 500-page bomb is being read."""
    from tests.pdf_samples import content_bomb, text_pdf

    small = text_pdf([f"Page {n}.\nThe word of page {n} is word{n * 7}." for n in range(1, 13)])
    return _pdf_case(
        "12-page PDF while a 500-page bomb is read",
        content_bomb(3, pages=500),
        before,
        timeout,
        "parallel",
        small,
    )


def measure_pdf_legit(before: str = BEFORE) -> list[dict]:
    """The cost of the worker for ordinary PDFs: a 12-page report and a 500-page text book."""
    from tests.pdf_samples import text_pdf

    report = text_pdf([f"Page {n}.\nThe word of page {n} is word{n * 7}." for n in range(1, 13)])
    line = "the quick brown fox jumps over the lazy dog again and again."
    book = text_pdf(["\n".join(f"Line {j} of page {i}: {line}" for j in range(40)) for i in range(500)])
    return [
        _pdf_case("12-page text PDF, read + 4 pages drawn", report, before, TIMEOUT_S),
        _pdf_case("500-page text PDF, read + 4 pages drawn", book, before, TIMEOUT_S),
    ]


def measure_pdf_server(megabytes: int = 64) -> dict:
    """A real app.py (tiny random model, two logins): alice sends a PDF bomb; meanwhile bob
    sends a 12-page PDF and asks /v1/models. The server's own memory, and its workers'."""
    import httpx

    from tests.pdf_samples import content_bomb, text_pdf
    from tests.server import start_app, tiny_model

    def part(data: bytes, name: str) -> dict:
        url = "data:application/pdf;base64," + base64.b64encode(data).decode()
        return {"type": "file", "file": {"file_data": url, "filename": name}}

    bomb = content_bomb(megabytes)
    small = text_pdf([f"Page {n}.\nThe word of page {n} is word{n * 7}." for n in range(1, 13)])
    with tempfile.TemporaryDirectory() as data:
        app = start_app(
            ["--model", str(tiny_model()), "--data-dir", data, "--auth", "alice:a", "--auth", "bob:b"]
        )
        try:
            model = httpx.get(app.url + "v1/models", auth=("bob", "b"), timeout=60).json()["data"][0]["id"]

            def ask(user: tuple[str, str], content: list) -> tuple[int, str, float]:
                body = {"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": content}]}
                t = time.perf_counter()
                r = httpx.post(app.url + "v1/chat/completions", json=body, auth=user, timeout=600)
                message = r.json().get("error", {}).get("message", "") if r.status_code != 200 else ""
                return r.status_code, message, round(time.perf_counter() - t, 2)

            ask(("bob", "b"), [{"type": "text", "text": "hi"}, part(small, "warm.pdf")])  # workers up
            time.sleep(1.0)
            server = app.proc.pid
            before_mb = _status_kb(server, "VmRSS") / 1024
            peak = {"server": before_mb, "workers": 0.0}
            done = threading.Event()

            def children() -> list[int]:  # the workers are started by the server's pool threads
                found = []
                for task in Path(f"/proc/{server}/task").glob("*"):
                    try:
                        found += [int(p) for p in (task / "children").read_text().split()]
                    except OSError:
                        pass
                return found

            def sample():
                while not done.is_set():
                    peak["server"] = max(peak["server"], _status_kb(server, "VmRSS") / 1024)
                    for pid in children():
                        peak["workers"] = max(peak["workers"], _status_kb(pid, "VmRSS") / 1024)
                    time.sleep(0.01)

            watcher = threading.Thread(target=sample, daemon=True)
            watcher.start()
            results: dict = {}
            alice = threading.Thread(
                target=lambda: results.update(alice=ask(("alice", "a"), [part(bomb, "bomb.pdf")]))
            )
            alice.start()
            time.sleep(0.5)
            results["bob"] = ask(
                ("bob", "b"), [{"type": "text", "text": "page 2?"}, part(small, "report.pdf")]
            )
            t = time.perf_counter()
            httpx.get(app.url + "v1/models", auth=("bob", "b"), timeout=60).raise_for_status()
            health = round(time.perf_counter() - t, 3)
            bomb_still_read = alice.is_alive()
            alice.join()
            done.set()
            watcher.join(5)
        finally:
            app.stop()
    return {
        "case": f"real app.py: PDF bomb ({len(bomb) // 1024} KB, content inflating to {megabytes} MB) "
        "from alice, a 12-page PDF from bob meanwhile",
        "alice_status": results["alice"][0],
        "alice_error": results["alice"][1][:120],
        "alice_answer_s": results["alice"][2],
        "bob_status": results["bob"][0],
        "bob_answer_s": results["bob"][2],
        "bomb_still_being_read_when_bob_was_answered": bomb_still_read,
        "health_check_s": health,
        "server_rss_before_mb": round(before_mb),
        "server_rss_peak_growth_mb": round(peak["server"] - before_mb),
        "worker_peak_rss_mb": round(peak["workers"]),
    }


CASES = {
    "keyframe": measure_keyframe_clip,
    "streams": measure_stream_clip,
    "resized": measure_resized_clip,
    "pdf_bomb": measure_pdf_bomb,
    "pdf_pages": measure_pdf_pages_bomb,
    "pdf_parallel": measure_pdf_parallel,
    "pdf_legit": measure_pdf_legit,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.security_media")
    p.add_argument("--only", default=",".join([*CASES, "pdf_server"]))
    p.add_argument("--before", default=BEFORE, help="git revision whose video.py / documents.py is 'before'")
    args = p.parse_args(argv)
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    for name in wanted:
        if name == "pdf_server":
            rows: object = measure_pdf_server()
        elif name in CASES:
            rows = CASES[name](args.before)
        else:
            p.error(f"unknown case {name!r}: choose from {', '.join([*CASES, 'pdf_server'])}")
        for row in rows if isinstance(rows, list) else [rows]:
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
