"""PDFs are read in worker processes, each with a memory cap and a CPU-time limit per document.

PDFium is not thread-safe, and a small PDF can make it parse gigabytes of drawing operators
(a 127 KB file whose page content inflates to 64 MB of squares costs 9 s and 1.7 GB; 500 pages
sharing one such stream cost minutes). So no PDF is parsed in the server's process: a small
pool of workers (:data:`POOL`, ``PDF_WORKERS`` at most, started when the first PDF arrives)
reads them, one document per worker at a time, so two people's PDFs are read in parallel and
a bomb only costs the worker it landed on. Each worker runs with ``RLIMIT_AS`` at
``PDF_MEMORY_BYTES`` (PDFium aborts when an allocation fails); the parent watches the worker's
CPU time (``PDF_CPU_SECONDS`` per document: CPU, not wall time, so a busy machine does not
refuse good files) and a wall-clock backstop (``PDF_WALL_SECONDS``), kills it when either is
spent and starts a fresh one for the next document. A document refused for its cost is
remembered by its hash, so sending it again is refused at once.

A worker is this file run as a script (``python -I assistant/media/pdf_worker.py``: a fresh
interpreter, no fork of the server's threads, nothing imported but the standard library and
pypdfium2; ``-I`` also keeps this folder off ``sys.path``, so the package's other modules
cannot shadow a standard one). It speaks a small framed protocol on its stdin/stdout — a JSON
header and raw bytes, never pickle, so nothing a hostile PDF makes the worker say can run code
in the server — and its answers are checked for size before they are used. No torch here.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections import OrderedDict
from typing import Any

MB = 1024 * 1024
PDF_WORKERS = 2  # documents read at the same time; the next one waits for a free worker
PDF_MEMORY_BYTES = 1024 * MB  # address space of one worker (its baseline is ~30 MB)
PDF_CPU_SECONDS = 20.0  # CPU s one document may cost a worker to read, or to draw (a 500-page book: ~1 s)
PDF_WALL_SECONDS = 120.0  # wall-clock backstop for the same
MAX_TEXT_BYTES = 16 * MB  # text layer kept of one document (the model gets 100,000 characters)
MAX_ANSWER_BYTES = 256 * MB  # what the parent accepts from a worker for one request
RECYCLE_RSS_BYTES = 384 * MB  # a worker this large after a document is replaced
_HEADER = struct.Struct(">II")  # JSON length, payload length
_MAX_JSON = 4 * MB
POINTS_PER_INCH = 72


# =========================================================================== the worker side


class Refused(Exception):
    """A document the worker will not read; the message is for the person who sent it."""


def _send(out, header: dict, payload: bytes = b"") -> None:
    raw = json.dumps(header).encode()
    out.write(_HEADER.pack(len(raw), len(payload)) + raw)
    if payload:
        out.write(payload)


def _receive(stream) -> tuple[dict, bytes] | None:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    n, m = _HEADER.unpack(head)
    header = json.loads(stream.read(n))
    return header, stream.read(m) if m else b""


def _open(pdfium, data: bytes, label: str):
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise Refused(
                f"{label} is protected by a password: remove the protection and send it again"
            ) from None
        raise Refused(f"{label} is truncated or corrupt (PDFium: {_reason(exc)})") from None
    except Exception:
        raise Refused(f"{label} is truncated or corrupt") from None


def _reason(exc: Exception) -> str:
    import re

    found = re.search(r"\(PDFium: ([^)]*)\)", str(exc))
    return found.group(1) if found else str(exc) or type(exc).__name__


def _page_text(pdf, index: int, label: str) -> str:
    try:
        page = pdf[index]
        try:
            textpage = page.get_textpage()
            try:
                text = textpage.get_text_bounded()
            finally:
                textpage.close()
        finally:
            page.close()
    except Exception:
        raise Refused(f"{label}: page {index + 1} is damaged and cannot be read") from None
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def _read_pdf(pdfium, request: dict, data: bytes, out) -> None:
    """Page sizes and the text layer: one answer, the texts as one UTF-8 payload."""
    label, max_pages, max_inches = request["label"], request.get("max_pages"), request.get("max_page_inches")
    pdf = _open(pdfium, data, label)
    try:
        count = len(pdf)
        if count == 0:
            raise Refused(f"{label} has no pages")
        if max_pages and count > max_pages:
            raise Refused(f"{label} has {count:,} pages, over the {max_pages:,}-page limit")
        pages, texts, kept = [], [], 0
        for i in range(count):
            w, h = pdf.get_page_size(i)
            if max_inches and max(w, h) > max_inches * POINTS_PER_INCH:
                raise Refused(
                    f"{label}: page {i + 1} is {w / POINTS_PER_INCH:.0f} x {h / POINTS_PER_INCH:.0f} "
                    f"inches, over the {max_inches:g}-inch limit"
                )
            text = _page_text(pdf, i, label).encode("utf-8", "surrogatepass")
            if kept + len(text) > MAX_TEXT_BYTES:
                text = b""  # the model reads the first 100,000 characters: the rest is never used
            kept += len(text)
            texts.append(text)
            pages.append([float(w), float(h), len(text)])
    finally:
        pdf.close()
    _send(out, {"pages": pages}, b"".join(texts))


def _render(pdfium, request: dict, data: bytes, out) -> None:
    """One answer per page drawn (raw pixels), within the pixel budget, then the end."""
    label, budget = request["label"], request["budget_pixels"]
    pdf = _open(pdfium, data, label)
    try:
        spent = drawn = 0
        for n, scale, pixels in request["pages"]:
            if drawn and spent + pixels > budget:
                break
            page = pdf[n - 1]
            try:
                bitmap = page.render(scale=scale, may_draw_forms=True, rev_byteorder=True)
                header = {
                    "page": n,
                    "width": bitmap.width,
                    "height": bitmap.height,
                    "stride": bitmap.stride,
                    "mode": bitmap.mode,
                }
                pixels_out = bytes(bitmap.buffer)
                bitmap.close()
            except Exception:
                raise Refused(f"{label}: page {n} is damaged and cannot be drawn") from None
            finally:
                page.close()
            spent += bitmap.width * bitmap.height
            drawn += 1
            _send(out, header, pixels_out)
    finally:
        pdf.close()


def serve(memory_bytes: int) -> int:
    """The worker's loop: one request at a time until its stdin closes."""
    import resource

    if memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    requests = os.fdopen(os.dup(0), "rb")
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a library prints cannot corrupt the answers
    import pypdfium2 as pdfium  # only the worker loads PDFium

    while True:
        got = _receive(requests)
        if got is None:
            return 0
        request, data = got
        try:
            if request["op"] == "read":
                _read_pdf(pdfium, request, data, out)
            elif request["op"] == "render":
                _render(pdfium, request, data, out)
            else:
                raise Refused(f"unknown request {request['op']!r}")
            _send(out, {"done": True})
        except Refused as exc:
            _send(out, {"error": str(exc)})
        except MemoryError:
            _send(out, {"error": "", "memory": True})
            out.flush()
            return 3  # PDFium's state after a failed allocation is not to be trusted
        out.flush()


# =========================================================================== the server side


def _refuse(message: str) -> Exception:
    from assistant.errors import MediaError

    return MediaError(message)


def _size(n: float) -> str:
    return f"{n / (1024 * MB):g} GB" if n >= 1024 * MB else f"{n / MB:g} MB"


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used, from /proc; None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return None


def _proc_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


class _Lost(Exception):
    """The worker had to be killed or died; ``reason`` says which, for the message."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Worker:
    def __init__(self, memory_bytes: int):
        self.proc = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), str(memory_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self.stopped = False  # killed by PdfPool.close(), not for a document's cost

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGKILL)
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                if pipe:
                    pipe.close()
            except OSError:
                pass

    def call(self, request: dict, data: bytes, cpu_s: float, wall_s: float) -> list[tuple[dict, bytes]]:
        """The worker's answers to one request, up to its last ({"done"} or {"error"})."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        cpu_start = _proc_cpu_s(self.pid) or 0.0
        deadline = time.monotonic() + wall_s
        raw = json.dumps(request).encode()
        try:
            self.proc.stdin.write(_HEADER.pack(len(raw), len(data)) + raw)
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except OSError:  # it died before it read the request: not this document's doing
            raise _Lost("gone") from None
        fd = self.proc.stdout.fileno()
        buffer = bytearray()
        answers: list[tuple[dict, bytes]] = []
        received = 0
        while True:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                chunk = os.read(fd, 4 * MB)
                if not chunk:
                    raise _Lost("died")
                buffer += chunk
                received += len(chunk)
                if received > MAX_ANSWER_BYTES:
                    raise _Lost("protocol")
                while len(buffer) >= _HEADER.size:
                    n, m = _HEADER.unpack_from(buffer)
                    if n > _MAX_JSON:
                        raise _Lost("protocol")
                    if len(buffer) < _HEADER.size + n + m:
                        break
                    try:
                        header = json.loads(bytes(buffer[_HEADER.size : _HEADER.size + n]))
                    except ValueError:
                        raise _Lost("protocol") from None
                    if not isinstance(header, dict):
                        raise _Lost("protocol")
                    payload = bytes(buffer[_HEADER.size + n : _HEADER.size + n + m])
                    del buffer[: _HEADER.size + n + m]
                    answers.append((header, payload))
                    if header.get("memory"):
                        raise _Lost("died")
                    if "done" in header or "error" in header:
                        if buffer:
                            raise _Lost("protocol")
                        return answers
            used = _proc_cpu_s(self.pid)
            if used is not None and used - cpu_start > cpu_s:
                raise _Lost("cpu")
            if time.monotonic() > deadline:
                raise _Lost("wall")


_POOLS: weakref.WeakSet[PdfPool] = weakref.WeakSet()


def _after_fork() -> None:
    for pool in list(_POOLS):
        pool._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class PdfPool:
    """Up to ``size`` worker processes, started when needed; one document per worker at a time."""

    def __init__(
        self,
        size: int = PDF_WORKERS,
        *,
        memory_bytes: int = PDF_MEMORY_BYTES,
        cpu_s: float = PDF_CPU_SECONDS,
        wall_s: float = PDF_WALL_SECONDS,
    ):
        self.size, self.memory_bytes, self.cpu_s, self.wall_s = size, memory_bytes, cpu_s, wall_s
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._refused: OrderedDict[str, str] = OrderedDict()
        self.started = 0  # workers started so far
        self.killed = 0  # workers killed for a document's cost (or found dead)
        _POOLS.add(self)

    def _forget(self) -> None:
        """In a forked child: the workers (and their pipes) are the parent's; start afresh."""
        self._slots = threading.BoundedSemaphore(self.size)
        self._lock = threading.Lock()
        self._idle, self._busy = [], set()

    @property
    def busy(self) -> int:
        """Documents being read right now."""
        with self._lock:
            return len(self._busy)

    def pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in [*self._idle, *self._busy]]

    def close(self) -> None:
        """Kill every worker (a document being read is refused); the next one starts afresh."""
        with self._lock:
            workers = [*self._idle, *self._busy]
            self._idle.clear()
        for worker in workers:
            worker.stopped = True
            worker.kill()

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    self._busy.add(worker)
                    return worker
                worker.kill()
        try:
            worker = _Worker(self.memory_bytes)  # outside the lock: a start takes ~0.1 s
        except OSError as exc:
            raise _refuse(f"PDFs cannot be read here: the PDF reader did not start ({exc})") from None
        with self._lock:
            self.started += 1
            self._busy.add(worker)
        return worker

    def _give_back(self, worker: _Worker, keep: bool) -> None:
        keep = keep and worker.alive() and _proc_rss(worker.pid) < RECYCLE_RSS_BYTES
        with self._lock:
            self._busy.discard(worker)
            if keep:
                self._idle.append(worker)
        if not keep:
            worker.kill()

    def request(self, request: dict, data: bytes) -> list[tuple[dict, bytes]]:
        """The answers to one request, the worker's refusal raised as a MediaError."""
        label = request["label"]
        # under the limits it was refused by (they are the pool's, changed only by tests)
        digest = hashlib.blake2b(data, digest_size=16).hexdigest() + f":{self.cpu_s}:{self.memory_bytes}"
        with self._lock:
            known = self._refused.get(digest)
        if known:
            raise _refuse(self._message(known, label))
        with self._slots:
            for attempt in range(2):
                worker = self._take()
                keep = False
                try:
                    answers = worker.call(request, data, self.cpu_s, self.wall_s)
                    keep = True
                    break
                except _Lost as lost:
                    reason = "stopped" if worker.stopped else lost.reason
                    if reason == "gone" and attempt == 0:
                        continue  # a worker that died idle: once more with a fresh one
                    with self._lock:
                        self.killed += 1
                        if reason in ("cpu", "died"):  # the file's own cost: the same next time
                            self._refused[digest] = reason
                            while len(self._refused) > 256:
                                self._refused.popitem(last=False)
                    raise _refuse(self._message(reason, label)) from None
                finally:
                    self._give_back(worker, keep)
        last = answers[-1][0]
        if "error" in last:
            raise _refuse(str(last["error"]))
        return answers[:-1]

    def _message(self, reason: str, label: str) -> str:
        if reason == "cpu":
            return (
                f"{label} takes too long to read (over {self.cpu_s:g} s of work): it is too "
                "complex, or built to be slow. Send a simpler PDF or fewer pages"
            )
        if reason == "wall":
            return f"{label} takes too long to read (over {self.wall_s:g} s): try again later or send a simpler PDF"
        if reason == "stopped":
            return f"{label} was not read: the PDF reader was stopped (the server is shutting down)"
        if reason in ("died", "gone"):
            return (
                f"{label} cannot be read: the PDF reader stopped on it (it needs more than "
                f"{_size(self.memory_bytes)} of memory, or it is damaged)"
            )
        return f"{label} cannot be read: the PDF reader gave a malformed answer"

    # -- the two things documents.py asks -------------------------------------------------

    def read(
        self, data: bytes, label: str, max_pages: int | None, max_page_inches: float | None
    ) -> list[tuple[float, float, str]]:
        """(width pt, height pt, text) of every page; every problem a MediaError."""
        request = {"op": "read", "label": label, "max_pages": max_pages, "max_page_inches": max_page_inches}
        answers = self.request(request, data)
        if len(answers) != 1:
            raise _refuse(self._message("protocol", label))
        header, payload = answers[0]
        pages: list[tuple[float, float, str]] = []
        at = 0
        try:
            for w, h, n in header["pages"]:
                if not (0 <= n <= len(payload) - at):
                    raise ValueError
                text = payload[at : at + n].decode("utf-8", "surrogatepass")
                at += n
                pages.append((float(w), float(h), text))
        except (KeyError, TypeError, ValueError):
            raise _refuse(self._message("protocol", label)) from None
        return pages

    def render(
        self, data: bytes, label: str, pages: list[tuple[int, float, int]], budget_pixels: int
    ) -> list[tuple[int, Any]]:
        """(page number, RGB photo) for each of ``pages`` ((number, scale, expected pixels)) drawn
        within ``budget_pixels``."""
        from PIL import Image

        request = {"op": "render", "label": label, "pages": pages, "budget_pixels": budget_pixels}
        out: list[tuple[int, Any]] = []
        wanted = {n for n, _, _ in pages}
        channels = {"RGB": 3, "RGBA": 4, "RGBX": 4, "L": 1}
        for header, payload in self.request(request, data):
            try:
                n, w, h, stride, mode = (
                    header["page"],
                    header["width"],
                    header["height"],
                    header["stride"],
                    header["mode"],
                )
                if n not in wanted or mode not in channels or w <= 0 or h <= 0:
                    raise ValueError
                if stride < w * channels[mode] or len(payload) != stride * h:
                    raise ValueError
                image = Image.frombuffer(mode, (w, h), payload, "raw", mode, stride, 1).convert("RGB")
            except (KeyError, TypeError, ValueError):
                raise _refuse(self._message("protocol", label)) from None
            out.append((n, image))
        return out


POOL = PdfPool()
atexit.register(lambda: POOL.close())


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]) if len(sys.argv) > 1 else PDF_MEMORY_BYTES))
