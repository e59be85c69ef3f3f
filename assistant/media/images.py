"""Photos: validated, decoded within a budget, EXIF-oriented, made RGB and downscaled.

:func:`load_image` is the whole path; its steps (:func:`open_image`, :func:`draft_jpeg`,
:func:`to_rgb`, :func:`fit`) are public so a benchmark can time them one by one. Every problem
is a :class:`MediaError` that names the file and says what is wrong.
"""

from __future__ import annotations

import io
import re
import threading
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageFile, ImageOps

from assistant.errors import MediaError
from assistant.media.source import (
    IMAGE_FORMATS,
    OPEN_FORMATS,
    SUPPORTED_IMAGES,
    format_megapixels,
    label_for,
    looks_like,
    read_bytes,
)
from assistant.settings import IMAGE_MAX_SIDE, MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS

IMAGE_HINT = "Use JPEG, PNG, WebP, GIF, BMP or TIFF."
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_STRIP_PIXELS = 4_000_000  # high-bit-depth pixels converted at a time
# Truncated images must fail rather than come back half grey, so Pillow's process-wide
# ImageFile.LOAD_TRUNCATED_IMAGES must stay False (its default). This package never sets it.


def _check_pixels(img: Image.Image, label: str, max_pixels: int | None) -> None:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise MediaError(f"{label} has no pixels ({w}x{h})")
    if max_pixels and w * h > max_pixels:
        raise MediaError(
            f"{label} has {format_megapixels(w * h)} megapixels ({w}x{h}), "
            f"over the {format_megapixels(max_pixels)}-megapixel limit"
        )


def open_image(data: bytes, label: str, max_pixels: int | None) -> ImageFile.ImageFile:
    """Header-only open: the format allow-list and the pixel cap come before any decoding."""
    try:
        img = Image.open(io.BytesIO(data), formats=OPEN_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Pillow's own guard (2 x Image.MAX_IMAGE_PIXELS, process-wide) fired inside open().
        m = re.search(r"\((\d+) pixels\)", str(e))
        count = f"{format_megapixels(int(m.group(1)))} megapixels" if m else "too many pixels"
        limit = f", over the {format_megapixels(max_pixels)}-megapixel limit" if max_pixels else ""
        raise MediaError(f"{label} has {count}{limit}") from None
    except Exception:
        seen = looks_like(data)
        if seen in SUPPORTED_IMAGES:
            raise MediaError(f"{label} is truncated or corrupt (a damaged {seen})") from None
        looks = f"looks like {seen.removesuffix(' image')}" if seen else "unrecognised content"
        raise MediaError(f"{label} is not a supported image ({looks}). {IMAGE_HINT}") from None
    if img.format not in IMAGE_FORMATS:  # belt and braces: open() was already restricted
        raise MediaError(f"{label} is not a supported image ({img.format}). {IMAGE_HINT}")
    _check_pixels(img, label, max_pixels)
    return img


def draft_jpeg(img: Image.Image, max_side: int) -> None:
    """Let libjpeg decode a big JPEG at 1/2, 1/4 or 1/8 scale: far faster, far less memory.

    Pillow picks the strongest reduction that still gives at least the requested size, so the
    long edge stays >= max_side and the final Lanczos resize keeps full quality.
    """
    w, h = img.size
    long_side = max(w, h)
    if img.format in ("JPEG", "MPO") and long_side >= 2 * max_side:
        # Ceiling division, so the requested size never rounds below the target.
        img.draft("RGB", (-(-w * max_side // long_side), -(-h * max_side // long_side)))


def _to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float grey image as 8-bit 'L', scaled rather than clipped.

    Strip by strip, in integers: a 100-megapixel 16-bit PNG costs its own 200 MB plus the 100 MB
    result, instead of float64 copies of the whole (1.9 GB measured before).
    """
    w, h = img.size
    top = float(img.getextrema()[1])  # type: ignore[arg-type]  # one band: (low, high)
    sixteen = img.mode.startswith("I;16") or (img.mode == "I" and top > 255)
    unit_float = img.mode == "F" and top <= 1.0
    out = np.empty((h, w), np.uint8)
    rows = max(1, _STRIP_PIXELS // max(1, w))
    for y in range(0, h, rows):
        a = np.asarray(img.crop((0, y, w, min(h, y + rows))))
        if sixteen:
            a = a // 257  # 65535 -> 255
        elif unit_float:
            a = a * np.float32(255.0)
        out[y : y + rows] = np.clip(a, 0, 255)
    return Image.fromarray(out)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparent pixels become white (as a chat page shows them)."""
    if img.mode in HIGH_DEPTH_MODES:
        # convert() would clip 16-bit values to 0..255 (a nearly white picture): scale instead.
        img = _to_8bit(img)
    if img.mode == "RGB":
        return img
    if img.has_transparency_data:  # RGBA, LA, PA, P/L/RGB with a transparent colour
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def fit(img: Image.Image, max_side: int | None) -> Image.Image:
    """Lanczos down to a longest side of ``max_side`` (0/None, or already small: unchanged)."""
    w, h = img.size
    if not max_side or max(w, h) <= max_side:
        return img
    size = (max(1, round(w * max_side / max(w, h))), max(1, round(h * max_side / max(w, h))))
    # reducing_gap: a cheap box pre-shrink before Lanczos. At 1.5 it already helps from 3x
    # down (12 MP PNG: 128 -> 57 ms) and differs from plain Lanczos by < 1/255 on average.
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=1.5)


def load_image(
    source,
    *,
    max_bytes: int | None = MAX_IMAGE_BYTES,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
    max_side: int | None = IMAGE_MAX_SIDE,
    name: str | None = None,
    draft: bool = True,
) -> Image.Image:
    """A validated RGB image, EXIF-oriented, longest side <= ``max_side`` (0/None: keep size).

    ``source``: a path, bytes, a binary file object, or a ``PIL.Image`` (then only the pixel
    cap, orientation, RGB and downscale apply). Animated GIF/WebP give their first frame.
    ``draft=False`` decodes a big JPEG at full size instead of letting libjpeg scale it down
    (:func:`draft_jpeg`): only for measuring what that saves.
    """
    label = label_for(source, name, "image")
    if isinstance(source, Image.Image):
        img = source
        _check_pixels(img, label, max_pixels)
    else:
        img = open_image(read_bytes(source, max_bytes, label), label, max_pixels)
        if max_side and draft:
            draft_jpeg(img, max_side)
    with DECODES.slot(img.size[0] * img.size[1]):
        return _decode(img, label, max_side)


def _decode(img: Image.Image, label: str, max_side: int | None) -> Image.Image:
    try:
        img.load()  # the full decode happens here, so damage shows up now, not in the model
    except Exception:  # OSError, SyntaxError, ValueError, EOFError, struct.error, ...
        raise MediaError(f"{label} is truncated or corrupt") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:
        pass  # a damaged EXIF block is no reason to refuse a picture that decodes fine
    try:
        if img.mode in HIGH_DEPTH_MODES:  # shrink while grey and 8-bit, then make it RGB
            img = fit(_to_8bit(img), max_side)
        return fit(to_rgb(img), max_side)
    except Exception:
        raise MediaError(
            f"{label} has an unusual pixel format ({img.mode}) that could not be converted to RGB"
        ) from None


class DecodeBudget:
    """Bounds the pixels being decoded at once, over all threads: a decode waits while others
    hold the budget (one alone may always run, however large), so a burst of big images costs a
    bounded amount of memory and leaves cores for everyone else."""

    def __init__(self, pixels: int):
        self.pixels, self.in_flight = pixels, 0
        self._changed = threading.Condition()

    @contextmanager
    def slot(self, pixels: int):
        with self._changed:
            self._changed.wait_for(lambda: self.in_flight == 0 or self.in_flight + pixels <= self.pixels)
            self.in_flight += pixels
        try:
            yield
        finally:
            with self._changed:
                self.in_flight -= pixels
                self._changed.notify_all()


# Two images at the pixel cap at once (about 0.6 GB for 16-bit ones), or many phone photos.
DECODES = DecodeBudget(2 * MAX_IMAGE_PIXELS)
