"""One measurement in a fresh process (for bench/reuse.py): a model loaded in one dtype, one
1024-px photo, TTFT and decode speed, peak RSS. A fresh process per run, because which threads
have touched torch before changes how fast ``generate`` runs, and memory is only honest per process.

    python -m bench.probe_run MODEL_DIR --dtype auto|float32|bfloat16 --mode engine|thread-per-reply
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time


def engine(model_dir: str, dtype: str, n: int, image) -> dict:
    """The engine as it is: one long-lived inference thread does all torch work."""
    from assistant.conversation import ImageAttachment, Message
    from assistant.models.base import ChatRequest
    from assistant.models.local import LocalChatModel
    from assistant.options import GenerationParams

    chat = LocalChatModel.load(model_dir, dtype=dtype, prefix_cache_bytes=0, image_max_side=1024)
    messages = [Message("user", "Describe this picture in detail.", (ImageAttachment(image),))]
    runs = []
    for _ in range(2):  # a warm-up, then the measured run
        request = ChatRequest(messages, GenerationParams(max_new_tokens=n, min_new_tokens=n, temperature=0))
        started = time.perf_counter()
        times = [time.perf_counter() for item in chat.stream(request) if isinstance(item, str)]
        runs.append({"ttft_s": times[0] - started, "tokens_per_s": (len(times) - 1) / (times[-1] - times[0])})
    return {**runs[-1], "dtype": chat.info.dtype}


def thread_per_reply(model_dir: str, dtype: str, n: int, image) -> dict:
    """The engine before: weights loaded and the processor run in the caller's thread, then a
    new thread per reply for ``generate``."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from assistant.models.loading import cap_processor_upscaling, resolve_dtype
    from bench.chat import TimingStreamer, greedy_generate

    torch_dtype = resolve_dtype(dtype, "cpu")
    processor = AutoProcessor.from_pretrained(model_dir)
    cap_processor_upscaling(processor, 1024)  # the same prompt as the engine's (5 tiles, not 17)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch_dtype).eval()
    chat = type("Chat", (), {"model": model, "tokenizer": processor.tokenizer})()
    content = [
        {"type": "image", "image": image},
        {"type": "text", "text": "Describe this picture in detail."},
    ]
    runs = []
    for _ in range(2):
        started = time.perf_counter()
        inputs = processor.apply_chat_template(
            [{"role": "user", "content": content}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )
        streamer = TimingStreamer()
        worker = threading.Thread(target=greedy_generate, args=(chat, inputs, n, streamer))
        worker.start()
        worker.join()
        t = streamer.times
        runs.append({"ttft_s": t[0] - started, "tokens_per_s": (len(t) - 1) / (t[-1] - t[0])})
    return {**runs[-1], "dtype": str(torch_dtype).removeprefix("torch.")}


def main(argv: list[str] | None = None) -> int:
    from bench.common import peak_rss_mib, quiet_environment, quiet_transformers
    from bench.gpu import photo_1024

    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--mode", choices=("engine", "thread-per-reply"), default="engine")
    p.add_argument("--tokens", type=int, default=32)
    args = p.parse_args(argv)
    quiet_environment()
    quiet_transformers()
    run = engine if args.mode == "engine" else thread_per_reply
    result = run(args.model_dir, args.dtype, args.tokens, photo_1024())
    result.update(mode=args.mode, asked=args.dtype, rss_mib=peak_rss_mib())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
