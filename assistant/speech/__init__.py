"""Speech: recordings heard as text, replies read aloud.

The contracts are :class:`Transcriber` and :class:`Synthesizer` (and what they give back:
:class:`Transcript`, :class:`SpeechChunk`, :class:`VoiceInfo`); everything above this package
knows only those. Problems raise typed errors: ``MediaError`` for unusable audio,
``InvalidParams`` for an unknown language, voice or speed, ``ModelUnavailable`` for weights
or a server that cannot be had.

The modules, by job:

- :mod:`~assistant.speech.types`: the contracts and their dataclasses
- :mod:`~assistant.speech.transcribe`: Whisper (faster-whisper) run locally
  (:class:`WhisperTranscriber`), and the embedded weights it joins once into the cache
- :mod:`~assistant.speech.voices`: Piper voices run locally (:class:`PiperSynthesizer`)
- :mod:`~assistant.speech.speakable`: what of a reply's Markdown is read aloud, cut into pieces
- :mod:`~assistant.speech.bounds`: the speed range, the seconds a text will take, the caps
- :mod:`~assistant.speech.spoken`: a reply read aloud while it streams (:class:`SpokenReply`)
- :mod:`~assistant.speech.encode`: speech as the bytes of an audio file, as it is made
- :mod:`~assistant.speech.turns`: when a spoken turn has ended (Silero VAD + smart-turn,
  :class:`~assistant.speech.turns.TurnDetector`), fed a stream's audio
- :mod:`~assistant.speech.remote`: both over an OpenAI-compatible server
  (``RemoteTranscriber``, ``RemoteSynthesizer``), imported on demand (httpx)

Nothing heavy at import time: faster-whisper, CTranslate2, Piper and ONNX Runtime load when a
model is built. Nothing here knows the page, the API or the CLI.
"""

from __future__ import annotations

from assistant.speech.bounds import (
    LONG_SPEECH_S,
    MAX_SPEED,
    MAX_SPOKEN_S,
    MIN_SPEED,
    bounded,
    check_speed,
    give_back_memory,
    speech_seconds,
)
from assistant.speech.encode import FORMATS, MEDIA_TYPES, encode, pcm16
from assistant.speech.spoken import SpokenReply
from assistant.speech.transcribe import WhisperTranscriber, default_cache_dir, embedded_model_dir
from assistant.speech.types import (
    AudioInput,
    Segment,
    SpeechChunk,
    Synthesizer,
    Transcriber,
    Transcript,
    VoiceInfo,
)
from assistant.speech.voices import EMBEDDED, EMBEDDED_VOICE, OPENAI_VOICES, PiperSynthesizer

__all__ = [
    "EMBEDDED",
    "EMBEDDED_VOICE",
    "FORMATS",
    "LONG_SPEECH_S",
    "MAX_SPEED",
    "MAX_SPOKEN_S",
    "MEDIA_TYPES",
    "MIN_SPEED",
    "OPENAI_VOICES",
    "AudioInput",
    "PiperSynthesizer",
    "Segment",
    "SpeechChunk",
    "SpokenReply",
    "Synthesizer",
    "Transcriber",
    "Transcript",
    "VoiceInfo",
    "WhisperTranscriber",
    "bounded",
    "check_speed",
    "default_cache_dir",
    "embedded_model_dir",
    "encode",
    "give_back_memory",
    "pcm16",
    "speech_seconds",
]
