"""The text in a picture, read by OCR (PP-OCRv4 through ``rapidocr-onnxruntime``), for models
that cannot see pictures and for scanned PDF pages.

    read_text(image).text  # lines in reading order

Bounded like every decode: the picture is downscaled to ``MAX_SIDE`` on its longest edge (the
detector itself works at 736 px on the shorter one) before any model runs, so a call costs a
fraction of a second to a few seconds on 2 cores whatever was uploaded. One engine per process,
made on first use; calls take turns (onnxruntime sessions are not re-entrant here) and use at
most ``THREADS`` cores, so OCR never takes the whole machine from the chat model.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from assistant.errors import MediaError

MAX_SIDE = 2000  # px; a phone photo's text stays legible, an 8000-px scan costs no more
MIN_SIDE = 16  # px; smaller holds no readable text
MIN_SCORE = 0.5  # recognitions below this confidence are dropped (noise, textures)
THREADS = 2

_engine: Any = None
_engine_lock = threading.Lock()  # making the engine
_call_lock = threading.Lock()  # one recognition at a time


@dataclass(frozen=True)
class OcrText:
    text: str  # the lines, top to bottom; words on one line left to right
    lines: int
    seconds: float
    pixels: int  # of the picture as read (after downscaling)


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("rapidocr_onnxruntime") is not None


def _get_engine() -> Any:
    global _engine
    with _engine_lock:
        if _engine is None:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError as exc:
                raise MediaError("OCR is not installed here (rapidocr-onnxruntime)") from exc
            _engine = RapidOCR(intra_op_num_threads=THREADS, inter_op_num_threads=1, print_verbose=False)
        return _engine


def read_text(image) -> OcrText:
    """The text in ``image`` (a PIL image), in reading order; empty when there is none."""
    import numpy as np
    from PIL import Image

    started = time.perf_counter()
    picture = image.convert("RGB")
    if min(picture.size) < MIN_SIDE:
        return OcrText("", 0, 0.0, picture.width * picture.height)
    if max(picture.size) > MAX_SIDE:
        picture = picture.copy()
        picture.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    pixels = picture.width * picture.height
    engine = _get_engine()
    array = np.asarray(picture)[:, :, ::-1].copy()  # RapidOCR takes OpenCV's BGR
    try:
        with _call_lock:
            found, _ = engine(array)
    except Exception as exc:  # onnxruntime or OpenCV failing on an odd picture
        raise MediaError(f"the text in this picture could not be read ({type(exc).__name__})") from exc
    lines = reading_order(
        [(box, text) for box, text, score in (found or []) if float(score) >= MIN_SCORE and text.strip()]
    )
    return OcrText("\n".join(lines), len(lines), time.perf_counter() - started, pixels)


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
