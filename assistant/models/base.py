"""The contracts: what a chat model and a speech recognizer are.

Implementations live beside this module (``local``, ``remote``) and in :mod:`assistant.speech`;
everything above them (the Assistant, the page, the API, the CLI) knows only these names. The
options of one generation are the engine's own: :mod:`assistant.options`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

from assistant.conversation import AudioSource, Message
from assistant.options import GenerationParams


@dataclass
class Usage:
    """What a model reports once a stream ends (the last item it yields)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # stop | length | cancelled | error
    first_token_at: float | None = None  # time.perf_counter() when the first new token arrived
    cached_tokens: int = 0  # prompt tokens whose keys/values were reused, not computed again


@dataclass
class ChatRequest:
    """Messages ready for a model: the text is the model's (typed and spoken words joined), and
    every image attachment holds a validated, normalised ``PIL.Image``. When the last message is
    the assistant's, the model continues it (Continue) instead of starting a new reply."""

    messages: Sequence[Message]
    params: GenerationParams = field(default_factory=GenerationParams)
    cancel: threading.Event = field(default_factory=threading.Event)
    # Work done ahead of need (a photo read while the words are typed): when this says True,
    # the model stops at its next layer, mid-prompt, so someone else's turn need not wait.
    give_way: Callable[[], bool] | None = None
    # Whose prompt this is: what one user's prompt left in a prefix cache serves only that user.
    user: str = ""
    # The system message is the server's own (a persona, the configured prompt), not text a user
    # wrote: its keys/values may serve every user.
    shared_system: bool = False

    @property
    def continues(self) -> bool:
        return bool(self.messages) and self.messages[-1].role == "assistant"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    backend: str  # local | openai
    device: str
    quantization: str
    context_length: int
    dtype: str = ""  # of the weights (float32, bfloat16…); "" where the backend does not say


class ChatModel(Protocol):
    info: ModelInfo
    # True: callers may stream at once (a server that batches them); False: one generation at a
    # time, so the Assistant queues callers in arrival order.
    concurrent: bool

    def stream(self, request: ChatRequest) -> Generator[str | Usage, None, None]:
        """Yield text chunks (never half a character), then one :class:`Usage`; stop soon
        after ``request.cancel`` is set, or when the consumer closes the iterator."""
        ...

    def count_tokens(self, message: Message) -> int:
        """Tokens this message takes in the prompt (images included, estimated upward)."""
        ...


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
        """Yield speech for ``text`` piece by piece (see :mod:`assistant.speakable`) as each is
        synthesized; stop when the consumer closes the iterator. Raises ``InvalidParams`` for
        an unknown voice or a speed out of range."""
        ...
