"""One measurement in a fresh process (for bench/int8.py): a model loaded as the engine loads it
with one quantization, then TTFT, decode speed, weight bytes and memory.

    python -m bench.int8_probe MODEL_DIR --quantization none|int8|bitsandbytes [--photo] [--tokens N] [--dtype D]
    python -m bench.int8_probe qwen2_5_vl-full ...   (built in memory with random weights: no disk)

``bitsandbytes`` is what ``--quantization int8`` meant on CPU before: LLM.int8 layers.
A fresh process per run, because memory is only honest per process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

QUESTION = "Describe this picture in detail."


def load(model: str, quantization: str, dtype: str = "auto"):
    """(LocalChatModel, seconds to load)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from assistant.models.loading import prepare_for_inference, quantization_config
    from assistant.models.local import LocalChatModel
    from bench.common import words_only

    started = time.perf_counter()
    on_disk = Path(model).is_dir()
    if on_disk and quantization != "bitsandbytes":
        chat = LocalChatModel.load(model, quantization=quantization, prefix_cache_bytes=0, dtype=dtype)
        return chat, time.perf_counter() - started
    if on_disk:  # bitsandbytes, as the engine loaded it on CPU before
        processor = AutoProcessor.from_pretrained(model)
        weights = AutoModelForImageTextToText.from_pretrained(
            model,
            dtype=torch.bfloat16,
            device_map="cpu",
            quantization_config=quantization_config("int8", torch.bfloat16, False),
        )
        prepare_for_inference(weights, "cpu")
    else:  # a full shape built in memory: a 3B model on disk would take 7 GB and minutes
        from tools.random_models import build_parts

        arch, _, size = model.rpartition("-")
        processor, config, _ = build_parts(arch, size=size)
        torch.manual_seed(0)
        weights = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
        words_only(weights, processor)  # replies are visible words, as in bench.common.chat_model_dir
        prepare_for_inference(weights, "cpu", int8_on_cpu=quantization == "int8")
    chat = LocalChatModel(
        weights, processor, name=model, device="cpu", quantization=quantization, prefix_cache_bytes=0
    )
    return chat, time.perf_counter() - started


def weight_mib(model) -> float:
    tensors = [*model.parameters(), *model.buffers()]
    seen = {t.data_ptr(): t.nbytes for t in tensors}  # tied weights count once
    return sum(seen.values()) / 2**20


def main(argv: list[str] | None = None) -> int:
    from assistant.conversation import ImageAttachment, Message
    from assistant.models.base import ChatRequest
    from assistant.options import GenerationParams
    from bench.common import peak_rss_mib, quiet_environment, quiet_transformers, rss_mib
    from bench.gpu import photo_1024

    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--quantization", choices=("none", "int8", "bitsandbytes"), default="none")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--dtype", default="auto", help="for a model directory (not bitsandbytes)")
    p.add_argument("--photo", action="store_true", help="a 1024-px photo with the question")
    p.add_argument("--prompt-words", type=int, default=0, help="text before the question instead")
    args = p.parse_args(argv)
    quiet_environment()
    quiet_transformers()
    chat, load_s = load(args.model, args.quantization, args.dtype)
    rss_loaded = rss_mib()
    words = " ".join(f"word{i % 97}" for i in range(args.prompt_words))
    images = (ImageAttachment(photo_1024()),) if args.photo else ()
    messages = [Message("user", f"{words} {QUESTION}".strip(), images)]
    runs = []
    for _ in range(2):  # a warm-up, then the measured run
        params = GenerationParams(max_new_tokens=args.tokens, min_new_tokens=args.tokens, temperature=0)
        started = time.perf_counter()
        times = []
        for item in chat.stream(ChatRequest(messages, params)):
            if isinstance(item, str):
                times.append(time.perf_counter())
            else:
                prompt_tokens = item.prompt_tokens
        runs.append({
            "ttft_s": times[0] - started,
            "tokens_per_s": (len(times) - 1) / (times[-1] - times[0]),
            "prompt_tokens": prompt_tokens,
        })  # fmt: skip
    result = {
        **runs[-1],
        "quantization": args.quantization,
        "load_s": load_s,
        "weights_mib": weight_mib(chat.model),
        "rss_loaded_mib": rss_loaded,
        "rss_serving_mib": rss_mib(),  # after two replies: every weight page has been read
        "rss_peak_mib": peak_rss_mib(),
        "dtype": chat.info.dtype,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
