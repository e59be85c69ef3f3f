"""The contract every chat backend fulfils, and the options of one generation."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from assistant.errors import InvalidParams

MAX_STOP_SEQUENCES = 4


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 512
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 0.95
    seed: int | None = None
    stop: tuple[str, ...] = ()
    min_new_tokens: int = 0  # benchmarks fix the length so random weights cannot end early

    def validated(self, max_new_tokens_cap: int) -> "GenerationParams":
        """Return self, or raise InvalidParams naming the first field out of range."""
        if not isinstance(self.max_new_tokens, int) or isinstance(self.max_new_tokens, bool):
            raise InvalidParams("max_new_tokens must be an integer")
        if not 1 <= self.max_new_tokens <= max_new_tokens_cap:
            raise InvalidParams(f"max_new_tokens must be between 1 and {max_new_tokens_cap}, got {self.max_new_tokens}")
        if not isinstance(self.temperature, (int, float)) or not math.isfinite(self.temperature) or not 0 <= self.temperature <= 2:
            raise InvalidParams(f"temperature must be between 0 and 2, got {self.temperature}")
        if not isinstance(self.top_p, (int, float)) or not math.isfinite(self.top_p) or not 0 < self.top_p <= 1:
            raise InvalidParams(f"top_p must be greater than 0 and at most 1, got {self.top_p}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**32):
            raise InvalidParams(f"seed must be an integer between 0 and 2^32-1, got {self.seed}")
        if len(self.stop) > MAX_STOP_SEQUENCES or any(not isinstance(s, str) or not s for s in self.stop):
            raise InvalidParams(f"stop must be at most {MAX_STOP_SEQUENCES} non-empty strings")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise InvalidParams("min_new_tokens must be between 0 and max_new_tokens")
        return self


@dataclass(frozen=True)
class ChatMessage:
    """A message ready for a model: images already validated and normalised."""

    role: str
    text: str
    images: tuple[Image.Image, ...] = ()


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # stop | length | cancelled | error
    first_token_at: float | None = None  # time.perf_counter() when the first new token arrived


@dataclass
class ChatRequest:
    messages: Sequence[ChatMessage]
    params: GenerationParams = GenerationParams()
    cancel: threading.Event = field(default_factory=threading.Event)
    usage: Usage = field(default_factory=Usage)  # filled in by the model while streaming


@dataclass(frozen=True)
class ModelInfo:
    name: str
    backend: str  # local | openai
    device: str
    quantization: str
    context_length: int


class ChatModel(Protocol):
    info: ModelInfo

    def stream(self, request: ChatRequest) -> Iterator[str]:
        """Yield text chunks (never half a character); fill ``request.usage``; stop soon
        after ``request.cancel`` is set or when the consumer closes the iterator."""

    def count_tokens(self, message: ChatMessage) -> int:
        """Tokens this message takes in the prompt (images included, estimated upward)."""
