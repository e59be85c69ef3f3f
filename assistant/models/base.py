"""The contract of a chat model: what it is asked, what it reports, what it is.

Implementations live beside this module (``local``, ``remote``); everything above them (the
Assistant, the page, the API, the CLI) knows only these names. The options of one generation
are the engine's own (:mod:`assistant.options`); the contracts of speech are
:mod:`assistant.speech.types`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from assistant.conversation import Message
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
    request_id: str = ""  # the turn's id in the logs (assistant.request_ids), sent on to servers

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
    vision: bool = True  # False: reads text only (photos and scans reach it as OCR text)
    # The model's own sampling defaults (temperature, top_p from its generation config): a
    # small model answers better at the temperature its makers suggest.
    sampling: Mapping[str, float] = field(default_factory=dict)


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
