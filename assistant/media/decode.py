"""Opening and decoding recordings and clips with PyAV: the stream cap, the header duration and
the one packet-decode loop that sound (:mod:`assistant.media.audio`) and pictures
(:mod:`assistant.media.video`) both run.

A damaged packet is skipped and counted (as faster-whisper does) and a container that breaks
off ends the pass (counted too); only the caller knows whether what was decoded is enough.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import av

from assistant.errors import MediaError

# Streams a recording or clip may hold (picture, sound, a few metadata or subtitle tracks).
# FFmpeg is told to stop one past it while opening, before it probes each stream with a decoder
# of its own (999 H.264 streams cost ~1 GB in that probe alone).
MAX_STREAMS = 8
STREAM_CAP = {"max_streams": str(MAX_STREAMS + 1)}
# Container durations can be estimates (MP3 bitrate): only trust them past this slack.
HEADER_SLACK_S = 1.0


def too_many_streams(label: str) -> str:
    return (
        f"{label} holds more than {MAX_STREAMS} streams: a recording or clip needs one picture "
        "track and its sound. Send it on its own"
    )


def open_capped(target, label: str, seen: str | None, unrecognised: str):
    """``target`` opened for reading with at most MAX_STREAMS streams (one over the cap is
    opened: Matroska stops there quietly, MP4 fails with ENOMEM). Every failure is a MediaError;
    ``seen`` is what sniffing took the file for, ``unrecognised`` what to say when nothing did."""
    try:
        container = av.open(target, mode="r", metadata_errors="ignore", container_options=STREAM_CAP)
    except av.error.MemoryError:
        raise MediaError(too_many_streams(label)) from None
    except Exception:
        if seen:  # it announces itself as media, yet FFmpeg cannot parse it
            raise MediaError(f"{label} is truncated or corrupt (a damaged {seen} file)") from None
        raise MediaError(f"{label} {unrecognised}") from None
    if len(container.streams) > MAX_STREAMS:
        container.close()
        raise MediaError(too_many_streams(label))
    return container


def is_cover_art(stream) -> bool:
    """A still picture stored with a song (an MP4's or Matroska's cover), not a video."""
    try:
        return bool(stream.disposition & av.stream.Disposition.attached_pic)
    except Exception:
        return False


def header_seconds(container, stream) -> float | None:
    """Duration from the headers, or None (WebM recorded by browsers usually has none)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration and container.duration > 0:
        return container.duration / av.time_base
    return None


@dataclass
class Decoded:
    """What decoding a stream has met so far, over one or more passes."""

    frames: int = 0  # frames decoded
    errors: int = 0  # packets that would not decode, and passes the container broke off


def decode_frames(
    container,
    stream,
    tally: Decoded,
    *,
    on_packet: Callable[[], None] | None = None,
    on_bad_packet: Callable[[], None] | None = None,
) -> Iterator[Any]:
    """The frames of one pass over ``stream``, demuxed from where ``container`` stands.

    ``on_packet`` runs before each packet is decoded and ``on_bad_packet`` after one fails
    (a work budget, a size check): a :class:`MediaError` they raise ends the pass and reaches
    the caller. Any other failure is counted in ``tally``: a packet that will not decode is
    skipped, a container that breaks off ends the pass.
    """
    try:
        for packet in container.demux(stream):
            if on_packet is not None:
                on_packet()
            try:
                frames = packet.decode()
            except Exception:
                tally.errors += 1
                if on_bad_packet is not None:
                    on_bad_packet()
                continue
            for frame in frames:
                tally.frames += 1
                yield frame
    except MediaError:
        raise
    except Exception:
        tally.errors += 1
