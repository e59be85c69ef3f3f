"""The text in a picture, read by OCR (PP-OCRv4 through ``rapidocr-onnxruntime``), for models
that cannot see pictures and for scanned PDF pages.

    read_text(image).text  # lines in reading order, joined with newlines

Bounded like every decode: before any model runs the picture is made RGB and downscaled to at
most ``MAX_SIDE`` on its longest edge and ``MAX_PIXELS`` in all (the detector runs on every one
of them: its cost follows the pixels), so a call costs a fraction of a second to a few seconds
on 2 cores whatever was uploaded. ``deadline_s`` bounds it in time as well: the wait for the
engine counts against it, and a recognition still running when it passes is stopped between two
of onnxruntime's operators. One engine per process, made on first use; calls take turns (it
holds per-call state) and use at most ``THREADS`` cores, so OCR never takes the whole machine
from the chat model.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from assistant.errors import MediaError
from assistant.media.images import fit, to_rgb
from assistant.media.source import format_seconds

# px; a phone photo's text stays legible. Also RapidOCR's own max_side_len, so it never
# resizes again behind our back.
MAX_SIDE = 2000
# 3 MP: a 2000x1500 photo whole; a square scan goes down to 1732 px (measured ~5 s on 2 cores).
MAX_PIXELS = 3_000_000
MIN_SIDE = 16  # px; smaller holds no readable text
MIN_SCORE = 0.5  # recognitions below this confidence are dropped (noise, textures)
THREADS = 2
# The direction classifier's own threshold for turning a line over (its config's cls_thresh).
_TURNED_SCORE = 0.9

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OcrText:
    text: str  # the lines, top to bottom; words on one line left to right
    lines: int
    seconds: float  # the whole call: preparing, waiting for the engine, reading
    pixels: int  # of the picture as read (after downscaling); 0 when nothing was read


def available() -> bool:
    """Whether OCR can run here (``rapidocr-onnxruntime`` is installed)."""
    return importlib.util.find_spec("rapidocr_onnxruntime") is not None


class _Session:
    """An onnxruntime session that runs with the current call's RunOptions, so a timer can stop
    a run that outlives its deadline (RapidOCR passes none of its own)."""

    def __init__(self, session: Any, engine: _Engine):
        self._session, self._engine = session, engine

    def run(self, output_names, input_feed, run_options=None):
        return self._session.run(output_names, input_feed, run_options or self._engine.options)

    def __getattr__(self, name: str) -> Any:  # inputs, outputs, metadata: the real session's
        return getattr(self._session, name)


class _Classifier:
    """RapidOCR's direction classifier, counting the lines it turned over: most of them turned
    means the whole picture is upside down, and its reading order runs the other way."""

    def __init__(self, classifier: Any, engine: _Engine):
        self._classifier, self._engine = classifier, engine

    def __call__(self, crops):
        crops, found, elapsed = self._classifier(crops)
        for label, score in found or []:
            self._engine.seen += 1
            self._engine.turned += int(label == "180" and score >= _TURNED_SCORE)
        return crops, found, elapsed


class _Engine:
    """RapidOCR with a stop for each run and a count of the lines it turned over."""

    def __init__(self) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError:
            raise MediaError("OCR is not installed here (rapidocr-onnxruntime is missing)") from None
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        threads = max(1, min(THREADS, cores))  # RapidOCR ignores a count over os.cpu_count()
        try:
            self.ocr = RapidOCR(
                intra_op_num_threads=threads,
                inter_op_num_threads=1,
                text_score=MIN_SCORE,
                print_verbose=False,
            )
        except Exception as exc:  # a damaged model file, an onnxruntime that will not load
            log.warning("OCR engine failed to start", exc_info=True)
            raise MediaError(f"OCR could not start here ({type(exc).__name__})") from None
        self.options: Any = None
        self.seen = self.turned = 0
        # RapidOCR 1.4's layout: each stage holds an OrtInferSession whose .session is
        # onnxruntime's. Another layout only loses the stop mid-run (the deadline still bounds
        # the wait and is checked before the run).
        self.stoppable = 0
        for stage in ("text_det", "text_cls", "text_rec"):
            part = getattr(self.ocr, stage, None)
            for name in ("infer", "session"):
                holder = getattr(part, name, None)
                if hasattr(getattr(holder, "session", None), "run"):
                    holder.session = _Session(holder.session, self)  # type: ignore[union-attr]
                    self.stoppable += 1
        if hasattr(self.ocr, "text_cls"):
            self.ocr.text_cls = _Classifier(self.ocr.text_cls, self)

    def __call__(self, bgr: np.ndarray, seconds: float | None) -> tuple[list, bool]:
        """(RapidOCR's [box, text, score] results, whether the picture is upside down)."""
        import onnxruntime

        self.options = onnxruntime.RunOptions()
        self.seen = self.turned = 0
        timer = None
        if seconds is not None:
            timer = threading.Timer(seconds, setattr, (self.options, "terminate", True))
            timer.daemon = True
            timer.start()
        try:
            found, _ = self.ocr(bgr)
        finally:
            if timer is not None:
                timer.cancel()
            self.options = None
        return list(found or []), self.seen > 0 and self.turned * 2 > self.seen


_engine: _Engine | None = None
_lock = threading.Lock()  # making the engine, and one recognition at a time


def _get_engine() -> _Engine:
    """The process's engine, made on first use; the caller holds ``_lock``."""
    global _engine
    if _engine is None:
        _engine = _Engine()
    return _engine


def prepare(image: Image.Image) -> Image.Image:
    """``image`` as the engine reads it: RGB (transparency on white), at most ``MAX_SIDE`` on
    its longest edge and ``MAX_PIXELS`` in all."""
    picture = to_rgb(image)
    w, h = picture.size
    long_side, short_side = max(w, h), min(w, h)
    side = min(MAX_SIDE, long_side, math.floor(long_side * math.sqrt(MAX_PIXELS / max(1, w * h))))
    # images.fit rounds the short side: step down until the rounded size is within the cap.
    while side > 1 and side * max(1, round(short_side * side / long_side)) > MAX_PIXELS:
        side -= 1
    return fit(picture, side)


def read_text(image: Image.Image, *, deadline_s: float | None = None) -> OcrText:
    """The text in ``image`` (a PIL image), in reading order; empty when there is none.

    ``deadline_s``: seconds this call may take, waiting for the engine included (None: no time
    limit, the pixel caps alone bound it). Past it, a :class:`MediaError`; so is any failure of
    the engine itself.
    """
    started = time.monotonic()
    picture = prepare(image)
    if min(picture.size) < MIN_SIDE:  # before and after downscaling: a thin strip has no text
        return OcrText("", 0, time.monotonic() - started, 0)
    bgr = np.ascontiguousarray(np.asarray(picture)[:, :, ::-1])  # RapidOCR takes OpenCV's BGR
    left = None if deadline_s is None else deadline_s - (time.monotonic() - started)
    if left is not None and left <= 0:
        raise MediaError(
            f"OCR had no time left to read this picture (a {format_seconds(deadline_s or 0)} limit)"
        )
    if not _lock.acquire(timeout=-1 if left is None else left):
        raise MediaError(
            f"OCR is busy with other pictures: this one waited {format_seconds(time.monotonic() - started)} "
            "without its turn; try again in a moment"
        )
    try:
        engine = _get_engine()
        left = None if deadline_s is None else max(0.0, deadline_s - (time.monotonic() - started))
        try:
            found, upside_down = engine(bgr, left)
        except Exception as exc:  # onnxruntime or OpenCV failing on an odd picture, or stopped
            stopped = deadline_s is not None and time.monotonic() - started >= deadline_s
            if stopped:
                raise MediaError(
                    f"reading the text in this picture took longer than the {format_seconds(deadline_s or 0)} "
                    "allowed; send a smaller or simpler picture"
                ) from None
            log.warning("OCR failed on a %dx%d picture", *picture.size, exc_info=True)
            raise MediaError(
                f"the text in this picture could not be read: OCR failed ({type(exc).__name__})"
            ) from None
    finally:
        _lock.release()
    boxes = [(box, text) for box, text, score in found if float(score) >= MIN_SCORE and text.strip()]
    if upside_down:  # read it as if turned the right way up
        w, h = picture.size
        boxes = [([(w - x, h - y) for x, y in points], text) for points, text in boxes]
    lines = reading_order(boxes)
    return OcrText("\n".join(lines), len(lines), time.monotonic() - started, picture.width * picture.height)


def reading_order(boxes: list[tuple[Any, str]]) -> list[str]:
    """Boxes (four corner points, text) as lines: top to bottom, and boxes whose heights overlap
    by more than half joined left to right into one line (a receipt's "Milk ... 1.20")."""
    spans = []
    for points, text in boxes:
        ys = [p[1] for p in points]
        xs = [p[0] for p in points]
        spans.append((min(ys), max(ys), min(xs), text.strip()))
    spans.sort(key=lambda s: (s[0] + s[1]) / 2)
    lines: list[list[tuple[float, float, float, str]]] = []
    for span in spans:
        if lines:
            top = min(s[0] for s in lines[-1])
            bottom = max(s[1] for s in lines[-1])
            overlap = min(bottom, span[1]) - max(top, span[0])
            if overlap > 0.5 * min(bottom - top, span[1] - span[0]):
                lines[-1].append(span)
                continue
        lines.append([span])
    return [" ".join(s[3] for s in sorted(line, key=lambda s: s[2])) for line in lines]
