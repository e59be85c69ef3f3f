"""The contracts of speech: what a speech recognizer and a voice are, and what they give back.

Implementations live beside this module (:mod:`~assistant.speech.transcribe`,
:mod:`~assistant.speech.voices`, :mod:`~assistant.speech.remote`); everything above them (the
Assistant, the page, the API, the CLI) knows only these names.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, Union

from assistant.conversation import AudioSource


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str  # ISO 639-1 code, detected or as given
    duration_s: float  # of the input audio
    segments: tuple[Segment, ...]
    language_probability: float = 0.0  # 1.0 when the language was given
    elapsed_s: float = 0.0  # wall time of the ASR itself (decoding of the file excluded)

    @property
    def is_empty(self) -> bool:
        return not self.text


AudioInput = Union[AudioSource, Any]  # Any = 16 kHz mono float samples (numpy)


class Transcriber(Protocol):
    name: str  # what /v1/models and the page show
    device: str

    def transcribe(self, audio: AudioInput, language: str | None = None) -> Transcript: ...


@dataclass(frozen=True)
class VoiceInfo:
    name: str  # what the API's ``voice`` and --tts-voice call it
    language: str  # ISO 639-1 code of what it reads, e.g. en
    sample_rate: int


@dataclass(frozen=True)
class SpeechChunk:
    """Some synthesized speech: float32 mono samples in [-1, 1], and the text they say."""

    samples: Any  # numpy float32 array
    sample_rate: int
    text: str = ""

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


class Synthesizer(Protocol):
    name: str  # what /v1/models and the page show
    device: str
    voices: tuple[VoiceInfo, ...]  # the first is the default

    def voice_for(self, language: str | None) -> VoiceInfo | None:
        """The voice that reads ``language`` (None: the default voice), or None if none does."""
        ...

    def resolve(self, voice: str | None) -> VoiceInfo:
        """A voice by the name a request gives (None: the default); ``InvalidParams`` if unknown."""
        ...

    def speak_piece(self, piece: str, voice: VoiceInfo, rate: float = 1.0) -> SpeechChunk:
        """One piece of text, already cut and cleaned, as one chunk of speech."""
        ...

    def speak(self, text: str, voice: str | None = None, speed: float | None = None) -> Iterator[SpeechChunk]:
        """Yield speech for ``text`` piece by piece (see :mod:`assistant.speech.speakable`) as
        each is synthesized; stop when the consumer closes the iterator. Raises
        ``InvalidParams`` for an unknown voice or a speed out of range."""
        ...
