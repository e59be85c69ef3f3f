"""Video clips: validation, uniform frame sampling and the sound track, with PyAV.

:func:`load_clip` turns an MP4, WebM, MOV or MKV file (a path or bytes) into a :class:`Clip`:
frames sampled uniformly over the clip (``fps`` per second, at most ``max_frames``), each
downscaled like a photo (longest side ``max_side``) with its time in seconds, and the sound
track as 16 kHz mono samples for the speech recognizer. Every problem — too big, too long, too
many pixels (in the header or in any decoded frame), too many streams, no video stream, a
corrupt file, a codec FFmpeg cannot decode, more decoding work than any clip should need — is a
:class:`MediaError` naming the file and saying what is wrong.

Size and length caps alone do not bound the work: a 90 KB clip can hold 3,250 frames behind
one keyframe, and a seek then lands back on it for every sampled frame. So every decode runs
against a :class:`DecodeWork` budget (frames and pixels decoded, packets demuxed, seeks, CPU
seconds of the decoding thread), and a seek that lands where decoding already was turns
seeking off until a later keyframe is seen: such a clip is decoded straight through, once.

No torch here (the page and the API import this module).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from assistant.errors import MediaError
from assistant.media.audio import load_audio
from assistant.media.decode import (
    HEADER_SLACK_S,
    Decoded,
    decode_frames,
    header_seconds,
    is_cover_art,
    open_capped,
)
from assistant.media.source import format_megapixels, format_seconds, label_for, looks_like, open_input
from assistant.settings import (
    MAX_VIDEO_BYTES,
    MAX_VIDEO_PIXELS,
    MAX_VIDEO_SECONDS,
    VIDEO_FPS,
    VIDEO_FRAMES,
    VIDEO_FRAMES_CAP,
    VIDEO_MAX_SIDE,
)

log = logging.getLogger(__name__)

VIDEO_HINT = "Send an MP4, WebM, MOV or MKV video."
# Sniffed kinds that can hold a video stream; anything else named .mp4 is something else.
_CONTAINERS = {"MP4 media", "WebM/Matroska media", "M4A audio"}
_MIME = {"MP4 media": "video/mp4", "WebM/Matroska media": "video/webm", "M4A audio": "video/mp4"}
# Seek instead of decoding through when the next sampled frame is further ahead than this many
# keyframe intervals (as seen so far in the clip; SEEK_GAP_S until two keyframes were seen):
# a seek lands on the keyframe before the target, so it pays once a whole interval is skipped.
SEEK_GAP_S = 5.0
SEEK_INTERVALS = 1.5
# Decode keyframes only once the sampled times are this many keyframe intervals apart.
KEYFRAME_SPACING = 1.5
# The work sampling one clip may cost, whatever its size and length. Decoded straight
# through, a 600-s clip at 60 fps is 36,000 frames; 16 gigapixels is ~1,900 4K or ~7,700 1080p
# frames (20-60 s of H.264 decoding on 2 cores): enough for a 10-minute 1080p screen recording
# with a keyframe every 10 s (~4,800 frames decoded to sample it) or a minute of 4K with the
# same spacing. The CPU seconds are the decoding thread's own (demuxing, seeking, converting;
# FFmpeg's frame threads are bounded by the pixels).
MAX_DECODED_FRAMES = 40_000
MAX_DECODED_PIXELS = 16_000_000_000
MAX_DEMUXED_PACKETS = 100_000
MAX_SEEKS = 4 * VIDEO_FRAMES_CAP + 16
MAX_DECODE_CPU_S = 30.0


@dataclass(frozen=True)
class Clip:
    """A clip as a model reads it: sampled frames with their times, and what was heard."""

    name: str
    frames: tuple[Image.Image, ...]
    timestamps: tuple[float, ...]  # seconds from the start, one per frame
    duration_s: float
    source_fps: float  # the file's own frame rate (0 when it does not say)
    size: tuple[int, int]  # the file's frame size (width, height), before downscaling
    audio: np.ndarray | None = field(default=None, repr=False)  # 16 kHz mono; None: no sound track
    mime: str = "video/mp4"
    source: Any = field(default=b"", repr=False)  # the file (path or bytes), for servers that take video
    transcript: str | None = None  # what is said in the clip, once heard

    def file_bytes(self) -> bytes:
        if isinstance(self.source, (str, os.PathLike)):
            return Path(self.source).read_bytes()
        return bytes(self.source)

    @property
    def digest(self) -> str:
        """Content hash of the frames as sampled (the prefix cache tells clips apart by it)."""
        h = hashlib.blake2b(digest_size=16)
        for t, frame in zip(self.timestamps, self.frames, strict=True):
            h.update(f"{t:.3f}:{frame.size}".encode())
            h.update(frame.tobytes())
        return h.hexdigest()

    @property
    def sampled_fps(self) -> float:
        """Frames per second as sampled (what a video processor is told)."""
        if len(self.frames) < 2 or self.duration_s <= 0:
            return 1.0
        return len(self.frames) / self.duration_s

    def describe(self) -> str:
        """One line a model (or a person) reads about the clip."""
        w, h = self.size
        sound = "with sound" if self.audio is not None else "without sound"
        return f"video {self.name}: {format_seconds(self.duration_s)}, {w}x{h}, {sound}"


class DecodeWork:
    """What decoding one clip has cost so far, against fixed caps; over one -> MediaError.

    The defaults are read when the budget is made (the module constants)."""

    def __init__(
        self,
        label: str = "video",
        *,
        max_frames: int | None = None,
        max_pixels: int | None = None,
        max_packets: int | None = None,
        max_seeks: int | None = None,
        max_cpu_s: float | None = None,
    ) -> None:
        self.label = label
        self.max_frames = MAX_DECODED_FRAMES if max_frames is None else max_frames
        self.max_pixels = MAX_DECODED_PIXELS if max_pixels is None else max_pixels
        self.max_packets = MAX_DEMUXED_PACKETS if max_packets is None else max_packets
        self.max_seeks = MAX_SEEKS if max_seeks is None else max_seeks
        self.max_cpu_s = MAX_DECODE_CPU_S if max_cpu_s is None else max_cpu_s
        self.frames = self.pixels = self.packets = self.seeks = 0
        self._cpu_start: float | None = None  # the decoding thread's CPU clock when it began
        self._cpu_spent = 0.0

    @property
    def cpu_s(self) -> float:
        """CPU seconds the decoding thread has spent since it first read or sought (the budget
        may be made on another thread)."""
        if self._cpu_start is not None:
            self._cpu_spent = time.thread_time() - self._cpu_start
        return self._cpu_spent

    def _over(self, what: str) -> MediaError:
        return MediaError(
            f"{self.label} needs too much decoding to be sampled ({what}): its keyframes are "
            "too far apart or it is damaged. Re-encode it with a keyframe every few seconds, "
            "or send a shorter or smaller clip"
        )

    def _start(self) -> None:
        if self._cpu_start is None:
            self._cpu_start = time.thread_time()

    def packet(self) -> None:
        self._start()
        self.packets += 1
        if self.packets > self.max_packets:
            raise self._over(f"over {self.max_packets:,} packets read")
        if self.cpu_s > self.max_cpu_s:
            raise self._over(f"over {self.max_cpu_s:g} s of CPU")

    def frame(self, width: int, height: int) -> None:
        self.frames += 1
        self.pixels += max(0, width) * max(0, height)
        if self.frames > self.max_frames:
            raise self._over(f"over {self.max_frames:,} frames decoded")
        if self.pixels > self.max_pixels:
            raise self._over(f"over {format_megapixels(self.max_pixels)} megapixels decoded")

    def seek(self) -> None:
        self._start()
        self.seeks += 1
        if self.seeks > self.max_seeks:
            raise self._over(f"over {self.max_seeks:,} seeks")


def check_frame(frame, label: str, max_pixels: int | None, header: tuple[int, int]) -> None:
    """A decoded frame within the pixel limit (a stream may change size after its header)."""
    check_size(int(frame.width or 0), int(frame.height or 0), label, max_pixels, header)


def check_size(w: int, h: int, label: str, max_pixels: int | None, header: tuple[int, int]) -> None:
    if max_pixels and w * h > max_pixels:
        said = f" (its header says {header[0]}x{header[1]})" if (w, h) != tuple(header) else ""
        raise MediaError(
            f"{label} has {w}x{h} frames ({format_megapixels(w * h)} megapixels a frame){said}, "
            f"over the {format_megapixels(max_pixels)}-megapixel limit: send a smaller video"
        )


def sample_times(duration_s: float, fps: float, max_frames: int) -> list[float]:
    """Uniform times over ``duration_s``: ``fps`` per second, at most ``max_frames``, at least one;
    each at the middle of its share of the clip (never the black first frame, never past the end)."""
    count = max(1, min(max_frames, math.floor(duration_s * fps) if fps > 0 else max_frames))
    step = duration_s / count
    return [round((i + 0.5) * step, 3) for i in range(count)]


def _open(source, max_bytes: int | None, label: str):
    """(container, first video stream, what PyAV opened, sniffed kind); every failure a MediaError."""
    target, head = open_input(source, max_bytes, label)  # a path stays a path
    seen = looks_like(head)
    if seen and seen not in _CONTAINERS:
        if seen.endswith(" audio"):
            raise MediaError(f"{label} is audio, not a video (looks like {seen}). {VIDEO_HINT}")
        raise MediaError(f"{label} is not a video (looks like {seen.removesuffix(' image')}). {VIDEO_HINT}")
    container = open_capped(
        target, label, seen, f"is not a supported video (unrecognised content). {VIDEO_HINT}"
    )
    streams = [s for s in container.streams.video if not is_cover_art(s)]
    if not streams:
        audio = bool(container.streams.audio)
        container.close()
        why = "it is a sound recording only" if audio else "it holds no pictures"
        raise MediaError(f"{label} has no video stream ({why})")
    return container, streams[0], target, seen or ""


def _fit_size(w: int, h: int, max_side: int | None) -> tuple[int, int]:
    if not max_side or max(w, h) <= max_side:
        return w, h
    scale = max_side / max(w, h)
    return max(2, round(w * scale)), max(2, round(h * scale))


def _picture(frame, max_side: int | None) -> Image.Image:
    """A decoded frame as an RGB photo no larger than ``max_side`` (scaled by FFmpeg), upright."""
    w, h = _fit_size(frame.width, frame.height, max_side)
    image = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_image()
    rotation = int(getattr(frame, "rotation", 0) or 0) % 360
    if rotation:  # phones record sideways and say so in the display matrix
        image = image.rotate(rotation, expand=True)
    return image


def _sample(
    container,
    stream,
    times: list[float],
    max_side: int | None,
    label: str,
    max_seconds,
    max_pixels: int | None = None,
    work: DecodeWork | None = None,
):
    """(frames, their times): for each target time the first frame at or after it (the last frame
    when the clip ends early). Decodes straight through, seeking over gaps longer than a few
    keyframe intervals. Once the sampled times are 1.5 keyframe intervals apart or more (a
    60-s phone clip with 1-2 s keyframes), only keyframes are decoded: each target then takes
    the keyframe the seek lands on (at most one interval early; its own time is reported), 16
    decoded pictures instead of 1,800.

    A seek that lands at or before where decoding already was (the keyframe before the target
    is one already passed: 130 s behind a single keyframe) is not repeated: seeking stays off
    until a keyframe past that point is decoded, so no stretch is decoded more than twice.
    Every packet, frame and seek is charged to ``work``."""
    work = work or DecodeWork(label)
    codec = stream.codec_context
    header = (int(codec.width or 0), int(codec.height or 0))
    if max_pixels:  # FFmpeg then refuses a larger picture before allocating it
        codec.options = {**dict(codec.options or {}), "max_pixels": str(max_pixels)}
    start = float(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else 0.0
    frames: list[Image.Image] = []
    stamps: list[float] = []
    last = None
    decoded = Decoded()  # frames decoded, and the packets or passes that failed
    target = 0
    position = -1.0
    keys: list[float] = []
    keyframes_only = False
    seeked_from: float | None = None  # where decoding was before the last seek, until it lands
    seek_after: float | None = None  # no seeking until a keyframe later than this is decoded

    def interval() -> float:
        return min((b - a for a, b in zip(keys, keys[1:])), default=SEEK_GAP_S)  # seeks skip some

    def far(gap: float) -> bool:
        return gap > max(0.5, SEEK_INTERVALS * interval())

    def may_seek() -> bool:
        return seek_after is None and bool(stream.time_base)

    def take(frame, t: float) -> None:
        frames.append(_picture(frame, max_side))
        stamps.append(round(max(t, 0.0), 3))

    def bad_packet() -> None:  # a larger picture than allowed is one: the decoder says its size
        check_size(int(codec.width or 0), int(codec.height or 0), label, max_pixels, header)

    try:
        while target < len(times):
            if may_seek() and (keyframes_only or far(times[target] - position)):
                work.seek()
                seeked_from = position
                container.seek(int((times[target] + start) / stream.time_base), stream=stream, backward=True)
            restarted = False
            for frame in decode_frames(
                container, stream, decoded, on_packet=work.packet, on_bad_packet=bad_packet
            ):
                work.frame(frame.width, frame.height)
                check_frame(frame, label, max_pixels, header)  # before it is converted
                if frame.time is None:
                    continue
                t = float(frame.time) - start
                if max_seconds and t > max_seconds + HEADER_SLACK_S:
                    raise MediaError(f"{label} is longer than the {format_seconds(max_seconds)} limit")
                if seeked_from is not None:  # the first frame after a seek: did it help?
                    if t <= seeked_from + 1e-3:
                        seek_after = seeked_from
                    seeked_from = None
                position, last = t, frame
                if frame.key_frame:
                    if not keys or t > keys[-1]:
                        keys.append(t)
                    if seek_after is not None and t > seek_after + 1e-3:
                        seek_after = None
                if keyframes_only:
                    if not stamps or t > stamps[-1]:
                        take(frame, t)
                        target += 1
                while target < len(times) and t >= times[target] - 1e-3:
                    take(frame, t)
                    target += 1
                if target >= len(times):
                    break
                if (
                    not keyframes_only
                    and len(keys) > 1
                    and _spacing(times, target) >= KEYFRAME_SPACING * interval()
                ):
                    keyframes_only = True
                    codec.skip_frame = "NONKEY"
                if may_seek() and (keyframes_only or far(times[target] - t)):
                    restarted = True
                    break
            if not restarted:
                break
    except MediaError:
        raise
    except Exception:
        decoded.errors += 1
    if target < len(times) and last is not None and (not stamps or position > stamps[-1]):
        take(last, position)  # the clip is shorter than its header said
    if not frames:
        why = "no picture could be decoded" if work.frames == 0 and decoded.errors else "it holds no frames"
        raise MediaError(f"{label} is corrupt ({why})")
    return frames, stamps


def _spacing(times: list[float], target: int) -> float:
    """The smallest gap between the sampled times still to come."""
    rest = times[max(0, target - 1) :]
    return min((b - a for a, b in zip(rest, rest[1:])), default=float("inf"))


def _sound(target, label: str, max_seconds: float | None) -> np.ndarray | None:
    """The sound track as 16 kHz mono samples; None when there is none (or it cannot be decoded:
    the pictures still are the clip)."""
    if isinstance(target, io.BytesIO):
        target.seek(0)
    try:
        limit = max_seconds + 5 if max_seconds else None  # the length was checked on the pictures
        return load_audio(target, max_bytes=None, max_seconds=limit, name=label)
    except MediaError as exc:
        if "no audio track" not in str(exc):
            log.warning("%s: the sound track is skipped (%s)", label, exc)
        return None


def load_clip(
    source,
    *,
    max_bytes: int | None = MAX_VIDEO_BYTES,
    max_seconds: float | None = MAX_VIDEO_SECONDS,
    max_pixels: int | None = MAX_VIDEO_PIXELS,
    max_frames: int = VIDEO_FRAMES,
    fps: float = VIDEO_FPS,
    max_side: int | None = VIDEO_MAX_SIDE,
    with_audio: bool = True,
    name: str | None = None,
    work: DecodeWork | None = None,
) -> Clip:
    """A validated clip: frames sampled uniformly, downscaled, timed; the sound track decoded.
    The decoding is charged to ``work`` (a fresh :class:`DecodeWork` by default)."""
    label = label_for(source, name, "video")
    max_frames = max(1, min(int(max_frames), VIDEO_FRAMES_CAP))
    container, stream, target, seen = _open(source, max_bytes, label)
    with container:
        codec = stream.codec_context
        if codec is None or not getattr(codec, "name", None):
            raise MediaError(f"{label} uses a video codec that cannot be decoded here. {VIDEO_HINT}")
        w, h = int(codec.width or 0), int(codec.height or 0)
        if w <= 0 or h <= 0:
            raise MediaError(f"{label} has no picture size (a damaged video stream)")
        if max_pixels and w * h > max_pixels:
            raise MediaError(
                f"{label} is {w}x{h} ({format_megapixels(w * h)} megapixels a frame), over the "
                f"{format_megapixels(max_pixels)}-megapixel limit: send a smaller video"
            )
        known = header_seconds(container, stream)
        if max_seconds and known is not None and known > max_seconds + HEADER_SLACK_S:
            raise MediaError(
                f"{label} is {format_seconds(known)} long, over the {format_seconds(max_seconds)} limit"
            )
        stream.thread_type = "AUTO"
        duration = known if known and known > 0 else (max_seconds or MAX_VIDEO_SECONDS)
        times = sample_times(duration, fps, max_frames)
        work = work or DecodeWork(label)
        work.label = label
        frames, stamps = _sample(container, stream, times, max_side, label, max_seconds, max_pixels, work)
        if not known:  # no duration in the headers: what was decoded tells it
            duration = max(stamps[-1], 0.04)
        source_fps = float(stream.average_rate or 0)
    audio = _sound(target, label, max_seconds) if with_audio else None
    return Clip(
        name=label,
        frames=tuple(frames),
        timestamps=tuple(stamps),
        duration_s=float(duration),
        source_fps=source_fps,
        size=(w, h),
        audio=audio,
        mime=_MIME.get(seen, "video/mp4"),
        source=source if isinstance(source, (str, os.PathLike)) else target.getvalue(),
    )


def frames_as_images(clip: Clip, count: int) -> tuple[list[Image.Image], str]:
    """For a model without video input: ``count`` of the clip's frames spread over it, and the
    text that says which moment each one shows."""
    count = max(1, min(count, len(clip.frames)))
    picks = (
        [round(i * (len(clip.frames) - 1) / max(1, count - 1)) for i in range(count)] if count > 1 else [0]
    )
    picks = sorted(set(picks))
    times = ", ".join(f"{format_seconds(clip.timestamps[i])}" for i in picks)
    note = f"[{clip.describe()}; the {len(picks)} pictures are frames at {times}]"
    return [clip.frames[i] for i in picks], note
