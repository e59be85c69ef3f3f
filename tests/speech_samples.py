"""Synthesize test speech with espeak-ng (no recordings, no downloads).

Reused by the speech tests, the benchmark and the web/API tests:

    make_speech("Turn on the lights.", tmp_path / "q.webm", voice="en-us", fmt="webm")
    speech_samples("Turn on the lights.")  # float32 samples at 16 kHz

espeak-ng writes a 22.05 kHz WAV; sox resamples it to 16 kHz mono 16-bit (what a phone or a
browser would send after its own processing), and ffmpeg packs it into the asked container.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

# container -> ffmpeg codec arguments (webm/ogg carry Opus like a browser's MediaRecorder).
FORMATS: dict[str, list[str]] = {
    "wav": [],  # sox output as is
    "flac": ["-c:a", "flac"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k"],
    "webm": ["-c:a", "libopus", "-b:a", "32k"],
    "ogg": ["-c:a", "libopus", "-b:a", "32k"],
    "m4a": ["-c:a", "aac", "-b:a", "64k"],
}

# espeak-ng voices whose speech Whisper base understands, with their ISO 639-1 code.
VOICES = {"en-us": "en", "es": "es", "fr-fr": "fr", "de": "de"}

# A few short "voice query" sentences per language, with a number spelled out. espeak-ng's
# French and German are hard for Whisper base, especially alone (2-3 s clips come back as Thai or
# English): these were picked among candidates for being intelligible when spoken together.
SENTENCES = {
    "en": [
        "What is the weather like in Paris today?",
        "Please describe the picture I just sent you.",
        "How many calories are in a banana?",
        "Set a timer for ten minutes.",
    ],
    "es": [
        "¿Qué tiempo hace hoy en Madrid?",
        "Por favor, describe la foto que te acabo de enviar.",
        "¿Cuántas calorías tiene un plátano?",
        "Pon un temporizador de diez minutos.",
    ],
    "fr": [
        "Bonjour, je voudrais réserver une table pour ce soir.",
        "Peux-tu décrire la photo que je viens d'envoyer?",
        "Combien de calories y a-t-il dans une banane?",
        "Mets un minuteur de dix minutes.",
    ],
    "de": [
        "Guten Morgen, wie geht es dir?",
        "Bitte beschreibe das Bild, das ich dir geschickt habe.",
        "Ich möchte einen Tisch für heute Abend reservieren.",
        "Stell einen Timer auf zehn Minuten.",
    ],
}


def have_tools() -> bool:
    """True when espeak-ng, sox and ffmpeg are all on PATH (tests skip otherwise)."""
    return all(shutil.which(tool) for tool in ("espeak-ng", "sox", "ffmpeg"))


def make_speech(
    text: str,
    path: str | Path,
    voice: str = "en-us",
    fmt: str = "wav",
    speed: int = 140,
    sampling_rate: int = 16000,
    dither: bool = True,
) -> Path:
    """Speak ``text`` with espeak-ng into ``path`` (a ``fmt`` container) and return the path."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_name(path.stem + ".espeak.wav")
    wav = path if fmt == "wav" else path.with_name(path.stem + ".16k.wav")
    try:
        _run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text])
        no_dither = [] if dither else ["-D"]  # sox's dither is random: the same text, other samples
        _run(["sox", *no_dither, str(raw), "-r", str(sampling_rate), "-c", "1", "-b", "16", str(wav)])
        if fmt != "wav":
            _run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), *FORMATS[fmt], str(path)])
    finally:
        raw.unlink(missing_ok=True)
        if wav != path:
            wav.unlink(missing_ok=True)
    return path


def speech_samples(text: str, voice: str = "en-us", speed: int = 140) -> np.ndarray:
    """``text`` spoken by espeak-ng as 16-kHz mono float32 samples, the same on every run."""
    with tempfile.TemporaryDirectory() as folder:
        path = make_speech(text, Path(folder) / "s.wav", voice=voice, speed=speed, dither=False)
        with wave.open(str(path)) as clip:
            return np.frombuffer(clip.readframes(clip.getnframes()), np.int16).astype(np.float32) / 32768


def make_silence(path: str | Path, seconds: float = 3.0, sampling_rate: int = 16000) -> Path:
    """A WAV of digital silence (what an accidental mic click sends)."""
    path = Path(path)
    _run(["sox", "-n", "-r", str(sampling_rate), "-c", "1", "-b", "16", str(path), "trim", "0", str(seconds)])
    return path


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({result.returncode}): {result.stderr.strip()}")
