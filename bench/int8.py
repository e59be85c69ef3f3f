"""``--quantization int8`` on CPU: our weight-only int8 against bfloat16 and against what int8
meant before (bitsandbytes' LLM.int8), each in a fresh process (bench/int8_probe.py).

Two shapes: SmolVLM-256M (the CPU default, from disk, with a 1024-px photo) and Qwen2.5-VL-3B
(built in memory with random weights, a text prompt: on 2 cores its vision tower alone would
take minutes), where the language model's weights dominate and int8 matters most.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bench.common import ROOT, Context, Goal, SectionResult, chat_model_dir, pyplot, spread, summary, table
from bench.reuse import agreement_table, load_agreement

BIG_SHAPE = "qwen2_5_vl-full"
DECODE_GOAL = 1.0  # int8 must not decode slower than bf16 (it reads half the weight bytes)


# A CPU without AVX-512 and bf16 instructions, as far as torch's own kernels, oneDNN and MKL go.
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def probe(model: str, quantization: str, args: list[str], log, env: dict | None = None) -> dict:
    cmd = [sys.executable, "-m", "bench.int8_probe", model, "--quantization", quantization, *args]
    environ = {**os.environ, **(env or {})}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=environ)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip().splitlines()[-1:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    log(
        f"int8: {model.rsplit('/', 1)[-1]} {quantization}: TTFT {row['ttft_s']:.2f} s, {row['tokens_per_s']:.1f} tok/s, "
        f"weights {row['weights_mib']:.0f} MiB, RSS {row['rss_serving_mib']:.0f} MiB serving / {row['rss_peak_mib']:.0f} peak, "
        f"load {row['load_s']:.1f} s"
    )
    return row


def interleaved(
    model: str, variants: list[str], reps: int, args: list[str], log, env: dict | None = None
) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {v: [] for v in variants}
    for rep in range(reps):
        for quantization in variants if rep % 2 == 0 else variants[::-1]:
            rows[quantization].append(probe(model, quantization, args, log, env))
    return rows


def kernels(k: int = 2048, n: int = 11008, copies: int = 8, reps: int = 20) -> dict[str, float]:
    """Milliseconds for one token's product with a k×n weight, cycling through ``copies``
    matrices so the weights come from memory as in a model (not from cache), for the kernels
    one could use on CPU. Numbers only, for the report."""
    import time

    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    weights = [torch.randn(n, k) * 0.02 for _ in range(copies)]
    x = torch.randn(1, k, dtype=torch.bfloat16)
    bf16 = [w.bfloat16() for w in weights]
    scales = [w.abs().amax(1) / 127 for w in weights]
    int8 = [torch.round(w / s[:, None]).to(torch.int8) for w, s in zip(weights, scales, strict=True)]
    del weights

    def w8a8(w, s):  # activations quantized per token as well: what torchao's dynamic int8 does
        sx = x.abs().amax(-1, keepdim=True).float() / 127
        return torch._int_mm(torch.round(x.float() / sx).to(torch.int8), w.t()).float() * sx * s

    calls = {
        "bf16": [lambda w=w: F.linear(x, w) for w in bf16],
        "int8 weight-only": [lambda w=w, s=s.bfloat16(): torch.ops.aten._weight_int8pack_mm(x, w, s) for w, s in zip(int8, scales, strict=True)],
        "int8 weights and activations": [lambda w=w, s=s: w8a8(w, s) for w, s in zip(int8, scales, strict=True)],
    }  # fmt: skip
    out = {}
    for name, fns in calls.items():
        for label, chosen in (("", fns), (" in cache", fns[:1] * len(fns))):
            for f in chosen:
                f()
            started = time.perf_counter()
            for _ in range(reps):
                for f in chosen:
                    f()
            out[name + label] = (time.perf_counter() - started) / reps / len(chosen) * 1000
    return out


def run(ctx: Context) -> SectionResult:
    small = str(chat_model_dir(ctx.cache, "idefics3", "tiny" if ctx.quick else "full"))
    n = 4 if ctx.quick else 32
    small_rows = interleaved(
        small, ["none", "int8"], 1 if ctx.quick else 3, ["--photo", "--tokens", str(n)], ctx.log
    )
    # LLM.int8 on CPU takes minutes for a reply: one run, a shorter one.
    small_rows["bitsandbytes"] = [
        probe(small, "bitsandbytes", ["--photo", "--tokens", str(min(n, 8))], ctx.log)
    ]
    # float32: what auto loads on a CPU without bf16 instructions; natively and as on an AVX2 CPU.
    fp32_args = ["--photo", "--tokens", str(n), "--dtype", "float32"]
    fp32_reps = 1 if ctx.quick else 2
    fp32_rows = interleaved(small, ["none", "int8"], fp32_reps, fp32_args, ctx.log)
    avx2_rows = interleaved(small, ["none", "int8"], fp32_reps, fp32_args, ctx.log, AVX2_ONLY)
    big_model = str(chat_model_dir(ctx.cache, "qwen2_5_vl", "tiny")) if ctx.quick else BIG_SHAPE
    big_args = ["--prompt-words", "150", "--tokens", "4" if ctx.quick else "16"]
    big_rows = interleaved(big_model, ["none", "int8"], 1, big_args, ctx.log)
    kernel_ms = kernels(copies=2, reps=2) if ctx.quick else kernels()
    ctx.log("int8: one-token products, ms: " + ", ".join(f"{k} {v:.2f}" for k, v in kernel_ms.items()))
    agreement = load_agreement(
        ctx.cache, ctx.log, {"dtype": "auto"}, {"dtype": "auto", "quantization": "int8"}, "int8 vs none"
    )

    def med(rows, key):
        return summary([r[key] for r in rows])

    labels = {
        "none": "none",
        "int8": "int8, ours (weight-only)",
        "bitsandbytes": "int8, bitsandbytes (before)",
    }

    def table_rows(rows):
        return [[labels[q], spread(med(r, "ttft_s")), spread(med(r, "tokens_per_s"), digits=1),
                 f"{med(r, 'weights_mib')['median']:.0f}", f"{med(r, 'rss_serving_mib')['median']:.0f}",
                 f"{med(r, 'rss_peak_mib')['median']:.0f}", f"{med(r, 'load_s')['median']:.1f}"]
                for q, r in rows.items()]  # fmt: skip

    headers = [
        "quantization",
        "TTFT s",
        "decode tokens/s",
        "weights MiB",
        "RSS serving MiB",
        "peak RSS MiB",
        "load s",
    ]
    speed = {name: med(rows["int8"], "tokens_per_s")["median"] / med(rows["none"], "tokens_per_s")["median"]
             for name, rows in (("small", small_rows), ("big", big_rows), ("fp32", fp32_rows), ("avx2", avx2_rows))}  # fmt: skip
    memory = med(big_rows["int8"], "weights_mib")["median"] / med(big_rows["none"], "weights_mib")["median"]
    before = (
        med(small_rows["int8"], "tokens_per_s")["median"]
        / med(small_rows["bitsandbytes"], "tokens_per_s")["median"]
    )
    worst = max(r["max_diff"] / r["range"] for r in agreement)
    goals = [
        Goal("int8 decode on CPU vs bfloat16", f"≥ {DECODE_GOAL}×", f"{speed['small']:.2f}× (SmolVLM-256M), {speed['big']:.2f}× (Qwen2.5-VL-3B shape)",
             min(speed["small"], speed["big"]) >= DECODE_GOAL),
        Goal("int8 decode on a CPU without bf16 vs float32", f"≥ {DECODE_GOAL}×",
             f"{speed['avx2']:.2f}× (AVX2 emulated), {speed['fp32']:.2f}× (float32 here)", speed["avx2"] >= DECODE_GOAL),
        Goal("int8 on CPU vs bitsandbytes (before)", "faster", f"{before:.0f}× the decode speed", before > 1),
        Goal("int8 weights vs bfloat16, 3B shape", "report", f"{memory:.2f}× the bytes", None, "vision tower and embeddings stay bf16"),
    ]  # fmt: skip

    plot = ctx.out / "bench-int8.png"
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    for axis, rows, title in (
        (left, small_rows, "SmolVLM-256M shape"),
        (right, big_rows, "Qwen2.5-VL-3B shape"),
    ):
        names = list(rows)
        axis.bar([labels[q].split(",")[0] if q != "bitsandbytes" else "bnb int8" for q in names],
                 [med(rows[q], "tokens_per_s")["median"] for q in names], color=["#888", "#4a7", "#c66"][: len(names)])  # fmt: skip
        axis.set(ylabel="decode tokens/s", title=title)
    fig.tight_layout()
    fig.savefig(plot)
    plt.close(fig)

    small_prompt = small_rows["none"][0]["prompt_tokens"]
    big_prompt = big_rows["none"][0]["prompt_tokens"]
    body = "\n\n".join([
        "`--quantization int8` on CPU keeps the language model's weights as int8 with one scale per output row "
        "(`assistant/models/cpu_int8.py`): one token at a time goes through torch's int8 weight-only kernel "
        "(`aten._weight_int8pack_mm`), a prompt through bf16 GEMMs on weights widened slice by slice. The vision tower "
        "and projector stay as loaded. Before, int8 on CPU meant bitsandbytes' LLM.int8. Fresh process per run, runs "
        "interleaved; TTFT includes the prompt's prefill; weights = parameter and buffer bytes after loading; RSS serving = "
        "the process's resident memory after two replies; peak RSS includes loading (the bf16 weights are read "
        "before they are converted).",
        f"**SmolVLM-256M shape** (from disk, bfloat16), one 1024-px photo and a question ({small_prompt} prompt tokens), "
        f"{n}-token greedy replies ({len(small_rows['none'])} runs each; bitsandbytes: one run, "
        f"{min(n, 8)} tokens):",
        table(headers, table_rows(small_rows)),
        "**A CPU without bf16 instructions**, where `--dtype auto` loads float32: the same SmolVLM-256M runs in "
        f"float32 ({fp32_reps} runs each), on this CPU and with torch's kernels, oneDNN and MKL held to AVX2 "
        f"(`{' '.join(f'{k}={v}' for k, v in AVX2_ONLY.items())}`). The int8 kernel reads activations in bf16 even "
        "then: its bf16 version is fast without bf16 instructions, the float32 one is not.",
        table(["CPU", *headers], [["this one", *r] for r in table_rows(fp32_rows)] + [["AVX2 only", *r] for r in table_rows(avx2_rows)]),
        f"**Qwen2.5-VL-3B shape** (36 layers, hidden 2048; random weights built in memory), a text prompt of "
        f"{big_prompt} tokens, {big_args[-1]}-token greedy replies, one run each:",
        table(headers, table_rows(big_rows)),
        "![int8 decode speed](bench-int8.png)",
        f"int8 decodes at **{speed['small']:.2f}×** bfloat16's speed on the small shape and **{speed['big']:.2f}×** on the "
        f"3B shape, with {memory:.2f}× the weight bytes there; the prompt is slower in int8 (the widened weights cost "
        "a pass each). One token's product with a 2048×11008 weight (Qwen2.5-VL-3B's MLP), weights read from memory "
        "(8 matrices in turn) and, in brackets, from cache: "
        + ", ".join(f"{name} {kernel_ms[name]:.2f} ms ({kernel_ms[name + ' in cache']:.2f})" for name in
                    ("bf16", "int8 weight-only", "int8 weights and activations"))
        + ". So int8 weight-only gains little where the weights come from memory: on this CPU its kernel is bound by "
        "widening int8 to float for the multiply-adds, not by memory bandwidth. Quantizing the activations too (W8A8, "
        "`torch._int_mm`) is faster but changes replies more (activation outliers), so it is not offered.",
        "**int8 replies against bfloat16** on the four tiny architectures (one photo, 8 greedy tokens; random weights "
        "make near-ties between tokens common, so this is a harsh test):",
        agreement_table(agreement),
        f"Largest first-step logit difference: {worst:.2%} of the logits' range.",
    ])  # fmt: skip
    return SectionResult(
        key="int8",
        title="2c. CPU int8: weight-only int8 against bfloat16 and bitsandbytes",
        body=body,
        goals=goals,
        data={
            "small": small_rows,
            "big": big_rows,
            "agreement": agreement,
            "speed": speed,
            "memory": memory,
            "kernels_ms": kernel_ms,
        },
    )
