"""Synthesized speech as the bytes of an audio file, written while it is being made.

    for data in encode(chunks, "mp3"):   # mp3 | opus | aac | flac | wav | pcm
        send(data)

As OpenAI's ``/audio/speech`` answers: 24 kHz mono; ``pcm`` is raw 16-bit little-endian
samples, ``wav`` a RIFF header (sizes unknown while streaming, as OpenAI sends them) then the
same samples, the others are encoded by PyAV (FFmpeg's encoders: LAME, Opus in Ogg, AAC in
ADTS, FLAC), each packet sent as soon as the encoder gives it.
"""

from __future__ import annotations

import struct
from collections.abc import Generator, Iterable, Iterator
from typing import Any

import numpy as np

from assistant.speech.types import SpeechChunk

RATE = 24000
# format -> (container, codec, media type)
ENCODED = {
    "mp3": ("mp3", "libmp3lame", "audio/mpeg"),
    "opus": ("ogg", "libopus", "audio/ogg"),
    "aac": ("adts", "aac", "audio/aac"),
    "flac": ("flac", "flac", "audio/flac"),
}
MEDIA_TYPES = {**{k: v[2] for k, v in ENCODED.items()}, "wav": "audio/wav", "pcm": "audio/pcm"}
FORMATS = tuple(MEDIA_TYPES)  # mp3 opus aac flac wav pcm


def resample(samples: np.ndarray, rate: int, to: int = RATE) -> np.ndarray:
    """Linear interpolation to ``to`` Hz (speech from 16-48 kHz voices; enough for a voice)."""
    if rate == to or len(samples) == 0:
        return samples.astype(np.float32, copy=False)
    n = max(1, round(len(samples) * to / rate))
    return np.interp(np.linspace(0, len(samples) - 1, n), np.arange(len(samples)), samples).astype(np.float32)


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def wav_header(rate: int = RATE, data_bytes: int = 0xFFFFFFFF - 36) -> bytes:
    """A 16-bit mono RIFF header; the default sizes say 'unknown, read to the end'."""
    return (
        b"RIFF"
        + struct.pack("<I", min(0xFFFFFFFF, data_bytes + 36))
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def encode(chunks: Iterable[SpeechChunk], fmt: str, rate: int = RATE) -> Generator[bytes, None, None]:
    """The file's bytes, piece by piece, as ``chunks`` come in (closing the iterator stops it)."""
    if fmt in ("pcm", "wav"):
        if fmt == "wav":
            yield wav_header(rate)
        for chunk in chunks:
            yield pcm16(resample(chunk.samples, chunk.sample_rate, rate))
        return
    if fmt not in ENCODED:
        raise ValueError(f"unknown audio format {fmt!r}")
    yield from _encoded(chunks, fmt, rate)


class _Sink:
    """A write-only file for PyAV: what the muxer writes is handed on as it comes."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data

    def flush(self) -> None:
        pass


def _encoded(chunks: Iterable[SpeechChunk], fmt: str, rate: int) -> Iterator[bytes]:
    import av

    container_format, codec, _ = ENCODED[fmt]
    sink = _Sink()
    container = av.open(sink, mode="w", format=container_format)
    try:
        stream: Any = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        if fmt == "mp3":
            stream.bit_rate = 64000
        for chunk in chunks:
            samples = resample(chunk.samples, chunk.sample_rate, rate)
            if len(samples) == 0:
                continue
            frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
            data = sink.take()
            if data:
                yield data
        for packet in stream.encode(None):
            container.mux(packet)
    finally:
        container.close()
    data = sink.take()
    if data:
        yield data
