"""Chat engine overhead: ``Assistant.reply`` vs a bare ``model.generate`` on the same model.

Both sides start from the same PIL image and question and do the same work a caller must do:
build the prompt with the processor's chat template, run the vision tower and prefill, decode a
fixed number of tokens (``min_new_tokens = max_new_tokens``, greedy). The engine adds what it
is for: media checks, context fitting, the turn queue, a generation thread, the text streamer
and its queue, the stop filter, events. Runs alternate engine/bare (and swap order every
repetition), so load drifting on a shared machine hits both alike; the headline figures are
the medians of the per-pair ratio and difference.

Timing definitions (the same on both sides):
- TTFT: from the call to the first new token. Engine: when the caller receives the first
  ``Token`` event (what a user sees). Bare: when generate emits the first new token.
- decode tokens/s: (tokens − 1) / (end − first token), "end" being when the caller has the
  whole reply (engine: after its stream is closed; bare: when generate returns). The engine
  side is its own ``Done.stats.tokens_per_s``.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.common import Context, Goal, SectionResult, chat_model_dir, pyplot, spread, summary, table

TPS_RATIO_GOAL = 0.97
TTFT_DIFF_GOAL_S = 0.030
QUESTION = "Describe this picture in detail."


def photo_512():
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.astronaut())  # a real 512x512 photo


class TimingStreamer:
    """The least a bare generate needs to report when each new token appeared."""

    def __init__(self):
        self.times: list[float] = []
        self._prompt = True

    def put(self, value):
        if self._prompt:  # generate first puts the prompt
            self._prompt = False
            return
        self.times.append(time.perf_counter())

    def end(self):
        pass


class Probe:
    """Timestamps inside both paths, so the engine's own work can be told apart from model
    compute (which on a shared machine varies by seconds from run to run).

    Wraps, for the benchmark only: ``model.generate`` (when it is called), the engine's
    ``prepare_inputs`` (the processor: the same work the bare side does) and
    the ``put`` of the engine's streamer (``local.text_streamer``: per-token detokenisation in
    the generation thread). Each wrapper adds about a microsecond.
    """

    def __init__(self, chat):
        from assistant.models import local

        self.chat = chat
        self.generate_called = 0.0
        self.prepare_s = 0.0
        self.put_s = 0.0
        self.put_calls = 0
        self._generate = chat.model.generate
        self._prepare = chat.prepare_inputs
        self._text_streamer = local.text_streamer
        probe = self

        def generate(*args, **kwargs):
            probe.generate_called = time.perf_counter()
            return probe._generate(*args, **kwargs)

        def prepare_inputs(*args, **kwargs):
            t = time.perf_counter()
            try:
                return probe._prepare(*args, **kwargs)
            finally:
                probe.prepare_s = time.perf_counter() - t

        def text_streamer(tokenizer):
            streamer = probe._text_streamer(tokenizer)
            inner = streamer.put

            def put(value):
                t = time.perf_counter()
                try:
                    return inner(value)
                finally:
                    probe.put_s += time.perf_counter() - t
                    probe.put_calls += 1

            streamer.put = put
            return streamer

        chat.model.generate = generate
        chat.prepare_inputs = prepare_inputs
        local.text_streamer = text_streamer

    def reset(self):
        self.generate_called = self.prepare_s = self.put_s = 0.0
        self.put_calls = 0

    def close(self):
        from assistant.models import local

        local.text_streamer = self._text_streamer
        del self.chat.model.generate
        del self.chat.prepare_inputs


def bare_run(chat, image, n: int, probe: Probe, in_thread: bool = True) -> dict:
    """Chat template + ``model.generate``. ``in_thread``: generate runs in a plain thread
    (started and joined, nothing else), as the engine's does (see the notes on threads)."""

    probe.reset()
    started = time.perf_counter()
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}]}
    ]
    inputs = chat.processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    inputs = inputs.to(chat.model.device)
    prepared = time.perf_counter()
    streamer = TimingStreamer()

    def generate():
        greedy_generate(chat, inputs, n, streamer)

    if in_thread:
        worker = threading.Thread(target=generate)
        worker.start()
        worker.join()
    else:
        generate()
    ended = time.perf_counter()
    first = streamer.times[0]
    tokens = len(streamer.times)
    return {
        "ttft_s": first - started,
        "prepare_s": prepared - started,  # the processor (chat template + image)
        "other_pre_s": probe.generate_called - prepared,  # moving inputs, starting the thread
        "prefill_s": first - probe.generate_called,
        "tokens": tokens,
        "tokens_per_s": (tokens - 1) / (ended - first),
        "total_s": ended - started,
        "prompt_tokens": int(inputs["input_ids"].shape[-1]),
    }


def greedy_generate(chat, inputs, n: int, streamer, **extra) -> None:
    """Exactly ``n`` greedy tokens from a LocalChatModel's HF model, bypassing the engine."""
    import torch

    with torch.inference_mode():
        chat.model.generate(
            **inputs,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            streamer=streamer,
            pad_token_id=chat.tokenizer.pad_token_id or chat.tokenizer.eos_token_id,
            **extra,
        )


def engine_run(assistant, image, n: int, probe: Probe) -> dict:
    from assistant.conversation import Message
    from assistant.core import Done, Token

    params = assistant.params(max_new_tokens=n, min_new_tokens=n, temperature=0)
    probe.reset()
    started = time.perf_counter()
    first = None
    chunks = 0
    done = None
    for event in assistant.reply([], Message.user(QUESTION, images=(image,)), params, system_prompt=""):
        if isinstance(event, Token):
            chunks += 1
            if first is None:
                first = time.perf_counter()
        elif isinstance(event, Done):
            done = event
    ended = time.perf_counter()
    s = done.stats
    first_token = started + s.ttft_s  # when the generation thread produced it (engine's own clock)
    return {
        "ttft_s": (first or ended) - started,
        "ttft_stats_s": s.ttft_s,
        "prepare_s": probe.prepare_s,
        "other_pre_s": probe.generate_called
        - started
        - probe.prepare_s,  # media, context fit, queue, thread...
        "prefill_s": first_token - probe.generate_called,
        "delivery_s": (first or ended) - first_token,  # streamer queue → caller
        "put_ms": probe.put_s / max(1, probe.put_calls) * 1000,
        "tokens": s.tokens,
        "tokens_per_s": s.tokens_per_s,
        "total_s": ended - started,
        "prompt_tokens": s.prompt_tokens,
        "chunks": chunks,
    }


def run(ctx: Context) -> SectionResult:
    import torch

    from assistant.core import Assistant
    from assistant.models.local import LocalChatModel
    from assistant.settings import Settings

    size = "tiny" if ctx.quick else "full"
    n = 8 if ctx.quick else 64
    reps = 1 if ctx.quick else 5
    model_dir = chat_model_dir(ctx.cache, "idefics3", size)
    started = time.perf_counter()
    # No prefix cache: every repetition sends the same prompt, which would otherwise be reused.
    chat = LocalChatModel.load(
        str(model_dir), device="cpu", quantization="none", image_max_side=1024, prefix_cache_bytes=0
    )
    load_s = time.perf_counter() - started
    params_m = sum(p.numel() for p in chat.model.parameters()) / 1e6
    weights_gib = sum(p.numel() * p.element_size() for p in chat.model.parameters()) / 2**30
    image_processor = chat.processor.image_processor
    default_splitting = bool(getattr(image_processor, "do_image_splitting", False))
    # One 512-px tile for the comparison runs (see the notes): both sides share this processor.
    image_processor.do_image_splitting = False
    assistant = Assistant(Settings(system_prompt=""), chat)
    image = photo_512()
    ctx.log(
        f"chat: {size} model loaded in {load_s:.1f} s ({params_m:.0f} M params, {torch.get_num_threads()} threads)"
    )

    probe = Probe(chat)
    try:
        # Callers run in a long-lived worker thread, as the API and the page call the engine.
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-chat")
        warm_engine = worker.submit(engine_run, assistant, image, n, probe).result()  # warm-up, not counted
        # The bare side runs on the model's own inference thread, as the engine's torch work does:
        # a second thread running torch would slow both down (see the notes on threads).
        warm_bare = chat.worker.submit(bare_run, chat, image, n, probe, False).result()
        if warm_engine["prompt_tokens"] != warm_bare["prompt_tokens"]:
            raise RuntimeError(
                f"engine and bare prompts differ: {warm_engine['prompt_tokens']} vs {warm_bare['prompt_tokens']} tokens"
            )
        engine, bare = [], []
        for i in range(reps):
            pair = [
                (engine, lambda: engine_run(assistant, image, n, probe)),
                (bare, lambda: bare_run(chat, image, n, probe, False)),
            ]
            for sink, fn in pair if i % 2 == 0 else pair[::-1]:
                sink.append((worker if sink is engine else chat.worker).submit(fn).result())
            ctx.log(
                f"chat: rep {i + 1}/{reps}: engine {engine[-1]['ttft_s']:.2f} s / {engine[-1]['tokens_per_s']:.1f} tok/s, "
                f"bare {bare[-1]['ttft_s']:.2f} s / {bare[-1]['tokens_per_s']:.1f} tok/s"
            )

        # Information: the same bare generate called from the main thread, once.
        n_main = min(n, 24)
        main_thread = bare_run(chat, image, n_main, probe, in_thread=False)
        ctx.log(f"chat: bare generate in the main thread: {main_thread['tokens_per_s']:.1f} tok/s")

        # Information: the processor as SmolVLM ships it (image splitting on), same photo, engine.
        split_row = capped_row = None
        est = 22 * summary([b["prefill_s"] for b in bare])["median"] + 20
        if not ctx.quick and default_splitting and ctx.left() > est:
            from transformers import AutoProcessor

            image_processor.do_image_splitting = True
            engine_size = image_processor.size  # capped at image_max_side by the engine
            tile = image_processor.max_image_size["longest_edge"]
            try:
                image_processor.size = AutoProcessor.from_pretrained(
                    str(model_dir)
                ).image_processor.size  # as shipped
                split_row = worker.submit(engine_run, assistant, image, 4, probe).result()
            finally:
                image_processor.size = engine_size
            capped_row = worker.submit(engine_run, assistant, image, 4, probe).result()
            image_processor.do_image_splitting = False
            ctx.log(
                f"chat: default processor: {split_row['prompt_tokens']} prompt tokens, TTFT {split_row['ttft_s']:.1f} s"
            )
        elif not ctx.quick:
            ctx.log(f"chat: skipped the image-splitting row (needs ~{est:.0f} s, {ctx.left():.0f} s left)")
    finally:
        probe.close()
        worker.shutdown()

    def med(rows, key):
        return summary([r[key] for r in rows])

    def pair_summary(fn):
        return summary([fn(e, b) for e, b in zip(engine, bare)])

    # End to end (what the goals literally compare; on a shared machine the spread is large).
    r_s = pair_summary(lambda e, b: e["tokens_per_s"] / b["tokens_per_s"])
    d_s = pair_summary(lambda e, b: e["ttft_s"] - b["ttft_s"])
    tr_s = pair_summary(lambda e, b: e["total_s"] / b["total_s"])
    e_tps, b_tps = med(engine, "tokens_per_s"), med(bare, "tokens_per_s")
    # Direct: the engine's own work, timed inside the runs, free of model-compute noise.
    other_d = pair_summary(lambda e, b: e["other_pre_s"] - b["other_pre_s"])
    delivery = med(engine, "delivery_s")
    put = med(engine, "put_ms")
    direct_ttft = other_d["median"] + delivery["median"]
    step_s = 1 / b_tps["median"]
    direct_ratio = step_s / (step_s + put["median"] / 1000)
    tps_met = direct_ratio >= TPS_RATIO_GOAL
    ttft_met = direct_ttft <= TTFT_DIFF_GOAL_S
    prefill_d = pair_summary(lambda e, b: e["prefill_s"] - b["prefill_s"])
    prep_d = pair_summary(lambda e, b: e["prepare_s"] - b["prepare_s"])

    data = {
        "engine": engine,
        "bare": bare,
        "load_s": load_s,
        "params_m": params_m,
        "weights_gib": weights_gib,
        "n_new": n,
        "splitting": split_row,
        "splitting_capped": capped_row,
        "bare_main_thread": main_thread,
        "warmup": [warm_engine, warm_bare],
        "direct_ttft_overhead_s": direct_ttft,
        "direct_tps_ratio": direct_ratio,
    }

    plot = ctx.out / "bench-chat.png"
    _plot(plot, engine, bare, n)

    def ms(s_, digits=0):
        return spread(s_, 1000, digits)

    prompt_tokens = engine[0]["prompt_tokens"]
    e2e_rows = [
        [
            "TTFT s (as the caller sees it)",
            spread(med(engine, "ttft_s")),
            spread(med(bare, "ttft_s")),
            f"{d_s['median'] * 1000:+.0f} ms ({d_s['min'] * 1000:+.0f}…{d_s['max'] * 1000:+.0f})",
        ],
        [
            "decode tokens/s",
            spread(e_tps),
            spread(b_tps),
            f"{r_s['median']:.3f}× ({r_s['min']:.3f}–{r_s['max']:.3f})",
        ],
        [
            f"total s for {n} tokens",
            spread(med(engine, "total_s")),
            spread(med(bare, "total_s")),
            f"{tr_s['median']:.3f}× ({tr_s['min']:.3f}–{tr_s['max']:.3f})",
        ],
    ]
    split_rows = [
        [
            "processor: chat template + image → tensors",
            ms(med(engine, "prepare_s")),
            ms(med(bare, "prepare_s")),
            f"{prep_d['median'] * 1000:+.1f}",
        ],
        [
            "everything else before `generate()` starts",
            ms(med(engine, "other_pre_s"), 1),
            ms(med(bare, "other_pre_s"), 1),
            f"**{other_d['median'] * 1000:+.1f}**",
        ],
        [
            "`generate()` → first token (vision tower + prefill)",
            ms(med(engine, "prefill_s")),
            ms(med(bare, "prefill_s")),
            f"{prefill_d['median'] * 1000:+.0f}",
        ],
        [
            "first token → caller (streamer queue, events)",
            ms(delivery, 1),
            "–",
            f"**{delivery['median'] * 1000:+.1f}**",
        ],
        [
            "per token: streamer `put` (detokenise)",
            f"{put['median']:.2f}",
            "–",
            f"{put['median'] / 1000 / step_s * 100:.1f}% of a {step_s * 1000:.0f}-ms step",
        ],
    ]
    notes = []
    slow_main = main_thread["tokens_per_s"] < 0.8 * b_tps["median"]
    notes.append(
        f"**Threads.** Both sides' torch work runs on the model's one long-lived inference thread (the engine hands its work "
        f"there; the bare side is submitted to it), because which threads have run torch matters: once a second living thread "
        f"has run a parallel torch op, OpenMP thread teams compete for the cores. One bare run from the process's main thread "
        f"(a second torch thread) gave {main_thread['tokens_per_s']:.1f} tokens/s ({n_main} tokens) vs {b_tps['median']:.1f} "
        f"on the inference thread"
        + (
            " — the slowdown the engine's design avoids (see the reuse section for the former thread-per-reply engine)."
            if slow_main
            else "."
        )
    )
    notes.append(
        f"**Word buffering.** transformers' `TextIteratorStreamer` holds back an unfinished word until a space or newline "
        f"arrives, which would delay the first visible text by one decode step (≈ {step_s * 1000:.0f} ms here) and make each "
        f"later chunk lag a token. The engine's streamer (`local.text_streamer`) releases text as soon as it is whole "
        f"characters (it waits only on half a UTF-8 character), so each token reaches the caller at once."
    )
    if split_row:
        notes.append(
            f"**Image splitting.** The comparison runs turn the processor's `do_image_splitting` off (one 512-px tile, "
            f"{prompt_tokens} prompt tokens) on both sides. With SmolVLM's shipped setting (on, `size.longest_edge` 2048) the "
            f"processor *upscales* this 512-px photo to 2048 px and cuts it into 16 tiles + 1 global view: "
            f"{split_row['prompt_tokens']} prompt tokens, and the engine's TTFT becomes **{split_row['ttft_s']:.1f} s** "
            f"(1 run) instead of {med(engine, 'ttft_s')['median']:.1f} s. On CPU this is the largest latency lever there is."
            + (
                f" The engine caps the processor at its own `image_max_side` (`size.longest_edge` = "
                f"{-(-assistant.settings.image_max_side // tile) * tile}: 2×2 tiles + global; `loading.cap_processor_upscaling`), "
                f"which gives {capped_row['prompt_tokens']} prompt tokens and a TTFT of **{capped_row['ttft_s']:.1f} s** (1 run)."
                if capped_row
                else ""
            )
        )
    goals = [
        Goal(
            "Chat engine decode tokens/s vs bare generate",
            f"≥ {TPS_RATIO_GOAL}×",
            f"{direct_ratio:.3f}× direct (streamer {put['median']:.2f} ms per {step_s * 1000:.0f}-ms step); end to end {r_s['median']:.2f}× (range {r_s['min']:.2f}–{r_s['max']:.2f})",
            tps_met,
            "end-to-end pairs vary by load far more than the engine's cost",
        ),
        Goal(
            "Chat engine TTFT − bare TTFT",
            f"≤ {TTFT_DIFF_GOAL_S * 1000:.0f} ms",
            f"{direct_ttft * 1000:+.1f} ms direct; end to end {d_s['median'] * 1000:+.0f} ms (range {d_s['min'] * 1000:+.0f}…{d_s['max'] * 1000:+.0f})",
            ttft_met,
            "end-to-end pairs vary by load far more than the engine's cost",
        ),
    ]
    body = "\n\n".join(
        [
            (
                f"SmolVLM-256M-Instruct shape (Idefics3: SigLIP-B/16 at 512 px + SmolLM2-135M; {params_m:.0f} M parameters, "
                if size == "full"
                else f"Tiny Idefics3 model ({params_m:.1f} M parameters, "
            )
            + f"{weights_gib:.2f} GiB in float32 as the engine loads it on CPU; loaded in {load_s:.1f} s), random weights. One 512-px photo "
            f"(scikit-image astronaut) + a question, {prompt_tokens} prompt tokens, {n} new tokens (greedy, fixed length), "
            f"{reps} interleaved pairs (order swapped every pair) after one warm-up pair. Cells: median (min–max).",
            "**End to end** (last column: median of the per-pair engine/bare ratio or difference):",
            table(["", "engine (`Assistant.reply`)", "bare `model.generate`", "engine vs bare"], e2e_rows),
            "**Where the time goes** (ms, timed inside the same runs by wrapping `generate`, `prepare_inputs` and the streamer's "
            "`put`; last column: median of per-pair differences). Model compute (the third row) varies with the load from other "
            "work on the machine; the engine's own work (bold) is what the goals are about:",
            table(["step", "engine ms", "bare ms", "engine − bare ms"], split_rows),
            f"**Goals** (judged on the direct figures: the engine's own work measured inside the runs). TTFT: "
            f"{other_d['median'] * 1000:+.1f} ms before `generate()` + {delivery['median'] * 1000:.1f} ms to reach the caller = "
            f"**{direct_ttft * 1000:+.1f} ms** (goal ≤ {TTFT_DIFF_GOAL_S * 1000:.0f}): **{'met' if ttft_met else 'missed'}**. Decode: "
            f"{put['median']:.2f} ms of detokenisation per {step_s * 1000:.0f}-ms step → **{direct_ratio:.3f}×** (goal ≥ {TPS_RATIO_GOAL}): "
            f"**{'met' if tps_met else 'missed'}**. End to end, the per-pair spread "
            f"({d_s['min'] * 1000:+.0f}…{d_s['max'] * 1000:+.0f} ms, {r_s['min']:.2f}–{r_s['max']:.2f}×) "
            + (
                "contains the direct figures: it is load noise, not engine cost."
                if d_s["min"] <= direct_ttft <= d_s["max"] and r_s["min"] <= direct_ratio <= r_s["max"]
                else "does not contain the direct figures: something outside the timed steps differs (see the third row)."
            ),
            *notes,
            f"![engine vs bare generate]({plot.name})",
        ]
    )
    return SectionResult("chat", "2. Chat engine overhead", body, goals, data)


def _plot(path: Path, engine, bare, n: int) -> None:
    plt = pyplot()
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1, 1, 0.8]})
    reps = np.arange(1, len(engine) + 1)
    for ax, key, label in (
        (ax1, "ttft_s", "time to first token (s)"),
        (ax2, "tokens_per_s", "decode tokens/s"),
    ):
        ax.plot(reps, [e[key] for e in engine], "o-", label="engine (Assistant.reply)")
        ax.plot(reps, [b[key] for b in bare], "s--", label="bare model.generate")
        ax.set_xlabel("repetition (interleaved pairs)")
        ax.set_ylabel(label)
        ax.set_xticks(reps)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8, loc="lower right")
    ax1.set_title("end to end: time to first token")
    ax2.set_title(f"end to end: decode, {n} new tokens")
    before = summary([e["other_pre_s"] - b["other_pre_s"] for e, b in zip(engine, bare)])["median"] * 1000
    delivery = summary([e["delivery_s"] for e in engine])["median"] * 1000
    detok = summary([e["put_ms"] for e in engine])["median"] * n
    bars = ax3.bar(
        ["before\ngenerate()", "first token\n→ caller", f"detokenise\n{n} tokens"],
        [before, delivery, detok],
        color=["C0", "C0", "C2"],
    )
    ax3.bar_label(bars, fmt="%.1f")
    ax3.axhline(TTFT_DIFF_GOAL_S * 1000, color="red", ls="--", lw=1, label="TTFT goal 30 ms (first two bars)")
    ax3.set_ylabel("ms per reply (median)")
    ax3.set_title("engine's own work (timed inside)")
    ax3.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
