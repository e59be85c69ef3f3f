"""Loading a Hugging Face chat model (image-text-to-text, or text only) for this process: where its files come from,
quantization (bitsandbytes on GPU, our own int8 on CPU), the dtype, and what is done to the model
before it serves (``prepare_for_inference``). Benchmarks and tools build models through these too.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from assistant.errors import InvalidParams, ModelUnavailable

log = logging.getLogger(__name__)

# Vision towers and projectors, by the module names transformers uses for them. Kept in
# full precision when ``keep_vision_unquantized`` is asked for, and always by the CPU int8 path.
VISION_MODULE_PATTERNS = [
    r"(?:model\.)?(?:visual|vision_tower|vision_model|vision_encoder|multi_modal_projector|connector|mm_projector|embed_vision)",
]


DEFAULT_CONTEXT_LENGTH = 4096


HUB_PROBE_TIMEOUT_S = 5.0


def unavailable_message(model_id: str, reason: str = "") -> str:
    if Path(model_id).expanduser().exists():
        return f"could not load chat model from {model_id}: {reason}".rstrip(": ")
    return (
        f"chat model '{model_id}' is not downloaded here and the model hub cannot be reached. "
        f"Download it on a connected machine with `hf download {model_id}` (then copy the "
        f"cache), or pass --model PATH to a local copy."
    )


def hub_load_options(model_id: str) -> dict:
    """How ``from_pretrained`` should look for ``model_id``.

    A local directory or a fully cached hub model loads without the network. Otherwise one quick
    request tells whether the hub answers: an offline machine then fails in milliseconds with a
    clear message instead of after a minute of download retries.
    """
    if Path(model_id).expanduser().is_dir():
        return {}
    from huggingface_hub import model_info, snapshot_download

    try:
        snapshot_download(model_id, local_files_only=True)
        return {"local_files_only": True}
    except Exception:  # not (fully) cached: fall through to the hub
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise ModelUnavailable(unavailable_message(model_id))
    try:
        model_info(model_id, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as exc:
        name = type(exc).__name__
        if "RepositoryNotFound" in name:
            raise ModelUnavailable(
                f"there is no model '{model_id}' on the Hugging Face hub: check the id, or pass --model PATH"
            ) from None
        if "Gated" in name:
            raise ModelUnavailable(
                f"'{model_id}' is gated: accept its license on the hub, run `hf auth login`, then `hf download {model_id}`"
            ) from None
        raise ModelUnavailable(unavailable_message(model_id)) from None
    return {}


def quantization_config(quantization: str, compute_dtype, keep_vision_unquantized: bool):
    """bitsandbytes settings for 'nf4' / 'int8'; None for 'none'."""
    if quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    skip = VISION_MODULE_PATTERNS + ["lm_head"] if keep_vision_unquantized else None
    if quantization == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
            llm_int8_skip_modules=skip,
        )
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    raise InvalidParams(f"unknown quantization {quantization!r}: use nf4, int8 or none")


def cap_processor_upscaling(processor, max_side: int) -> None:
    """Stop tiling processors (Idefics3 / SmolVLM) from enlarging our images again.

    They resize every image's longest edge *up* to ``size.longest_edge`` (2048 px for SmolVLM)
    and cut it into ``max_image_size`` tiles. After we have downscaled to ``max_side`` that adds
    tokens and time but no detail: 878 vs 349 prompt tokens for a 1024-px photo (TTFT 29 s vs
    8.5 s on 2 CPU cores, docs/benchmarks.md). Cap it at ``max_side`` rounded up to whole tiles.
    """
    import dataclasses
    import math

    image_processor = getattr(processor, "image_processor", None)
    tile = getattr(image_processor, "max_image_size", None)
    size: Any = getattr(image_processor, "size", None)
    if (
        image_processor is None
        or not max_side
        or not isinstance(tile, dict)
        or not tile.get("longest_edge")
        or size is None
    ):
        return
    longest = size.get("longest_edge") if isinstance(size, dict) else getattr(size, "longest_edge", None)
    cap = math.ceil(max_side / tile["longest_edge"]) * tile["longest_edge"]
    if longest and cap < longest:
        image_processor.size = (
            dataclasses.replace(size, longest_edge=cap)
            if dataclasses.is_dataclass(size) and not isinstance(size, type)
            else {**size, "longest_edge": cap}
        )


def context_length(config) -> int:
    text_config = getattr(config, "text_config", None) or config
    for source in (text_config, config):
        value = getattr(source, "max_position_embeddings", None)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_CONTEXT_LENGTH


def inference_thread(name: str) -> ThreadPoolExecutor:
    """The one long-lived thread a loaded model does all its torch work on."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"torch:{Path(name).name[:24]}")


def cpu_supports_bf16() -> bool:
    """Whether this CPU has bfloat16 matmul instructions (AVX512-BF16 or AMX-BF16).

    Read from the kernel's CPU flags: free, exact, and it does not depend on how busy the
    machine is at load time, as a timed probe would. On such a CPU a 1024×768×3072 matmul ran
    at ~1,470 GFLOPS in bfloat16 against ~161 in float32; without the instructions bfloat16 is
    emulated and slower than float32.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_dtype(requested: str, device: str):
    """'auto': bfloat16 on GPUs that have it (else float16); on CPUs bfloat16 where the CPU has
    bf16 instructions, else float32."""
    import torch

    if requested != "auto":
        try:
            return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[requested]
        except KeyError:
            raise InvalidParams(
                f"unknown dtype {requested!r}: use auto, float32, bfloat16 or float16"
            ) from None
    if device_is_cuda(device):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def load_weights(model_id: str, device: str, quantization: str, keep_vision_unquantized: bool, dtype: str):
    """(model, processor), loaded on the inference thread. A model that reads text only (a causal
    LM: hub id, directory, ``.gguf`` file or the embedded one) comes with its tokenizer as the
    processor."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    from assistant.models import gguf

    torch_dtype = resolve_dtype(dtype, device)
    compute = torch_dtype if device_is_cuda(device) or torch_dtype != torch.float32 else torch.bfloat16
    # int8 on CPU is our weight-only int8 (assistant.models.cpu_int8), applied after loading:
    # bitsandbytes' LLM.int8 decodes at a quarter of its speed there.
    cpu_int8 = quantization == "int8" and not device_is_cuda(device)
    quant = None if cpu_int8 else quantization_config(quantization, compute, keep_vision_unquantized)
    path = gguf.resolve(model_id)
    source = hub_load_options(path)
    try:
        text_only = reads_text_only(path, source)
        load_processor = AutoTokenizer if text_only else AutoProcessor
        load_model = AutoModelForCausalLM if text_only else AutoModelForImageTextToText
        processor = load_processor.from_pretrained(path, **source)
        model = load_model.from_pretrained(
            path,
            **source,
            dtype=torch_dtype,
            device_map={"": 0} if device_is_cuda(device) else ("cpu" if quant else None),
            quantization_config=quant,
        )
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as exc:
        raise ModelUnavailable(unavailable_message(model_id, first_line(exc))) from exc
    tokenizer = getattr(processor, "tokenizer", processor)
    if (
        getattr(processor, "chat_template", None) is None
        and getattr(tokenizer, "chat_template", None) is None
    ):
        raise ModelUnavailable(
            f"chat model '{model_id}' has no chat template; use an instruction-tuned model"
        )
    prepare_for_inference(model, device, int8_on_cpu=cpu_int8)
    if not device_is_cuda(device) and torch_dtype == torch.float32 and quantization == "none":
        log.info("float32 weights on CPU: --quantization int8 decodes 2-3x faster (docs/benchmarks.md 2c)")
    return model, processor


def reads_text_only(model_id: str, source: dict) -> bool:
    """Whether ``model_id`` is a text model (its config names no image-text-to-text class)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    config = AutoConfig.from_pretrained(model_id, **source)
    return config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


def prepare_for_inference(model, device: str, *, int8_on_cpu: bool = False) -> None:
    """What the engine does to a freshly loaded model before serving it (benchmarks that build
    a model in memory call it too)."""
    model.eval()
    if device_is_cuda(device):
        return
    if int8_on_cpu:
        from assistant.models.cpu_int8 import quantize_language_model

        quantize_language_model(model, VISION_MODULE_PATTERNS, model.dtype)
    if getattr(model.config, "_attn_implementation", None) == "sdpa":
        # A decoded token's attention as plain matmuls: CPU SDPA is slow for one query.
        from assistant.models import cpu_attention

        model.set_attn_implementation(cpu_attention.register())
    channels_last_patch_convs(model)


def channels_last_patch_convs(model) -> None:
    """Vision towers cut a photo into patches with one strided ``Conv2d``, then flatten and
    transpose its output to (patches, width). From a channels-first conv that gives a
    transposed layout which every elementwise op keeps, so all the tower's layers work on it;
    from a channels-last conv it is contiguous. Same numbers; SmolVLM's tower 0.95x the time on
    CPU (docs/benchmarks.md 2d)."""
    import torch
    from torch import nn

    def channels_last_input(module, args):
        return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.to(memory_format=torch.channels_last)
            module.register_forward_pre_hook(channels_last_input)


def default_prefix_cache_bytes(device: str) -> int:
    """A quarter of the GPU memory still free after loading; on CPU an eighth of RAM, at most 4 GiB."""
    if device_is_cuda(device):
        import torch

        free, _ = torch.cuda.mem_get_info()
        return free // 4
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 * 2**30
    return min(ram // 8, 4 * 2**30)


def device_is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
