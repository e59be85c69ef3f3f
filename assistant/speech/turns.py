"""When a spoken turn has ended: Silero VAD for speech and silence, smart-turn for "is that all?".

Fed 16-kHz mono audio in chunks of any size, :class:`TurnDetector` says when speech starts and
when the turn ends. After ``silence_s`` (200 ms) of silence it asks smart-turn v3.2 (Pipecat's
end-of-turn model, BSD-2-Clause, the ONNX file inside the ``pipecat-ai`` wheel) whether the turn
is complete: if so the turn ends at once ("complete"); if not it keeps listening, and a silence
of ``max_wait_s`` (2 s) ends it anyway ("cap"). Speech that resumes starts the count again, and
the next silence asks again. Everything is counted in samples fed, never in wall time, so the
outcome of a stream does not depend on the chunk sizes or the machine.

smart-turn is given what pipecat gives it (``local_smart_turn_v3.py``): the turn from 500 ms
before its speech started to now, its last 8 s, zero-padded at the front to 8 s, normalised
to zero mean and unit variance, as Whisper's 80 log-mel bins (faster-whisper's extractor: it
matches pipecat's vendored numpy code to 7e-6); its output is the probability of "complete".

Both models load once per process, at first use, one intra-op thread each; a call of smart-turn
takes ~90 ms on one core (features included), run inside :meth:`TurnDetector.feed`.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from assistant.errors import MediaError, ModelUnavailable

SAMPLING_RATE = 16000
WINDOW = 512  # samples per Silero VAD step (32 ms), the size its v6 ONNX model takes
CONTEXT = 64  # samples of the previous window it is given in front of each one
SMART_TURN_PACKAGE = "pipecat"  # found by spec: importing pipecat needs its many dependencies
SMART_TURN_FILE = Path("audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx")
SMART_TURN_SECONDS = 8  # the model's input: the last 8 s of the turn

EventKind = Literal["speech_started", "turn_ended"]
EndReason = Literal["complete", "cap"]


@dataclass(frozen=True)
class TurnSettings:
    silence_s: float = 0.2  # silence after speech before smart-turn is asked
    max_wait_s: float = 2.0  # silence that ends a turn whatever smart-turn says
    threshold: float = 0.5  # smart-turn's probability from which a turn is complete (pipecat's)
    vad_threshold: float = 0.5  # Silero's speech probability from which a window is speech
    min_speech_s: float = 0.1  # speech shorter than this (a click, a knock) starts no turn
    preroll_s: float = 0.5  # audio before the speech started that smart-turn sees (pipecat's)

    def __post_init__(self) -> None:
        if not 0 < self.silence_s <= self.max_wait_s:
            raise ValueError("silence_s must be > 0 and at most max_wait_s")
        if not (0 < self.threshold < 1 and 0 < self.vad_threshold < 1):
            raise ValueError("thresholds are probabilities between 0 and 1")


@dataclass(frozen=True)
class TurnEvent:
    """What happened, at ``at`` seconds of audio fed since the detector was made."""

    kind: EventKind
    at: float
    reason: EndReason | None = None  # turn_ended: smart-turn said complete, or the cap
    speech_end: float | None = None  # turn_ended: where its last speech stopped
    probability: float | None = None  # turn_ended: smart-turn's last answer in the turn
    asked: int = 0  # turn_ended: smart-turn calls in the turn
    model_ms: float = 0.0  # turn_ended: wall time those calls took, features included

    @property
    def wait(self) -> float:
        """Seconds of silence the turn waited after its speech stopped (audio time)."""
        return self.at - self.speech_end if self.speech_end is not None else 0.0


class TurnDetector:
    """One audio stream's turns: ``events = detector.feed(chunk)``, a list, often empty.

    Not thread-safe (one stream, one caller); many detectors share the two loaded models."""

    def __init__(self, settings: TurnSettings | None = None, *, model_path: str | Path | None = None):
        self.settings = settings or TurnSettings()
        self._models = _Models.get(model_path)
        s = self.settings
        self._silence_windows = _windows(s.silence_s)
        self._cap_windows = _windows(s.max_wait_s)
        self._min_speech_windows = max(1, _windows(s.min_speech_s))
        self._neg_threshold = max(s.vad_threshold - 0.15, 0.01)  # Silero's own hysteresis
        self._tail = _Tail(SMART_TURN_SECONDS * SAMPLING_RATE)
        self._preroll = int(s.preroll_s * SAMPLING_RATE)
        self._pending = np.zeros(0, np.float32)  # samples not yet a whole VAD window
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._windows_done = 0
        self._reset_turn()

    @property
    def in_turn(self) -> bool:
        return self._in_turn

    def feed(self, chunk: np.ndarray) -> list[TurnEvent]:
        """Take 16-kHz mono samples (float in [-1, 1] or int16); give what they brought about."""
        self._pending = np.concatenate([self._pending, _as_float(chunk)])
        whole = len(self._pending) // WINDOW * WINDOW
        events: list[TurnEvent] = []
        for start in range(0, whole, WINDOW):
            event = self._step(self._pending[start : start + WINDOW])
            if event is not None:
                events.append(event)
        self._pending = self._pending[whole:]
        return events

    def reset(self) -> None:
        """Forget the turn in progress (e.g. the reply started speaking); the VAD state stays."""
        self._reset_turn()
        self._tail.clear()

    def _reset_turn(self) -> None:
        self._in_turn = False
        self._silent = 0  # windows of silence since the last speech in the turn
        self._asked_this_silence = False
        self._asked = 0
        self._model_ms = 0.0
        self._probability: float | None = None
        self._speaking_run = 0  # consecutive speech windows before a turn has started

    def _step(self, window: np.ndarray) -> TurnEvent | None:
        framed = np.concatenate([self._context, window])[None, :]
        speech, self._h, self._c = self._models.speech_probability(framed, self._h, self._c)
        self._context = window[-CONTEXT:]
        self._windows_done += 1
        self._tail.extend(window)
        now = self._windows_done * WINDOW / SAMPLING_RATE
        if not self._in_turn:
            self._speaking_run = self._speaking_run + 1 if speech >= self.settings.vad_threshold else 0
            if len(self._tail) > self._preroll + self._speaking_run * WINDOW:
                self._tail.keep_last(self._preroll + self._speaking_run * WINDOW)  # bounded
            if self._speaking_run < self._min_speech_windows:
                return None
            self._in_turn = True
            return TurnEvent("speech_started", now - self._speaking_run * WINDOW / SAMPLING_RATE)
        if speech >= self.settings.vad_threshold:
            self._silent, self._asked_this_silence = 0, False
            return None
        if speech >= self._neg_threshold and self._silent == 0:
            return None  # between the thresholds, speech goes on until it falls clearly
        self._silent += 1
        speech_end = now - self._silent * WINDOW / SAMPLING_RATE
        if self._silent >= self._cap_windows:
            return self._end("cap", now, speech_end)
        if self._silent >= self._silence_windows and not self._asked_this_silence:
            self._asked_this_silence = True
            started = time.perf_counter()
            self._probability = self._models.turn_complete(self._tail.array())
            self._model_ms += (time.perf_counter() - started) * 1000
            self._asked += 1
            if self._probability >= self.settings.threshold:
                return self._end("complete", now, speech_end)
        return None

    def _end(self, reason: EndReason, now: float, speech_end: float) -> TurnEvent:
        event = TurnEvent(
            "turn_ended", now, reason, speech_end, self._probability, self._asked, self._model_ms
        )
        self.reset()
        return event


def smart_turn_file() -> Path | None:
    """smart-turn v3.2's ONNX file inside the installed ``pipecat-ai`` wheel, or None."""
    spec = importlib.util.find_spec(SMART_TURN_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / SMART_TURN_FILE
        if path.is_file():
            return path
    return None


class _Models:
    """Silero VAD and smart-turn, loaded once per process (per smart-turn file)."""

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _loaded: ClassVar[dict[Path, _Models]] = {}

    def __init__(self, vad: Any, smart_turn: Any):
        from faster_whisper.feature_extractor import FeatureExtractor

        self._vad, self._smart_turn = vad, smart_turn
        self._features = FeatureExtractor(chunk_length=SMART_TURN_SECONDS)

    @classmethod
    def get(cls, model_path: str | Path | None) -> _Models:
        path = Path(model_path) if model_path else smart_turn_file()
        if path is None or not path.is_file():
            where = f" at {path}" if path else ""
            raise ModelUnavailable(
                f"the end-of-turn model smart-turn v3.2 is not installed{where}: run `make run` once, "
                "or `pip install --no-deps -r requirements-nodeps.txt` (it is inside pipecat-ai)"
            )
        with cls._lock:
            if path not in cls._loaded:
                cls._loaded[path] = cls(_session(_silero_file()), _session(path))
            return cls._loaded[path]

    def speech_probability(self, framed: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[float, Any, Any]:
        """Silero's speech probability of one window (after its context), and its next state."""
        out, h, c = self._vad.run(None, {"input": framed, "h": h, "c": c})
        return float(np.asarray(out).reshape(-1)[0]), h, c

    def turn_complete(self, audio: np.ndarray) -> float:
        """smart-turn's probability that the turn in ``audio`` (its last 8 s) is complete."""
        n = SMART_TURN_SECONDS * SAMPLING_RATE
        audio = np.pad(audio[-n:], (n - min(len(audio), n), 0))  # silence in front, as pipecat
        audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
        features = self._features(audio.astype(np.float32), padding=0)[None].astype(np.float32)
        return float(self._smart_turn.run(None, {"input_features": features})[0].reshape(-1)[0])


def _silero_file() -> Path:
    from faster_whisper.utils import get_assets_path

    return Path(get_assets_path()) / "silero_vad_v6.onnx"


def _session(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # a turn is decided per stream; streams share the cores
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # a truncated or foreign file
        raise ModelUnavailable(f"cannot load the end-of-turn model {path.name}: {error}") from error


class _Tail:
    """The last ``size`` samples fed, without reallocating per chunk."""

    def __init__(self, size: int):
        self._buffer = np.zeros(2 * size, np.float32)
        self._size, self._end, self._start = size, 0, 0

    def __len__(self) -> int:
        return self._end - self._start

    def extend(self, samples: np.ndarray) -> None:
        if self._end + len(samples) > len(self._buffer):  # move the kept tail to the front
            kept = self._buffer[max(self._start, self._end - self._size) : self._end].copy()
            self._buffer[: len(kept)] = kept
            self._start, self._end = 0, len(kept)
        self._buffer[self._end : self._end + len(samples)] = samples
        self._end += len(samples)
        self._start = max(self._start, self._end - self._size)

    def keep_last(self, count: int) -> None:
        self._start = max(self._start, self._end - count)

    def clear(self) -> None:
        self._start = self._end = 0

    def array(self) -> np.ndarray:
        return self._buffer[self._start : self._end].copy()


def _windows(seconds: float) -> int:
    return round(seconds * SAMPLING_RATE / WINDOW)


def _as_float(chunk: np.ndarray) -> np.ndarray:
    chunk = np.asarray(chunk)
    if chunk.ndim != 1:
        raise MediaError(f"turn detection takes mono audio, one sample a value; got shape {chunk.shape}")
    if chunk.dtype == np.int16:
        return chunk.astype(np.float32) / 32768.0
    if chunk.dtype.kind != "f":
        raise MediaError(f"turn detection takes float or int16 samples, not {chunk.dtype}")
    chunk = chunk.astype(np.float32, copy=False)
    if not np.isfinite(chunk).all():
        raise MediaError("the audio has samples that are not numbers")
    return chunk
