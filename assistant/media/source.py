"""What a caller hands in — a path, bytes or a binary file: read within a size cap, judged by
its content (never its name), and the words every limit is said in.

- reading: :func:`read_bytes`, :func:`open_input` (a path is checked with ``stat()`` before a
  single byte is read); every problem becomes a :class:`MediaError` that names the file (its
  ``label``) and says what is wrong;
- what a file is: the first bytes in words a person knows (:func:`looks_like`), how a file is
  routed (:func:`kind_of`), and what a browser is told it is when it is served
  (:func:`content_type`, :func:`suffix_for`);
- how limits are said: :func:`format_size`, :func:`format_seconds`, :func:`format_megapixels`.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable
from pathlib import Path

import av
from PIL import Image

from assistant.errors import MediaError
from assistant.media.decode import STREAM_CAP, is_cover_art
from assistant.settings import MB

TOO_LARGE = "too large, send a smaller file"
# The first bytes of a file that say what it is (see :func:`looks_like`).
SNIFF_BYTES = 4096


def format_size(n: float) -> str:
    """20971520 -> '20 MB', 32715571 -> '31.2 MB', 900 -> '900 bytes'."""
    for unit, scale in (("MB", MB), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{int(n)} bytes"


def format_seconds(s: float) -> str:
    """90 -> '1.5 min', 2.5 -> '2.5 s', 3.0 -> '3 s'."""
    if s >= 60:
        return f"{s / 60:.1f}".removesuffix(".0") + " min"
    return f"{s:.1f}".removesuffix(".0") + " s"


def format_megapixels(n: float) -> str:
    """A pixel count in megapixels, as a limit says it: 33177600 -> '33.2'."""
    return f"{n / 1e6:.1f}".removesuffix(".0")


def label_for(source, name: str | None, default: str) -> str:
    """What a message calls the file: ``name``, else a path's file name, else ``default``."""
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name or default
    return default


def check_file(path, max_bytes: int | None, label: str) -> None:
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
        raise MediaError(
            f"{label} is {format_size(st.st_size)}, over the {format_size(max_bytes)} limit: {TOO_LARGE}"
        )


def read_bytes(source, max_bytes: int | None, label: str) -> bytes:
    """The bytes of a path, bytes-like object or binary file, size cap checked first."""
    limit = max_bytes + 1 if max_bytes else -1  # read one byte past the cap to detect "over"
    if isinstance(source, (str, os.PathLike)):
        check_file(source, max_bytes, label)
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
        shown = f"{format_size(len(data))}, over" if isinstance(source, bytes) else "over"
        raise MediaError(f"{label} is {shown} the {format_size(max_bytes)} limit: {TOO_LARGE}")
    return data


def open_input(source, max_bytes: int | None, label: str) -> tuple[str | io.BytesIO, bytes]:
    """(what PyAV opens, first bytes): a path goes to FFmpeg's own I/O, the rest via BytesIO."""
    if isinstance(source, (str, os.PathLike)):
        check_file(source, max_bytes, label)
        try:
            with open(source, "rb") as f:
                return str(source), f.read(SNIFF_BYTES)
        except OSError as e:
            raise MediaError(f"{label} could not be read ({e.strerror or e})") from None
    data = read_bytes(source, max_bytes, label)
    return io.BytesIO(data), data[:SNIFF_BYTES]


# --------------------------------------------------------------------------- what it is

# Pillow format names we accept. MPO (the multi-picture JPEG many phones write) has no opener
# of its own: Pillow's JPEG opener returns it, so it is only in the accepted list.
OPEN_FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]
IMAGE_FORMATS = (*OPEN_FORMATS, "MPO")
# What looks_like() calls the images we accept.
SUPPORTED_IMAGES = {f"{n} image" for n in ("JPEG", "PNG", "GIF", "WebP", "BMP", "TIFF")}
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".text")


def looks_like(head: bytes) -> str | None:
    """What the first bytes of a file look like, in words a person knows (or None)."""
    h = head[:SNIFF_BYTES]
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
                head = f.read(SNIFF_BYTES)
        else:
            head = bytes(source[:SNIFF_BYTES])
    except (OSError, TypeError):
        return UNKNOWN_TYPE
    return _SERVED.get(looks_like(head) or "", UNKNOWN_TYPE)


def content_type(source) -> str:
    """The media type of a file (path or bytes) judged by its content, never its name;
    ``application/octet-stream`` for anything that is not a photo or recording we accept."""
    return _served(source)[0]


def suffix_for(source) -> str:
    """The file name extension that says what the content is (``.bin`` when unknown)."""
    return _served(source)[1]


# --------------------------------------------------------------------------- routing


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
                head = f.read(SNIFF_BYTES)
            opener = lambda: str(src)  # noqa: E731
        else:
            data = bytes(src)
            head = data[:SNIFF_BYTES]
            opener = lambda: io.BytesIO(data)  # noqa: E731
    except (OSError, TypeError):
        return "unknown"
    if not head:
        return "unknown"
    seen = looks_like(head) or ""
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
        with Image.open(opener(), formats=OPEN_FORMATS):
            return "image"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "image"
    except Exception:
        pass
    try:
        with av.open(opener(), metadata_errors="ignore", container_options=STREAM_CAP) as c:
            if any(not is_cover_art(s) for s in c.streams.video):
                return "video"
            return "audio" if c.streams.audio else "unknown"
    except av.error.MemoryError:
        return "video"  # MP4 over the stream cap: the clip check says so
    except Exception:
        return "unknown"
