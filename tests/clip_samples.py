"""Video clips made in the tests with ffmpeg: real photos (scikit-image) shown one after the
other, with espeak-ng speech as the sound track, so frames and transcripts can be checked."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from tests.speech_samples import make_speech

SPOKEN = "The cat is sleeping on the red sofa."


def photos(folder: Path) -> list[Path]:
    """Two real photos: an astronaut, then a cat."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, pixels in (("astronaut", data.astronaut()), ("cat", data.chelsea())):
        path = folder / f"{name}.png"
        if not path.exists():
            Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def make_clip(
    path: Path,
    *,
    seconds_each: float = 3.0,
    size: tuple[int, int] = (640, 480),
    speech: str | None = SPOKEN,
    fmt: str = "mp4",
    fps: int = 25,
    order: tuple[int, ...] = (0, 1),
    gop: int | None = None,
) -> Path:
    """A clip showing the photos in ``order`` for ``seconds_each`` each, with ``speech`` (or silent)."""
    path = Path(path)
    stills = photos(path.parent / "photos")
    w, h = size
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
    for i in order:
        cmd += ["-loop", "1", "-t", str(seconds_each), "-framerate", str(fps), "-i", str(stills[i])]
    chains = "".join(f"[{k}:v]scale={w}:{h},setsar=1[v{k}];" for k in range(len(order)))
    joined = "".join(f"[v{k}]" for k in range(len(order)))
    graph = f"{chains}{joined}concat=n={len(order)}:v=1:a=0,format=yuv420p[v]"
    cmd += ["-filter_complex", graph, "-map", "[v]"]
    if speech:
        wav = make_speech(speech, path.with_name(path.stem + ".speech.wav"))
        cmd[cmd.index("-filter_complex") : cmd.index("-filter_complex")] = ["-i", str(wav)]
        cmd += ["-map", f"{len(order)}:a"]
    video = (
        ["-c:v", "libx264", "-preset", "ultrafast"] if fmt in ("mp4", "mov", "mkv") else ["-c:v", "libvpx"]
    )
    video += ["-g", str(gop)] if gop else []  # keyframe interval, in frames
    audio = (["-c:a", "aac"] if fmt in ("mp4", "mov") else ["-c:a", "libopus"]) if speech else []
    cmd += [*video, "-r", str(fps), *audio, str(path)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return path


def mean_colour(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.float32).mean(axis=(0, 1))


# --------------------------------------------------------------------------- hostile clips (issue 29)


def _ffmpeg(*args: str, timeout: float = 300) -> None:
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)


def single_keyframe_clip(path: Path, seconds: float = 130, size: str = "320x180", fps: int = 25) -> Path:
    """A black H.264 clip with one keyframe at the start and none after (~90 KB for 130 s)."""
    _ffmpeg(
        "-f", "lavfi", "-i", f"color=c=black:s={size}:r={fps}", "-t", str(seconds),
        "-c:v", "libx264", "-x264-params", "keyint=100000:min-keyint=100000:scenecut=0",
        "-pix_fmt", "yuv420p", str(path),
    )  # fmt: skip
    return Path(path)


def many_streams_clip(path: Path, streams: int = 999) -> Path:
    """A 1-s clip whose one tiny H.264 track is stored ``streams`` times (MP4 or MKV by suffix)."""
    path = Path(path)
    one = path.with_name(path.stem + ".one.mp4")
    _ffmpeg(
        "-f", "lavfi", "-i", "color=c=black:s=320x180:r=25", "-t", "1",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", str(one),
    )  # fmt: skip
    maps = [arg for _ in range(streams) for arg in ("-map", "0:v")]
    _ffmpeg("-i", str(one), *maps, "-c", "copy", str(path))
    return path


def resizing_clip(path: Path, header: str = "64x64", frames: str = "7680x4320") -> Path:
    """An MP4 whose header says ``header`` while its later frames are ``frames`` (two H.264
    streams, each with its own SPS, joined end to end: the container keeps the first one's)."""
    path = Path(path)
    parts = []
    for size in (header, frames):
        part = path.with_name(f"{path.stem}.{size}.h264")
        _ffmpeg(
            "-f", "lavfi", "-i", f"color=c=gray:s={size}:r=25", "-t", "0.2",
            "-c:v", "libx264", "-preset", "ultrafast", "-f", "h264", str(part),
        )  # fmt: skip
        parts.append(part.read_bytes())
    joined = path.with_name(path.stem + ".joined.h264")
    joined.write_bytes(b"".join(parts))
    _ffmpeg("-r", "25", "-i", str(joined), "-c", "copy", str(path))
    return path
