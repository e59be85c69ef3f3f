"""The media holes of issue 29, one test (or two) per hole, each failing on the code before its fix.

Clips (H4, H7, the frame size) and PDFs (H5) go through the real route where they can:
``POST /v1/chat/completions`` of the whole server stack (app.build_server with a FakeChatModel,
Starlette's TestClient, two logins), with the clip as a ``video_url`` and the PDF as a ``file``
part, both data: URLs. Nothing here asserts on time: work is checked by counters (frames
decoded, seeks, workers started and killed) and memory by resident-set bounds far from both
the old and the new figures; the only clocks are generous limits on threads that, before the
fixes, never returned.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from assistant.errors import MediaError
from assistant.media import documents, video
from tests.clip_samples import many_streams_clip, resizing_clip, single_keyframe_clip
from tests.fakes import FakeChatModel
from tests.pdf_samples import content_bomb, text_pdf
from tests.test_security import basic, server_client

ROOT = Path(__file__).resolve().parent.parent
USERS = {"alice": ("alice", "a"), "bob": ("bob", "b")}
MB = 1024 * 1024
PAGES = [f"Page {n}.\nThe word of page {n} is word{n * 7}." for n in range(1, 13)]


def client_for(tmp_path, **settings):
    fake = FakeChatModel()
    client, _, _ = server_client(tmp_path, model=fake, auth=tuple(USERS.values()), **settings)
    return client, fake


def chat(client, user: str, content: list) -> object:
    body = {"model": "fake", "messages": [{"role": "user", "content": content}]}
    return client.post("/v1/chat/completions", json=body, headers=basic(*USERS[user]))


def video_part(path: Path) -> dict:
    url = "data:video/mp4;base64," + base64.b64encode(Path(path).read_bytes()).decode()
    return {"type": "video_url", "video_url": {"url": url}}


def file_part(data: bytes, filename: str) -> dict:
    url = "data:application/pdf;base64," + base64.b64encode(data).decode()
    return {"type": "file", "file": {"file_data": url, "filename": filename}}


def finishes(call, limit_s: float = 120.0):
    """``call()``'s result, run on a daemon thread: before the fixes some of these never returned
    (a thread spinning for good), so the test fails on the limit rather than hanging."""
    out: dict = {}

    def run():
        try:
            out["value"] = call()
        except BaseException as exc:  # handed to the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit_s)
    assert not thread.is_alive(), f"still running after {limit_s:g} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakRss:
    """This process's resident memory, sampled on a thread while the block runs."""

    def __enter__(self):
        self.before = rss_mb()
        self.peak = self.before
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._done.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.01)

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join(5)

    @property
    def growth_mb(self) -> float:
        return self.peak - self.before


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    return {
        "keyframe": single_keyframe_clip(d / "k.mp4"),
        "streams": many_streams_clip(d / "streams.mp4", 999),
        "streams_mkv": many_streams_clip(d / "streams.mkv", 20),
        "eight": many_streams_clip(d / "eight.mkv", 8),
        "resizing": resizing_clip(d / "resizing.mp4"),
    }


# --------------------------------------------------------------------------- H4: one keyframe


def test_a_clip_behind_one_keyframe_is_answered_through_the_api(tmp_path, hostile):
    """Before: every sampled frame sought back to keyframe 0, for good (a thread at 100%)."""
    client, fake = client_for(tmp_path)
    r = finishes(
        lambda: chat(client, "alice", [{"type": "text", "text": "what?"}, video_part(hostile["keyframe"])])
    )
    assert r.status_code == 200, r.text
    sent = fake.requests[-1].messages[-1]
    assert len(sent.images) == 4  # the fake takes images: 4 of the 16 frames, spread over 130 s
    assert "2.2 min, 320x180" in sent.text and "frames at 4.1 s, 44.7 s, 1.4 min, 2.1 min" in sent.text, (
        sent.text
    )


def test_a_clip_behind_one_keyframe_is_decoded_once_straight_through(hostile):
    work = video.DecodeWork()
    clip = finishes(lambda: video.load_clip(hostile["keyframe"], work=work))
    targets = video.sample_times(clip.duration_s, video.VIDEO_FPS, video.VIDEO_FRAMES)
    assert 129.9 <= clip.duration_s <= 130.1 and len(clip.frames) == 16
    for t, want in zip(clip.timestamps, targets, strict=True):
        assert 0 <= t - want <= 0.05, (clip.timestamps, targets)  # the frame at the target (25 fps)
    # 3,150 frames up to the last target; the one seek that landed back on keyframe 0 costs the
    # ~100 frames before the first target again, and seeking then stays off
    assert 3150 <= work.frames <= 3150 + 110 and work.seeks == 1, (work.frames, work.seeks)
    assert all(np.asarray(f).max() < 40 for f in clip.frames)  # black, as encoded


def test_decoding_is_held_to_a_fixed_work_budget(tmp_path, hostile, monkeypatch):
    k = hostile["keyframe"]
    cases = [
        (video.DecodeWork(max_frames=1000), "over 1,000 frames decoded"),
        (video.DecodeWork(max_pixels=100 * 320 * 180), "megapixels decoded"),
        (video.DecodeWork(max_packets=500), "over 500 packets read"),
        (video.DecodeWork(max_seeks=0), "over 0 seeks"),
        (video.DecodeWork(max_cpu_s=0.0), "over 0 s of CPU"),
    ]
    for work, words in cases:
        with pytest.raises(MediaError) as caught:
            finishes(lambda w=work: video.load_clip(k, work=w))
        message = str(caught.value)
        assert message.startswith("k.mp4 needs too much decoding to be sampled") and words in message, message
        assert work.frames <= 1001 and work.packets <= 3300 and work.seeks <= 1  # it stopped there
    monkeypatch.setattr(video, "MAX_DECODED_FRAMES", 1000)  # the server's own budget, made small
    client, _ = client_for(tmp_path)
    r = finishes(lambda: chat(client, "bob", [video_part(k)]))
    assert r.status_code == 400, r.text
    error = r.json()["error"]["message"]
    assert "needs too much decoding" in error and "over 1,000 frames decoded" in error, error


# --------------------------------------------------------------------------- H7: 999 streams

_PEAK = r"""
import resource, sys
from assistant.media import video
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
try:
    video.load_clip(sys.argv[1])
    print("accepted", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)
except Exception as exc:
    print("refused", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base, exc)
"""


def peak_growth_mb(path: Path) -> tuple[str, float]:
    """(accepted | refused, peak resident growth in MB) of load_clip in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    verdict, growth, *_ = out.stdout.split(maxsplit=2) + ["", ""]
    assert verdict in ("accepted", "refused"), out.stdout + out.stderr
    return verdict, float(growth)


def test_a_clip_with_999_streams_is_refused_before_they_are_probed(tmp_path, hostile):
    """Before: the 999 streams were each probed with a decoder of its own (~1 GB), then the clip
    was accepted."""
    client, _ = client_for(tmp_path)
    for name in ("streams", "streams_mkv"):
        r = chat(client, "alice", [video_part(hostile[name])])
        assert r.status_code == 400, (name, r.text)
        assert "holds more than 8 streams" in r.json()["error"]["message"], r.text
    assert chat(client, "alice", [video_part(hostile["eight"])]).status_code == 200  # 8 is allowed
    verdict, growth = peak_growth_mb(hostile["streams"])
    assert verdict == "refused" and growth < 150, (verdict, growth)  # before: ~950 MB, accepted


_ROUTE = """
import resource, sys
from assistant import media
from assistant.errors import MediaError
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
kind = media.kind_of(sys.argv[1])
try:
    media.load_audio(sys.argv[1])
    heard = "accepted"
except MediaError as exc:
    heard = "streams" if "holds more than 8 streams" in str(exc) else "other"
print(kind, heard, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)
"""


def test_routing_and_transcribing_a_999_stream_file_probe_no_stream(hostile):
    """The page routes an upload by content (media.kind_of) and the audio API opens recordings
    (media.audio.open_audio): both opened the file with every stream probed (~1 GB)."""
    out = subprocess.run(
        [sys.executable, "-c", _ROUTE, str(hostile["streams"])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    kind, heard, growth = out.stdout.split()
    assert (kind, heard) == ("video", "streams"), out.stdout + out.stderr  # the clip check says why
    assert float(growth) < 150, growth


# --------------------------------------------------------------------------- frames bigger than the header


def test_frames_larger_than_the_header_says_are_refused_before_they_are_converted(
    tmp_path, hostile, monkeypatch
):
    """Before: a 64x64 header passed the 4K check and 7680x4320 frames were decoded and kept."""
    converted = []
    picture = video._picture
    monkeypatch.setattr(
        video, "_picture", lambda f, side: converted.append((f.width, f.height)) or picture(f, side)
    )
    client, _ = client_for(tmp_path)
    r = chat(client, "bob", [video_part(hostile["resizing"])])
    assert r.status_code == 400, r.text
    error = r.json()["error"]["message"]
    assert "has 7680x4320 frames" in error and "its header says 64x64" in error, error
    assert all(w * h <= 64 * 64 for w, h in converted), converted
    with pytest.raises(MediaError, match="7680x4320 frames .33.2 megapixels a frame"):
        video.check_frame(SimpleNamespace(width=7680, height=4320), "x.mp4", video.MAX_VIDEO_PIXELS, (64, 64))
    video.check_frame(SimpleNamespace(width=3840, height=2160), "x.mp4", video.MAX_VIDEO_PIXELS, (64, 64))


# --------------------------------------------------------------------------- H5: PDF bombs


def test_a_pdf_content_bomb_is_refused_and_costs_only_its_worker(tmp_path):
    """127 KB whose page content inflates to 64 MB of squares. Before: read in the server's own
    process (+1.7 GB, 9 s) and accepted. Now its worker hits the 1 GB cap and is replaced."""
    client, fake = client_for(tmp_path)
    bomb = content_bomb(64)
    assert len(bomb) < 200_000
    with PeakRss() as memory:
        r = finishes(lambda: chat(client, "alice", [file_part(bomb, "bomb.pdf")]), 300)
    assert r.status_code == 400, r.text
    error = r.json()["error"]["message"]
    assert error.startswith("bomb.pdf cannot be read: the PDF reader stopped on it"), error
    assert "more than 1 GB of memory" in error
    assert memory.growth_mb < 300, memory.growth_mb  # the server's process: before +1,700 MB
    pool = documents.pdf_worker.POOL
    assert pool.killed >= 1 and pool.busy == 0
    r = chat(client, "bob", [{"type": "text", "text": "page 2?"}, file_part(text_pdf(PAGES), "report.pdf")])
    assert r.status_code == 200, r.text  # a fresh worker reads the next one
    assert "word14" in fake.requests[-1].messages[-1].text
    started, killed = pool.started, pool.killed
    again = chat(client, "alice", [file_part(bomb, "again.pdf")])
    assert again.status_code == 400 and "again.pdf cannot be read" in again.json()["error"]["message"]
    assert (pool.started, pool.killed) == (started, killed)  # refused from memory: no worker spent


def the_pool():
    """The server's PDF workers (None on the code before them: one lock, in this process)."""
    return getattr(getattr(documents, "pdf_worker", None), "POOL", None)


def being_read() -> bool:
    """A PDF is being read right now (by a worker, or, before the workers, under the lock)."""
    pool, lock = the_pool(), getattr(documents, "_PDFIUM", None)
    return bool((pool is not None and pool.busy) or (lock is not None and lock.locked()))


def test_a_many_page_bomb_is_stopped_by_its_cpu_limit(tmp_path, monkeypatch):
    """500 pages sharing one content stream that takes ~0.1 s to parse. Before: read page after
    page for a minute or more (every other PDF waiting), then accepted. Now a CPU-time limit per
    document (made 2 s here; 20 s in the server)."""
    pool = the_pool()
    if pool is not None:
        monkeypatch.setattr(pool, "cpu_s", 2.0)
        pool.close()  # fresh workers, counted from here
        started, killed = pool.started, pool.killed
    client, _ = client_for(tmp_path)
    r = finishes(lambda: chat(client, "alice", [file_part(content_bomb(3, pages=500), "slow.pdf")]), 300)
    assert r.status_code == 400, r.text
    error = r.json()["error"]["message"]
    assert error.startswith("slow.pdf takes too long to read (over 2 s of work)"), error
    assert pool is not None and pool.killed == killed + 1 and pool.pids() == []
    doc = documents.load_document(text_pdf(PAGES), name="fine.pdf")  # then a fresh worker
    assert doc.page_count == 12 and pool.started == started + 2
    assert [n for n, _ in documents.render_pages(doc, [1, 12], max_side=200)] == [1, 12]
    from assistant.media import pdf_worker

    walled = pdf_worker.PdfPool(cpu_s=1000.0, wall_s=1.0)  # the wall-clock backstop
    try:
        with pytest.raises(MediaError, match=r"w.pdf takes too long to read \(over 1 s\)"):
            walled.read(content_bomb(3, pages=500), "w.pdf", None, None)
    finally:
        walled.close()


def test_two_users_pdfs_are_read_in_parallel(tmp_path):
    """Before: one process-wide lock, so bob's 12-page PDF waited for all of alice's bomb (a
    minute or more). Now each has a worker; alice's has 20 CPU-s, far more than bob needs."""
    client, fake = client_for(tmp_path)
    answers: dict = {}

    def alice():
        answers["alice"] = chat(client, "alice", [file_part(content_bomb(3, pages=500), "slow.pdf")])

    thread = threading.Thread(target=alice, daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + 120
        while not being_read() and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert being_read(), "alice's PDF was never read"
        r = finishes(lambda: chat(client, "bob", [file_part(text_pdf(PAGES), "report.pdf")]), 60)
        assert r.status_code == 200, r.text
        assert thread.is_alive() and being_read()  # alice's bomb is still being read meanwhile
        assert "word84" in fake.requests[-1].messages[-1].text
    finally:
        pool = the_pool()
        if pool is not None:
            pool.close()  # alice's worker is killed: her request ends now
        thread.join(60)
    assert answers["alice"].status_code == 400
    assert "slow.pdf was not read: the PDF reader was stopped" in answers["alice"].json()["error"]["message"]


def test_the_worker_answers_are_checked(monkeypatch):
    """A worker's answer is data, not trusted: a page of the wrong size is refused."""
    from assistant.media import pdf_worker

    pool = pdf_worker.PdfPool(size=1)
    try:
        doc = documents.Document("r.pdf", "pdf", (documents.Page(1, "", 612, 792),), text_pdf(["x"]))
        monkeypatch.setattr(pdf_worker, "POOL", pool)
        real = pool.request

        def lying(request, data):
            answers = real(request, data)
            return [({**h, "width": h["width"] + 1}, p) for h, p in answers]

        monkeypatch.setattr(pool, "request", lying)
        with pytest.raises(MediaError, match="r.pdf cannot be read: the PDF reader gave a malformed answer"):
            documents.render_pages(doc, [1], max_side=100)
    finally:
        pool.close()
