"""A scripted ChatModel for fast unit tests of everything above the model."""

from __future__ import annotations

import threading
import time

from assistant.conversation import Message
from assistant.models.base import ChatRequest, ModelInfo, Usage


class FakeChatModel:
    concurrent = False  # like the local model: the Assistant queues callers

    def __init__(
        self,
        chunks=("Hello", ", ", "world", "!"),
        delay_s: float = 0.0,
        context_length: int = 4096,
        image_tokens: int = 100,
    ):
        self.chunks = list(chunks)
        self.delay_s = delay_s
        self.image_tokens = image_tokens
        self.info = ModelInfo("fake", "local", "cpu", "none", context_length)
        self.requests: list[ChatRequest] = []
        self.usages: list[Usage] = []  # what each stream reported, in order
        self.active = 0
        self.max_active = 0
        self._count_lock = threading.Lock()

    def count_tokens(self, message: Message) -> int:
        return 4 + len(message.text.split()) + self.image_tokens * len(message.images)

    def stream(self, request: ChatRequest):
        self.requests.append(request)
        with self._count_lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            usage = Usage(prompt_tokens=sum(self.count_tokens(m) for m in request.messages))
            produced = 0
            for chunk in self.chunks[: request.params.max_new_tokens]:
                if request.cancel.is_set():
                    usage.finish_reason = "cancelled"
                    break
                if self.delay_s:
                    time.sleep(self.delay_s)
                if usage.first_token_at is None:
                    usage.first_token_at = time.perf_counter()
                produced += 1
                usage.completion_tokens = produced
                yield chunk
            else:
                usage.finish_reason = "length" if produced >= request.params.max_new_tokens else "stop"
            self.usages.append(usage)
        finally:
            with self._count_lock:
                self.active -= 1
        yield usage
