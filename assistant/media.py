"""Image and audio validation + normalisation for everything a user uploads.

Every problem with an upload becomes a :class:`MediaError` whose message names the file and
says what is wrong; nothing else escapes. Images come back as RGB ``PIL.Image`` no larger
than ``max_side``; audio comes back as mono float32 samples at ``sampling_rate``.

No torch here: the UI and API import this module and must stay light.
"""

from __future__ import annotations

import io
import os
import re
import stat
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageFile, ImageOps

from assistant.errors import MediaError
from assistant.settings import (
    IMAGE_MAX_SIDE,
    MAX_AUDIO_BYTES,
    MAX_AUDIO_SECONDS,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    MB,
)

# Pillow format names we accept. MPO (the multi-picture JPEG many phones write) has no opener
# of its own: Pillow's JPEG opener returns it, so it is only in the accepted list.
_OPEN_FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]
IMAGE_FORMATS = (*_OPEN_FORMATS, "MPO")
_SUPPORTED_SNIFFED = {f"{n} image" for n in ("JPEG", "PNG", "GIF", "WebP", "BMP", "TIFF")}
_IMAGE_HINT = "Use JPEG, PNG, WebP, GIF, BMP or TIFF."
_AUDIO_HINT = "Use WAV, MP3, Ogg/Opus, WebM, M4A or FLAC."
_NOT_AUDIO = {"HTML", "XML", "PDF", "ZIP archive", "text"}
_SNIFF_BYTES = 4096
# Streams a recording or clip may hold (picture, sound, a few metadata or subtitle tracks).
# FFmpeg is told to stop one past it while opening, before it probes each stream with a decoder
# of its own (999 H.264 streams cost ~1 GB in that probe alone).
MAX_STREAMS = 8
STREAM_CAP = {"max_streams": str(MAX_STREAMS + 1)}
TOO_LARGE = "too large, send a smaller file"
# Container durations can be estimates (MP3 bitrate): only trust them past this slack.
_HEADER_SLACK_S = 1.0
# Truncated images must fail rather than come back half grey, so Pillow's process-wide
# ImageFile.LOAD_TRUNCATED_IMAGES must stay False (its default). This module never sets it.


# --------------------------------------------------------------------------- helpers


def _size(n: float) -> str:
    """20971520 -> '20 MB', 32715571 -> '31.2 MB', 900 -> '900 bytes'."""
    for unit, scale in (("MB", MB), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{int(n)} bytes"


def _seconds(s: float) -> str:
    if s >= 60:
        return f"{s / 60:.1f}".removesuffix(".0") + " min"
    return f"{s:.1f}".removesuffix(".0") + " s"


def _megapixels(n: float) -> str:
    return f"{n / 1e6:.1f}".removesuffix(".0")


def _sniff(head: bytes) -> str | None:
    """What the first bytes of a file look like, in words a person knows (or None)."""
    h = head[:_SNIFF_BYTES]
    low = h.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    ftyp = h[8:12] if h[4:8] == b"ftyp" else b""
    table = (
        (h.startswith(b"\xff\xd8\xff"), "JPEG image"),
        (h.startswith(b"\x89PNG\r\n\x1a\n"), "PNG image"),
        (h[:6] in (b"GIF87a", b"GIF89a"), "GIF image"),
        (h[:4] == b"RIFF" and h[8:12] == b"WEBP", "WebP image"),
        # "BM" alone is too weak (any text could start so): also check the DIB header size.
        (
            h[:2] == b"BM" and int.from_bytes(h[14:18], "little") in (12, 40, 52, 56, 64, 108, 124),
            "BMP image",
        ),
        (h[:4] in (b"II*\x00", b"MM\x00*"), "TIFF image"),
        (ftyp in (b"heic", b"heix", b"mif1", b"msf1", b"heif", b"hevc"), "HEIC/HEIF image"),
        (ftyp in (b"avif", b"avis"), "AVIF image"),
        (h.startswith(b"\x00\x00\x01\x00"), "ICO image"),
        (h.startswith(b"8BPS"), "Photoshop image"),
        (h.startswith(b"\xff\x0a") or h[4:12] == b"JXL \r\n\x87\n", "JPEG XL image"),
        (low.startswith((b"<!doctype html", b"<html", b"<head", b"<body")), "HTML"),
        (b"<svg" in low[:1024], "SVG/XML image"),
        (low.startswith(b"<?xml"), "XML"),
        (h.startswith(b"%PDF"), "PDF"),
        (h.startswith(b"PK\x03\x04"), "ZIP archive"),
        (h[:4] == b"RIFF" and h[8:12] == b"WAVE", "WAV audio"),
        (h.startswith(b"ID3") or h[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"), "MP3 audio"),
        (h.startswith(b"OggS"), "Ogg audio"),
        (h.startswith(b"fLaC"), "FLAC audio"),
        (h[:2] in (b"\xff\xf1", b"\xff\xf9"), "AAC audio"),
        (ftyp[:3] == b"M4A", "M4A audio"),
        (bool(ftyp), "MP4 media"),
        (h.startswith(b"\x1a\x45\xdf\xa3"), "WebM/Matroska media"),
    )
    for hit, what in table:
        if hit:
            return what
    if h and b"\x00" not in h:
        try:
            h.decode("utf-8")
            return "text"
        except UnicodeDecodeError as e:
            if e.start >= len(h) - 3:  # a multi-byte character cut by the sniff window
                return "text"
    return None


def _label(source, name: str | None, default: str) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name or default
    return default


def _check_file(path, max_bytes: int | None, label: str) -> None:
    """Existence and size from stat(), before a single byte is read."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MediaError(f"{label} was not found") from None
    except OSError as e:
        raise MediaError(f"{label} could not be read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise MediaError(f"{label} is not a file")
    if st.st_size == 0:
        raise MediaError(f"{label} is empty (0 bytes)")
    if max_bytes and st.st_size > max_bytes:
        raise MediaError(f"{label} is {_size(st.st_size)}, over the {_size(max_bytes)} limit: {TOO_LARGE}")


def _read(source, max_bytes: int | None, label: str) -> bytes:
    """The bytes of a path, bytes-like object or binary file, size cap checked first."""
    limit = max_bytes + 1 if max_bytes else -1  # read one byte past the cap to detect "over"
    if isinstance(source, (str, os.PathLike)):
        _check_file(source, max_bytes, label)
        try:
            with open(source, "rb") as f:
                data = f.read(limit)
        except OSError as e:
            raise MediaError(f"{label} could not be read ({e.strerror or e})") from None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = source = bytes(source)
    elif hasattr(source, "read"):
        data = source.read(limit)
    else:
        raise MediaError(f"{label}: expected a file path or bytes, not {type(source).__name__}")
    if not data:
        raise MediaError(f"{label} is empty (0 bytes)")
    if max_bytes and len(data) > max_bytes:
        # A stream was read only up to the cap, so its full size is unknown.
        shown = f"{_size(len(data))}, over" if isinstance(source, bytes) else "over"
        raise MediaError(f"{label} is {shown} the {_size(max_bytes)} limit: {TOO_LARGE}")
    return data


# --------------------------------------------------------------------------- images


def _check_pixels(img: Image.Image, label: str, max_pixels: int | None) -> None:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise MediaError(f"{label} has no pixels ({w}x{h})")
    if max_pixels and w * h > max_pixels:
        raise MediaError(
            f"{label} has {_megapixels(w * h)} megapixels ({w}x{h}), "
            f"over the {_megapixels(max_pixels)}-megapixel limit"
        )


def _open_image(data: bytes, label: str, max_pixels: int | None) -> ImageFile.ImageFile:
    """Header-only open: the format allow-list and the pixel cap come before any decoding."""
    try:
        img = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Pillow's own guard (2 x Image.MAX_IMAGE_PIXELS, process-wide) fired inside open().
        m = re.search(r"\((\d+) pixels\)", str(e))
        count = f"{_megapixels(int(m.group(1)))} megapixels" if m else "too many pixels"
        limit = f", over the {_megapixels(max_pixels)}-megapixel limit" if max_pixels else ""
        raise MediaError(f"{label} has {count}{limit}") from None
    except Exception:
        seen = _sniff(data)
        if seen in _SUPPORTED_SNIFFED:
            raise MediaError(f"{label} is truncated or corrupt (a damaged {seen})") from None
        looks = f"looks like {seen.removesuffix(' image')}" if seen else "unrecognised content"
        raise MediaError(f"{label} is not a supported image ({looks}). {_IMAGE_HINT}") from None
    if img.format not in IMAGE_FORMATS:  # belt and braces: open() was already restricted
        raise MediaError(f"{label} is not a supported image ({img.format}). {_IMAGE_HINT}")
    _check_pixels(img, label, max_pixels)
    return img


def _draft(img: Image.Image, max_side: int) -> None:
    """Let libjpeg decode a big JPEG at 1/2, 1/4 or 1/8 scale: far faster, far less memory.

    Pillow picks the strongest reduction that still gives at least the requested size, so the
    long edge stays >= max_side and the final Lanczos resize keeps full quality.
    """
    w, h = img.size
    long_side = max(w, h)
    if img.format in ("JPEG", "MPO") and long_side >= 2 * max_side:
        # Ceiling division, so the requested size never rounds below the target.
        img.draft("RGB", (-(-w * max_side // long_side), -(-h * max_side // long_side)))


HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_STRIP_PIXELS = 4_000_000  # high-bit-depth pixels converted at a time


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


def _to_rgb(img: Image.Image) -> Image.Image:
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


def _fit(img: Image.Image, max_side: int | None) -> Image.Image:
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
) -> Image.Image:
    """A validated RGB image, EXIF-oriented, longest side <= ``max_side`` (0/None: keep size).

    ``source``: a path, bytes, a binary file object, or a ``PIL.Image`` (then only the pixel
    cap, orientation, RGB and downscale apply). Animated GIF/WebP give their first frame.
    """
    label = _label(source, name, "image")
    if isinstance(source, Image.Image):
        img = source
        _check_pixels(img, label, max_pixels)
    else:
        img = _open_image(_read(source, max_bytes, label), label, max_pixels)
        if max_side:
            _draft(img, max_side)
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
            img = _fit(_to_8bit(img), max_side)
        return _fit(_to_rgb(img), max_side)
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


# --------------------------------------------------------------------------- audio


def _audio_input(source, max_bytes: int | None, label: str):
    """(what PyAV opens, first bytes): a path goes to FFmpeg's own I/O, the rest via BytesIO."""
    if isinstance(source, (str, os.PathLike)):
        _check_file(source, max_bytes, label)
        try:
            with open(source, "rb") as f:
                return str(source), f.read(_SNIFF_BYTES)
        except OSError as e:
            raise MediaError(f"{label} could not be read ({e.strerror or e})") from None
    data = _read(source, max_bytes, label)
    return io.BytesIO(data), data[:_SNIFF_BYTES]


def _open_audio(source, max_bytes: int | None, label: str):
    """(container, first audio stream); every failure is a MediaError naming the cause."""
    target, head = _audio_input(source, max_bytes, label)
    seen = _sniff(head)
    if seen and (seen.endswith(" image") or seen in _NOT_AUDIO):
        raise MediaError(f"{label} is not audio (looks like {seen}). {_AUDIO_HINT}")
    try:
        container = av.open(target, mode="r", metadata_errors="ignore", container_options=STREAM_CAP)
    except av.error.MemoryError:  # MP4 over the stream cap
        raise MediaError(too_many_streams(label)) from None
    except Exception:
        if seen:  # it announces itself as audio/media, yet FFmpeg cannot parse it
            raise MediaError(f"{label} is truncated or corrupt (a damaged {seen} file)") from None
        raise MediaError(
            f"{label} is not a supported audio file (unrecognised content). {_AUDIO_HINT}"
        ) from None
    if len(container.streams) > MAX_STREAMS:
        container.close()
        raise MediaError(too_many_streams(label))
    if not container.streams.audio:
        video = bool(container.streams.video)
        container.close()
        why = " (a video without sound)" if video else ""
        raise MediaError(f"{label} has no audio track{why}")
    return container, container.streams.audio[0]


def _header_seconds(container, stream) -> float | None:
    """Duration from the headers, or None (WebM recorded by browsers usually has none)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration and container.duration > 0:
        return container.duration / av.time_base
    return None


def _frames(container, stream, label: str):
    """Decoded frames. A damaged packet is skipped (as faster-whisper does) and a damaged
    container ends the stream early; only a stream yielding nothing but errors is corrupt."""
    decoded = errors = 0
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except Exception:
                errors += 1
                continue
            for frame in frames:
                decoded += 1
                yield frame
    except Exception:
        errors += 1
    if decoded == 0 and errors:
        raise MediaError(f"{label} is corrupt (no audio could be decoded)")


def load_audio(
    source,
    *,
    max_bytes: int | None = MAX_AUDIO_BYTES,
    max_seconds: float | None = MAX_AUDIO_SECONDS,
    sampling_rate: int = 16000,
    name: str | None = None,
) -> np.ndarray:
    """Mono float32 samples at ``sampling_rate`` from WAV, MP3, Ogg/Opus, WebM, M4A, FLAC, ...

    ``source``: a path, bytes or a binary file object. The length cap is checked on the
    headers when they carry a duration, otherwise during decoding, which stops as soon as the
    cap is passed (a 3-hour recording is not decoded). Silence is valid audio.
    """
    label = _label(source, name, "audio")
    container, stream = _open_audio(source, max_bytes, label)
    over = f"over the {_seconds(max_seconds)} limit" if max_seconds else ""
    cap = int(max_seconds * sampling_rate) if max_seconds else None
    chunks, total = [], 0
    with container:
        known = _header_seconds(container, stream)
        if max_seconds and known is not None and known > max_seconds + _HEADER_SLACK_S:
            raise MediaError(f"{label} is {_seconds(known)} long, {over}")
        try:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sampling_rate)
            for frame in _frames(container, stream, label):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += chunks[-1].size
                if cap is not None and total > cap:
                    raise MediaError(f"{label} is longer than the {_seconds(max_seconds or 0)} limit")
            for out in resampler.resample(None):  # flush the resampler's buffered tail
                chunks.append(out.to_ndarray().reshape(-1))
        except MediaError:
            raise
        except Exception:  # e.g. the sample format changes mid-stream
            raise MediaError(f"{label} is corrupt or in an audio format that cannot be decoded") from None
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if samples.size == 0:
        raise MediaError(f"{label} contains no audio (0 samples)")
    if cap is not None and samples.size > cap:
        raise MediaError(f"{label} is {_seconds(samples.size / sampling_rate)} long, {over}")
    return samples


# --------------------------------------------------------------------------- serving

# What a browser is told a file is, and the name a saved copy gets, from its content alone.
_SERVED = {
    "JPEG image": ("image/jpeg", ".jpg"),
    "PNG image": ("image/png", ".png"),
    "GIF image": ("image/gif", ".gif"),
    "WebP image": ("image/webp", ".webp"),
    "BMP image": ("image/bmp", ".bmp"),
    "TIFF image": ("image/tiff", ".tiff"),
    "WAV audio": ("audio/wav", ".wav"),
    "MP3 audio": ("audio/mpeg", ".mp3"),
    "Ogg audio": ("audio/ogg", ".ogg"),
    "FLAC audio": ("audio/flac", ".flac"),
    "AAC audio": ("audio/aac", ".aac"),
    "M4A audio": ("audio/mp4", ".m4a"),
    "WebM/Matroska media": ("audio/webm", ".webm"),
    "MP4 media": ("video/mp4", ".mp4"),
    "PDF": ("application/pdf", ".pdf"),
}
UNKNOWN_TYPE = ("application/octet-stream", ".bin")


def _served(source) -> tuple[str, str]:
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                head = f.read(_SNIFF_BYTES)
        else:
            head = bytes(source[:_SNIFF_BYTES])
    except (OSError, TypeError):
        return UNKNOWN_TYPE
    return _SERVED.get(_sniff(head) or "", UNKNOWN_TYPE)


def content_type(source) -> str:
    """The media type of a file (path or bytes) judged by its content, never its name;
    ``application/octet-stream`` for anything that is not a photo or recording we accept."""
    return _served(source)[0]


def suffix_for(source) -> str:
    """The file name extension that says what the content is (``.bin`` when unknown)."""
    return _served(source)[1]


# --------------------------------------------------------------------------- routing


TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".text")


def _cover_art(stream) -> bool:
    """A still picture stored with a song (an MP4's or Matroska's cover), not a video."""
    try:
        return bool(stream.disposition & av.stream.Disposition.attached_pic)
    except Exception:
        return False


def kind_of(path_or_bytes, name: str | None = None) -> str:
    """ "image", "audio", "video", "document" or "unknown", judged by content (magic bytes,
    Pillow, PyAV probe). A PDF is a "document", and so is UTF-8 text named .txt or .md; a
    container with a picture stream (not only cover art) is a "video", with sound only "audio".

    Recognisable but unsupported or damaged images (SVG, HEIC, a truncated PNG) count as
    "image", and recognisable but undecodable audio as "audio", so that routing them to
    load_image/load_audio tells the person the specific reason. The name (``name``, else the
    path's) decides nothing but whether text is a document: extensions lie.
    """
    src = path_or_bytes
    opener: Callable[[], str | io.BytesIO]
    try:
        if isinstance(src, (str, os.PathLike)):
            with open(src, "rb") as f:
                head = f.read(_SNIFF_BYTES)
            opener = lambda: str(src)  # noqa: E731
        else:
            data = bytes(src)
            head = data[:_SNIFF_BYTES]
            opener = lambda: io.BytesIO(data)  # noqa: E731
    except (OSError, TypeError):
        return "unknown"
    if not head:
        return "unknown"
    seen = _sniff(head) or ""
    if seen.endswith(" image"):
        return "image"
    if seen.endswith(" audio"):
        return "audio"
    if seen == "PDF" or b"%PDF-" in head[:1024]:
        return "document"
    if seen == "text":  # text is a document only when it is named so (else it is junk)
        named = name or (str(src) if isinstance(src, (str, os.PathLike)) else "")
        return "document" if Path(named).suffix.lower() in TEXT_SUFFIXES else "unknown"
    try:
        with Image.open(opener(), formats=_OPEN_FORMATS):
            return "image"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "image"
    except Exception:
        pass
    try:
        with av.open(opener(), metadata_errors="ignore", container_options=STREAM_CAP) as c:
            if any(not _cover_art(s) for s in c.streams.video):
                return "video"
            return "audio" if c.streams.audio else "unknown"
    except av.error.MemoryError:
        return "video"  # MP4 over the stream cap: the clip check says so
    except Exception:
        return "unknown"


def too_many_streams(label: str) -> str:
    return (
        f"{label} holds more than {MAX_STREAMS} streams: a recording or clip needs one picture "
        "track and its sound. Send it on its own"
    )
