"""A scripted ChatModel for fast unit tests of everything above the model."""

from __future__ import annotations

import threading
import time

from assistant.models.base import ChatMessage, ChatRequest, ModelInfo
from assistant.queueing import TurnQueue


class FakeChatModel:
    def __init__(self, chunks=("Hello", ", ", "world", "!"), delay_s: float = 0.0, context_length: int = 4096, image_tokens: int = 100):
        self.chunks = list(chunks)
        self.delay_s = delay_s
        self.image_tokens = image_tokens
        self.queue = TurnQueue()
        self.info = ModelInfo("fake", "local", "cpu", "none", context_length)
        self.requests: list[ChatRequest] = []
        self.active = 0
        self.max_active = 0
        self._count_lock = threading.Lock()

    def count_tokens(self, message: ChatMessage) -> int:
        return 4 + len(message.text.split()) + self.image_tokens * len(message.images)

    def stream(self, request: ChatRequest):
        self.requests.append(request)
        with self._count_lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            request.usage.prompt_tokens = sum(self.count_tokens(m) for m in request.messages)
            produced = 0
            for chunk in self.chunks[: request.params.max_new_tokens]:
                if request.cancel.is_set():
                    request.usage.finish_reason = "cancelled"
                    break
                if self.delay_s:
                    time.sleep(self.delay_s)
                if request.usage.first_token_at is None:
                    request.usage.first_token_at = time.perf_counter()
                produced += 1
                request.usage.completion_tokens = produced
                yield chunk
            else:
                request.usage.finish_reason = "length" if produced >= request.params.max_new_tokens else "stop"
        finally:
            with self._count_lock:
                self.active -= 1
