"""Recordings: opened with PyAV within the stream cap, decoded to mono float32 samples.

:func:`load_audio` takes WAV, MP3, Ogg/Opus, WebM, M4A, FLAC and whatever else FFmpeg reads
as sound; every problem is a :class:`MediaError` that names the file and says what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import av
import numpy as np

from assistant.errors import MediaError
from assistant.media.decode import (
    HEADER_SLACK_S,
    Decoded,
    decode_frames,
    header_seconds,
    open_capped,
)
from assistant.media.source import format_seconds, label_for, looks_like, open_input
from assistant.settings import MAX_AUDIO_BYTES, MAX_AUDIO_SECONDS

AUDIO_HINT = "Use WAV, MP3, Ogg/Opus, WebM, M4A or FLAC."
_NOT_AUDIO = {"HTML", "XML", "PDF", "ZIP archive", "text"}


def open_audio(source, max_bytes: int | None, label: str):
    """(container, first audio stream); every failure is a MediaError naming the cause."""
    target, head = open_input(source, max_bytes, label)
    seen = looks_like(head)
    if seen and (seen.endswith(" image") or seen in _NOT_AUDIO):
        raise MediaError(f"{label} is not audio (looks like {seen}). {AUDIO_HINT}")
    container = open_capped(
        target, label, seen, f"is not a supported audio file (unrecognised content). {AUDIO_HINT}"
    )
    if not container.streams.audio:
        video = bool(container.streams.video)
        container.close()
        why = " (a video without sound)" if video else ""
        raise MediaError(f"{label} has no audio track{why}")
    return container, container.streams.audio[0]


def _frames(container, stream, label: str) -> Iterator[Any]:
    """Decoded frames (see :func:`~assistant.media.decode.decode_frames`); only a stream
    yielding nothing but errors is corrupt."""
    tally = Decoded()
    yield from decode_frames(container, stream, tally)
    if tally.frames == 0 and tally.errors:
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
    label = label_for(source, name, "audio")
    container, stream = open_audio(source, max_bytes, label)
    over = f"over the {format_seconds(max_seconds)} limit" if max_seconds else ""
    cap = int(max_seconds * sampling_rate) if max_seconds else None
    chunks, total = [], 0
    with container:
        known = header_seconds(container, stream)
        if max_seconds and known is not None and known > max_seconds + HEADER_SLACK_S:
            raise MediaError(f"{label} is {format_seconds(known)} long, {over}")
        try:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sampling_rate)
            for frame in _frames(container, stream, label):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += chunks[-1].size
                if cap is not None and total > cap:
                    raise MediaError(f"{label} is longer than the {format_seconds(max_seconds or 0)} limit")
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
        raise MediaError(f"{label} is {format_seconds(samples.size / sampling_rate)} long, {over}")
    return samples
