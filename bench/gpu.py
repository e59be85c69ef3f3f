"""GPU benchmarks (run through ``bash bench/gpu.sh``; see its header for offline machines).

    python -m bench.gpu [--quick] [--only chat,speech] [--out docs] [--cache .cache/bench]

Chat: the Qwen2.5-VL-3B-Instruct shape with random weights, loaded through the engine's own
``LocalChatModel.load`` in BF16, INT8 (LLM.int8), NF4 (the GPU default) and NF4 variants that
may close NF4's decode-speed gap: vision tower + ``lm_head`` left in BF16
(``keep_vision_unquantized``), and a static KV cache (``cache_implementation="static"``, which
lets transformers compile the decode step where the quantizer allows it). Each variant runs in
its own process so peak-memory figures are its own. Per variant: load time, GPU memory after
loading (weights) and at peak, time to first token with one 1024-px photo (prompt building,
vision tower and prefill) and decode tokens/s over a fixed number of new tokens.

Speech: faster-whisper (embedded Whisper base) on the GPU, float16 vs int8_float16, on the same
espeak-ng clips as the CPU benchmark: load, first call, warm RTF and WER.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import ROOT, fmt, machine, quiet_environment, quiet_transformers, spread, summary, table

VARIANTS: dict[str, dict] = {
    "bf16": {"quantization": "none"},
    "int8": {"quantization": "int8"},
    "nf4 (default)": {"quantization": "nf4"},
    "nf4, vision + lm_head bf16": {"quantization": "nf4", "keep_vision_unquantized": True},
    "nf4, static cache": {"quantization": "nf4", "static_cache": True},
    "bf16, static cache": {"quantization": "none", "static_cache": True},
}
WHISPER_TYPES = ("float16", "int8_float16")
VRAM_GOAL = 0.35
SPEED_GOAL = 0.90
QUESTION = "Describe this photo in detail."
GIB = 2**30


# ------------------------------------------------------------------------------- children


def photo_1024():
    from PIL import Image
    from skimage import data

    img = Image.fromarray(data.coffee())  # 600x400
    return img.resize((1024, round(1024 * img.height / img.width)), Image.Resampling.LANCZOS)


def process_gpu_memory_gib() -> float | None:
    """This process's GPU memory as nvidia-smi sees it (CUDA context included)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        pid, _, used = line.partition(",")
        if pid.strip() == str(os.getpid()):
            return float(used) / 1024
    return None


def chat_variant(name: str, model_dir: str, new_tokens: int, reps: int) -> dict:
    import torch

    from assistant.conversation import Message
    from assistant.models.local import LocalChatModel
    from bench.chat import TimingStreamer, greedy_generate

    quiet_transformers()
    spec = VARIANTS[name]
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    chat = LocalChatModel.load(
        model_dir,
        device="cuda",
        quantization=spec["quantization"],
        image_max_side=1024,
        keep_vision_unquantized=spec.get("keep_vision_unquantized", False),
    )
    torch.cuda.synchronize()
    load_s = time.perf_counter() - started
    weights = torch.cuda.memory_allocated()
    messages = [Message.user(QUESTION, (photo_1024(),))]
    extra = {"cache_implementation": "static"} if spec.get("static_cache") else {}

    def once(n: int) -> dict:
        t0 = time.perf_counter()
        inputs = chat.prepare_inputs(messages)
        streamer = TimingStreamer()
        greedy_generate(chat, inputs, n, streamer, **extra)
        torch.cuda.synchronize()
        ended = time.perf_counter()
        first = streamer.times[0]
        return {
            "ttft_s": first - t0,
            "tokens_per_s": (len(streamer.times) - 1) / (ended - first),
            "tokens": len(streamer.times),
            "prompt_tokens": int(inputs["input_ids"].shape[-1]),
        }

    warm = [once(new_tokens) for _ in range(2 if extra else 1)]  # static cache: the first call compiles
    runs = [once(new_tokens) for _ in range(reps)]
    return {
        "variant": name,
        "load_s": load_s,
        "weights_gib": weights / GIB,
        "peak_gib": torch.cuda.max_memory_allocated() / GIB,
        "reserved_gib": torch.cuda.max_memory_reserved() / GIB,
        "process_gib": process_gpu_memory_gib(),
        "runs": runs,
        "warmup": warm,
        "device": torch.cuda.get_device_name(0),
    }


def whisper_type(compute_type: str, cache: str, quick: bool, reps: int) -> dict:
    from assistant.speech import WhisperTranscriber
    from bench.speech import build_clips, build_long, transcribe_timed, wer

    clips = build_clips(Path(cache), quick)
    long_clip = build_long(Path(cache), 8 if quick else 600)
    started = time.perf_counter()
    model = WhisperTranscriber("embedded", device="cuda", compute_type=compute_type, max_audio_seconds=900)
    load_s = time.perf_counter() - started
    first_s, _ = transcribe_timed(model, clips[0].samples())
    rows = []
    for clip in clips:
        samples = clip.samples()
        times, text = [], ""
        for _ in range(reps):
            elapsed, transcript = transcribe_timed(model, samples)
            times.append(elapsed)
            text = transcript.text
        rows.append({"clip": clip.name, "seconds": clip.seconds, "times": times, "wer": wer(clip.text, text)})
    long_s, long_t = transcribe_timed(model, long_clip.samples())
    return {
        "compute_type": compute_type,
        "load_s": load_s,
        "first_s": first_s,
        "clips": rows,
        "process_gib": process_gpu_memory_gib(),
        "long": {"seconds": long_clip.seconds, "elapsed_s": long_s, "wer": wer(long_clip.text, long_t.text)},
    }


def _child(argv: list[str], timeout: int = 1800) -> dict:
    """Run ``python -m bench.gpu child ...`` and return its JSON (or the error it died of)."""
    cmd = [sys.executable, "-m", "bench.gpu", "child", *argv]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": " / ".join(tail)[:400] or f"exit {proc.returncode}"}


# ------------------------------------------------------------------------------- report


def gpu_machine() -> dict:
    info = machine()
    try:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
        info["gpu_gib"] = (
            round(torch.cuda.get_device_properties(0).total_memory / GIB, 1)
            if torch.cuda.is_available()
            else None
        )
        info["cuda"] = torch.version.cuda
    except Exception as exc:  # pragma: no cover - reported, not fatal
        info["gpu"] = f"unknown ({exc})"
    import importlib.metadata

    for dist in ("bitsandbytes", "accelerate"):
        try:
            info["versions"][dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info["versions"][dist] = "not installed"
    return info


def render(results: dict) -> str:
    m = results["machine"]
    v = m.get("versions", {})
    lines = [
        "# GPU benchmarks",
        "",
        f"Command: `{results['command']}`, {results['at']}, {results['seconds'] / 60:.1f} min.",
        f"Machine: {m.get('gpu')} ({m.get('gpu_gib')} GiB), CUDA {m.get('cuda')}; {m.get('cpu')}, {m.get('cores')} cores, {m.get('ram_gib')} GiB RAM; "
        f"torch {v.get('torch')}, transformers {v.get('transformers')}, bitsandbytes {v.get('bitsandbytes')}, "
        f"faster-whisper {v.get('faster-whisper')}, ctranslate2 {v.get('ctranslate2')}.",
        "",
    ]
    chat = results.get("chat")
    if chat:
        lines += [
            f"## Chat: Qwen2.5-VL-3B-Instruct shape (random weights), one 1024-px photo, {chat['new_tokens']} new tokens, "
            f"{chat['reps']} runs after warm-up; median (min–max)",
            "",
        ]
        base = chat["variants"].get("bf16", {})
        base_peak = base.get("peak_gib")
        base_tps = (
            summary([r["tokens_per_s"] for r in base.get("runs", [])])["median"] if base.get("runs") else None
        )
        rows = []
        for name, r in chat["variants"].items():
            if "error" in r:
                rows.append([name, "failed: " + r["error"], "", "", "", "", "", "", ""])
                continue
            tps = summary([x["tokens_per_s"] for x in r["runs"]])
            ttft = summary([x["ttft_s"] for x in r["runs"]])
            rows.append(
                [
                    name,
                    f"{r['load_s']:.1f}",
                    f"{r['weights_gib']:.2f}",
                    f"{r['peak_gib']:.2f}",
                    fmt(r.get("process_gib") or float("nan")),
                    spread(ttft, 1, 3),
                    spread(tps, 1, 1),
                    f"{r['peak_gib'] / base_peak:.2f}×" if base_peak else "–",
                    f"{tps['median'] / base_tps:.2f}×" if base_tps else "–",
                ]
            )
        lines += [
            table(
                [
                    "variant",
                    "load s",
                    "GPU GiB after load",
                    "peak GiB (torch)",
                    "process GiB (nvidia-smi)",
                    "TTFT s",
                    "decode tok/s",
                    "peak vs bf16",
                    "tok/s vs bf16",
                ],
                rows,
            ),
            "",
        ]
        nf4 = chat["variants"].get("nf4 (default)", {})
        if base_peak and base_tps and "runs" in nf4:
            vram = nf4["peak_gib"] / base_peak
            speed = summary([x["tokens_per_s"] for x in nf4["runs"]])["median"] / base_tps
            nf4_names = [n for n, r in chat["variants"].items() if n.startswith("nf4") and "runs" in r]
            best = max(
                nf4_names,
                key=lambda n: summary([x["tokens_per_s"] for x in chat["variants"][n]["runs"]])["median"],
            )
            best_speed = (
                summary([x["tokens_per_s"] for x in chat["variants"][best]["runs"]])["median"] / base_tps
            )
            lines += [
                f"- NF4 peak memory vs BF16: **{vram:.2f}×** (goal ≤ {VRAM_GOAL}): **{'met' if vram <= VRAM_GOAL else 'missed'}**.",
                f"- NF4 decode tokens/s vs BF16: **{speed:.2f}×** (goal ≥ {SPEED_GOAL}): **{'met' if speed >= SPEED_GOAL else 'missed'}**; "
                f"fastest NF4 variant: {best}, {best_speed:.2f}×.",
                "",
            ]
    speech = results.get("speech")
    if speech:
        lines += ["## Speech: faster-whisper (embedded Whisper base) on the GPU", ""]
        rows = []
        for r in speech["types"]:
            if "error" in r:
                rows.append([r.get("compute_type", "?"), "failed: " + r["error"], "", "", "", "", ""])
                continue
            total = sum(summary(c["times"])["median"] for c in r["clips"]) / sum(
                c["seconds"] for c in r["clips"]
            )
            wer = sum(c["wer"] * c["seconds"] for c in r["clips"]) / sum(c["seconds"] for c in r["clips"])
            rows.append(
                [
                    r["compute_type"],
                    f"{r['load_s']:.2f}",
                    f"{r['first_s']:.2f}",
                    f"{total:.4f}",
                    f"{r['long']['elapsed_s'] / r['long']['seconds']:.4f}",
                    f"{wer * 100:.1f}",
                    fmt(r.get("process_gib") or float("nan")),
                ]
            )
        lines += [
            table(
                [
                    "compute type",
                    "load s",
                    "first call s",
                    "RTF warm (5–60 s clips)",
                    "RTF 10 min",
                    "WER % (duration-weighted)",
                    "process GiB",
                ],
                rows,
            ),
            "",
        ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    quiet_environment()
    if argv and argv[0] == "child":
        kind, rest = argv[1], argv[2:]
        if kind == "chat":
            name, model_dir, n, reps = rest
            result = chat_variant(name, model_dir, int(n), int(reps))
        else:
            compute_type, cache, quick, reps = rest
            result = whisper_type(compute_type, cache, quick == "1", int(reps))
        print(json.dumps(result))
        return 0

    p = argparse.ArgumentParser(prog="bash bench/gpu.sh")
    p.add_argument(
        "--quick", action="store_true", help="tiny model, few tokens: checks the script on a GPU in a minute"
    )
    p.add_argument("--only", default="chat,speech")
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    p.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench")
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("error: no CUDA GPU visible to torch; the GPU benchmarks need one", file=sys.stderr)
        return 2
    started = time.perf_counter()
    results: dict = {
        "command": "bash bench/gpu.sh " + " ".join(map(shlex.quote, argv)),
        "machine": gpu_machine(),
    }
    only = {s.strip() for s in args.only.split(",")}
    if "chat" in only:
        from tools.random_models import build

        quiet_transformers()
        size = "tiny" if args.quick else "full"
        t = time.perf_counter()
        model_dir = build("qwen2_5_vl", args.cache / "models" / f"qwen2_5_vl-{size}-raw", size=size)
        print(
            f"[gpu] model ready in {time.perf_counter() - t:.0f} s: {model_dir}", file=sys.stderr, flush=True
        )
        n, reps = (8, 1) if args.quick else (128, 3)
        variants = {}
        for name in VARIANTS:
            variants[name] = _child(["chat", name, str(model_dir), str(n), str(reps)])
            print(f"[gpu] {name}: {json.dumps(variants[name])[:300]}", file=sys.stderr, flush=True)
        results["chat"] = {"new_tokens": n, "reps": reps, "variants": variants}
    if "speech" in only:
        types = []
        for compute_type in WHISPER_TYPES:
            types.append(
                _child(
                    [
                        "speech",
                        compute_type,
                        str(args.cache),
                        "1" if args.quick else "0",
                        "1" if args.quick else "3",
                    ]
                )
            )
            types[-1].setdefault("compute_type", compute_type)
            print(f"[gpu] whisper {compute_type}: {json.dumps(types[-1])[:300]}", file=sys.stderr, flush=True)
        results["speech"] = {"types": types}
    results["seconds"] = time.perf_counter() - started
    results["at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    args.out.mkdir(parents=True, exist_ok=True)
    md = render(results)
    (args.out / "benchmarks-gpu.md").write_text(md)
    (args.out / "benchmarks-gpu.json").write_text(json.dumps(results, indent=1) + "\n")
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "benchmarks-gpu.md").write_text(md)
        (out / "benchmarks-gpu.json").write_text(json.dumps(results, indent=1) + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
