"""What the engine measures for an operator, in Prometheus' terms (``prometheus_client``).

One :class:`Metrics` per :class:`~assistant.core.Assistant`, on its own registry (so that two
apps in one process, as in tests, count apart). Names and buckets follow vLLM's where vLLM has
the metric (``vllm:time_to_first_token_seconds`` is ``assistant:time_to_first_token_seconds``
here), so a dashboard made for vLLM reads ours with the prefix changed. ``/metrics``
(:mod:`api.metrics`) renders the registry; :mod:`web.metrics` adds the HTTP requests.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "assistant:"

# vLLM's buckets (vllm/engine/metrics.py), so the same dashboards' quantiles apply.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0)  # fmt: skip
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                   120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
SPEECH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)


class Metrics:
    """The engine's instruments; ``reply``, ``transcribed`` and ``spoken`` record one each."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self._shown: str | None = None  # the model the loaded gauge names
        r, p, model = self.registry, PREFIX, ["model_name"]
        self.ttft = Histogram(f"{p}time_to_first_token_seconds", "Time to first token in seconds (queue wait and transcription excluded).", model, buckets=TTFT_BUCKETS, registry=r)  # fmt: skip
        self.tpot = Histogram(f"{p}time_per_output_token_seconds", "Time per output token in seconds (after the first).", model, buckets=TPOT_BUCKETS, registry=r)  # fmt: skip
        self.e2e = Histogram(f"{p}e2e_request_latency_seconds", "End-to-end latency of a reply in seconds.", model, buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.queue = Histogram(f"{p}request_queue_time_seconds", "Time a reply waited for the model in seconds.", model, buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.prompt_tokens = Counter(f"{p}prompt_tokens", "Prompt tokens of finished replies.", model, registry=r)  # fmt: skip
        self.generation_tokens = Counter(f"{p}generation_tokens", "Generated tokens of finished replies.", model, registry=r)  # fmt: skip
        self.request_prompt = Histogram(f"{p}request_prompt_tokens", "Prompt tokens per reply.", model, buckets=TOKEN_BUCKETS, registry=r)  # fmt: skip
        self.request_generation = Histogram(f"{p}request_generation_tokens", "Generated tokens per reply.", model, buckets=TOKEN_BUCKETS, registry=r)  # fmt: skip
        self.success = Counter(f"{p}request_success", "Finished replies, by why they ended.", [*model, "finished_reason"], registry=r)  # fmt: skip
        self.failures = Counter(f"{p}request_failure", "Replies that failed, by the kind of error.", [*model, "error"], registry=r)  # fmt: skip
        # vLLM V1's: in tokens, so hits / queries is the share of prompt tokens not computed again
        self.prefix_hits = Counter(f"{p}prefix_cache_hits", "Prompt tokens reused from the prefix cache.", model, registry=r)  # fmt: skip
        self.prefix_queries = Counter(f"{p}prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", model, registry=r)  # fmt: skip
        self.running = Gauge(f"{p}num_requests_running", "Replies being generated now.", model, registry=r)  # fmt: skip
        self.asr = Histogram(f"{p}transcription_seconds", "Time Whisper took per recording in seconds.", buckets=SPEECH_BUCKETS, registry=r)  # fmt: skip
        self.asr_audio = Counter(f"{p}transcription_audio_seconds", "Seconds of audio transcribed.", registry=r)  # fmt: skip
        self.tts = Histogram(f"{p}speech_synthesis_seconds", "Time a spoken reply took to synthesise in seconds.", buckets=SPEECH_BUCKETS, registry=r)  # fmt: skip
        self.tts_audio = Counter(f"{p}speech_audio_seconds", "Seconds of speech synthesised.", registry=r)  # fmt: skip
        self.loaded = Gauge(f"{p}model_loaded", "1 while a chat model is loaded and answering.", model, registry=r)  # fmt: skip

    def model(self, name: str, loaded: bool) -> None:
        """The chat model served now (set when scraped: a remote server's name comes later)."""
        if self._shown not in (None, name):
            self.loaded.remove(self._shown)
        self._shown = name
        self.loaded.labels(name).set(1 if loaded else 0)

    def reply(self, stats, model: str) -> None:
        """One finished reply (a :class:`~assistant.core.ReplyStats`) of ``model``."""
        self.success.labels(model, stats.finish_reason).inc()
        self.e2e.labels(model).observe(stats.elapsed_s)
        self.queue.labels(model).observe(stats.queued_s)
        self.prompt_tokens.labels(model).inc(stats.prompt_tokens)
        self.request_prompt.labels(model).observe(stats.prompt_tokens)
        self.generation_tokens.labels(model).inc(stats.tokens)
        self.request_generation.labels(model).observe(stats.tokens)
        self.prefix_queries.labels(model).inc(stats.prompt_tokens)
        self.prefix_hits.labels(model).inc(stats.cached_tokens)
        if stats.tokens:
            self.ttft.labels(model).observe(stats.ttft_s)
        if stats.tokens > 1 and stats.tokens_per_s > 0:
            self.tpot.labels(model).observe(1 / stats.tokens_per_s)

    def failed(self, error: BaseException, model: str) -> None:
        self.failures.labels(model, type(error).__name__).inc()

    def transcribed(self, elapsed_s: float, audio_s: float) -> None:
        self.asr.observe(elapsed_s)
        self.asr_audio.inc(max(audio_s, 0.0))

    def spoken(self, elapsed_s: float, audio_s: float) -> None:
        self.tts.observe(elapsed_s)
        self.tts_audio.inc(max(audio_s, 0.0))


def metered_speech(chunks: Iterable, metrics: Metrics) -> Iterator:
    """``chunks`` (SpeechChunk) passed on; their synthesis time and length recorded at the end."""
    started, seconds = time.perf_counter(), 0.0
    try:
        for chunk in chunks:
            seconds += chunk.seconds
            yield chunk
    finally:
        metrics.spoken(time.perf_counter() - started, seconds)
