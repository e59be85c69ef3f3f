"""What a caller hands in — a path, bytes or a binary file — read within a size cap, and the
words every limit is said in.

Every problem becomes a :class:`MediaError` that names the file (its ``label``) and says what
is wrong. A path is checked with ``stat()`` before a single byte is read.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

from assistant.errors import MediaError
from assistant.settings import MB

TOO_LARGE = "too large, send a smaller file"
# The first bytes of a file that say what it is (see :mod:`assistant.media.sniff`).
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
