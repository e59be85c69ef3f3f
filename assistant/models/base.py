"""The contracts: what a chat model and a speech recognizer are, and the options of one generation.

Implementations live beside this module (``local``, ``remote``) and in :mod:`assistant.speech`;
everything above them (the Assistant, the page, the API, the CLI) knows only these names.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import UnionType
from typing import Annotated, Any, Protocol, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from assistant.conversation import AudioSource, Message
from assistant.errors import InvalidParams

MAX_STOP_SEQUENCES = 4


@dataclass(frozen=True)
class Knob:
    """How one generation option is offered: its help, its OpenAI request names, the page's
    control, the CLI flag. The range itself is the pydantic constraint beside it."""

    help: str
    rule: str  # "must be …", said when a value breaks the constraint
    label: str = ""  # the page's control label; "" = not on the page
    control: str = "slider"  # slider | text (a text box for optional whole numbers)
    low: float | None = None  # the slider's ends (the upper end may come from Settings)
    high: float | None = None
    step: float | None = None
    api: tuple[str, ...] = ()  # request fields of /v1/chat/completions, preferred first
    cli: bool = False  # also a flag of `python -m assistant chat`


StrictInt = Annotated[int, Field(strict=True)]
# The server's max_new_tokens cap while GenerationParams.within validates (pydantic calls our
# __init__ for every construction, so the cap cannot travel as validation context).
_CAP: ContextVar[int | None] = ContextVar("max_new_tokens_cap", default=None)
StopSequence = Annotated[str, Field(min_length=1)]


class GenerationParams(BaseModel):
    """Options of one generation, each declared once with its range and where it is offered.

    The page's settings panel, the /chat endpoint's options, the /v1 request schema and the CLI
    flags are all derived from these fields (see :func:`knobs`). Out-of-range values raise
    :class:`InvalidParams` naming the field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: Annotated[
        float,
        Field(strict=True, ge=0, le=2, allow_inf_nan=False),
        Knob(
            "0 = always the most likely word",
            "must be between 0 and 2",
            label="Temperature",
            low=0,
            high=2,
            step=0.05,
            api=("temperature",),
            cli=True,
        ),
    ] = 0.7
    top_p: Annotated[
        float,
        Field(strict=True, gt=0, le=1, allow_inf_nan=False),
        Knob(
            "sample only from the most likely words that add up to this probability",
            "must be greater than 0 and at most 1",
            label="Top-p",
            low=0.05,
            high=1,
            step=0.05,
            api=("top_p",),
            cli=True,
        ),
    ] = 0.95
    max_new_tokens: Annotated[
        int,
        Field(strict=True, ge=1),
        Knob(
            "longest reply, in tokens",
            "must be between 1 and {cap}",
            label="Max new tokens",
            low=1,
            step=1,
            api=("max_completion_tokens", "max_tokens"),
            cli=True,
        ),
    ] = 512
    seed: Annotated[
        StrictInt | None,
        Field(ge=0, lt=2**32),
        Knob(
            "a whole number makes replies repeatable",
            "must be an integer between 0 and 2^32-1",
            label="Seed",
            control="text",
            api=("seed",),
            cli=True,
        ),
    ] = None
    stop: Annotated[
        tuple[StopSequence, ...],
        Field(max_length=MAX_STOP_SEQUENCES),
        Knob(
            "end the reply where one of these strings appears",
            f"must be at most {MAX_STOP_SEQUENCES} non-empty strings",
            api=("stop",),
        ),
    ] = ()
    # benchmarks fix the length so random weights cannot end early
    min_new_tokens: Annotated[
        int,
        Field(strict=True, ge=0),
        Knob("shortest reply, in tokens", "must be between 0 and max_new_tokens", api=("min_tokens",)),
    ] = 0

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _invalid(exc, _CAP.get()) from None

    @classmethod
    def within(cls, max_new_tokens_cap: int, **values: Any) -> GenerationParams:
        """Validated options, with max_new_tokens also held to the server's cap."""
        token = _CAP.set(max_new_tokens_cap)
        try:
            return cls(**values)
        finally:
            _CAP.reset(token)

    @field_validator("max_new_tokens")
    @classmethod
    def _within_cap(cls, value: int) -> int:
        cap = _CAP.get()
        if cap is not None and value > cap:
            raise ValueError("above the cap")
        return value

    @model_validator(mode="after")
    def _min_within_max(self) -> GenerationParams:
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError("min_new_tokens")
        return self

    def validated(self, max_new_tokens_cap: int) -> GenerationParams:
        """Return self, or raise InvalidParams when max_new_tokens is above the server's cap."""
        return GenerationParams.within(max_new_tokens_cap, **dict(self))


def knobs() -> list[tuple[str, FieldInfo, Knob]]:
    """(name, pydantic field, Knob) of every generation option, in declaration order."""
    found = []
    for name, info in GenerationParams.model_fields.items():
        knob = next(m for m in info.metadata if isinstance(m, Knob))
        found.append((name, info, knob))
    return found


def value_type(info: FieldInfo) -> type:
    """int / float / tuple…: an option's type, Optional and Annotated unwrapped."""
    kind: Any = info.annotation
    while True:
        if get_origin(kind) is Annotated:
            kind = get_args(kind)[0]
        elif get_origin(kind) in (Union, UnionType):
            kind = next(a for a in get_args(kind) if a is not type(None))
        else:
            return get_origin(kind) or kind


def _invalid(exc: ValidationError, max_new_tokens_cap: int | None = None) -> InvalidParams:
    error = exc.errors()[0]
    loc = error.get("loc") or ()
    name = str(loc[0]) if loc else str(error.get("msg", "")).removeprefix("Value error, ")
    rules = {n: k.rule for n, _, k in knobs()}
    if name not in rules:  # an unknown option (extra="forbid")
        return InvalidParams(f"unknown generation option {name!r}: use {', '.join(rules)}")
    got = error.get("input")
    rule = rules[name].format(cap=max_new_tokens_cap or "the server's limit")
    return InvalidParams.for_param(name, rule + ("" if isinstance(got, dict) else f", got {got!r}"))


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
