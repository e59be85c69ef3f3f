"""Where the app keeps what it builds once and reuses (joined Whisper weights, Piper voices, a
GGUF dequantized into a checkpoint, llama-server): ``ASSISTANT_CACHE_DIR`` or the user cache,
outside any checkout. And the lock that lets concurrent first runs build it only once."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

try:  # POSIX: serialise a one-time build across processes; elsewhere atomic rename suffices
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def default_cache_dir() -> Path:
    env = os.environ.get("ASSISTANT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("multimodal-assistant", appauthor=False))


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Held until the block ends, by one process at a time (the file stays, empty)."""
    with open(path, "a") as file:
        if fcntl is not None:
            fcntl.flock(file, fcntl.LOCK_EX)  # released when the file is closed
        yield
