"""Any Hugging Face image-text-to-text model, run in this process.

Loading goes through ``AutoProcessor`` + ``AutoModelForImageTextToText`` (a hub id or a local
directory), optionally quantized with bitsandbytes. Prompts are built with the processor's own
chat template; replies stream from a worker thread through ``TextIteratorStreamer``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from assistant.conversation import ImageAttachment, Message, VideoAttachment
from assistant.errors import AssistantError, GenerationFailed, InvalidParams, ModelUnavailable
from assistant.models.base import ChatRequest, GenerationParams, ModelInfo, Usage
from assistant.models.prefix_cache import Entry, ImageSpan, PrefixCache, image_digest

log = logging.getLogger(__name__)

# Vision towers and projectors, by the module names transformers uses for them. Kept in
# full precision when ``keep_vision_unquantized`` is asked for, and always by the CPU int8 path.
VISION_MODULE_PATTERNS = [
    r"(?:model\.)?(?:visual|vision_tower|vision_model|vision_encoder|multi_modal_projector|connector|mm_projector|embed_vision)",
]
ZERO_WIDTH_SPACE = "\u200b"
DEFAULT_CONTEXT_LENGTH = 4096
TEMPLATE_OVERHEAD_TOKENS = 8  # role markers and separators around each message
HUB_PROBE_TIMEOUT_S = 5.0
VIDEO_PROBE_SIDE = 448  # the frame size the video token cost is measured at


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


def _context_length(config) -> int:
    text_config = getattr(config, "text_config", None) or config
    for source in (text_config, config):
        value = getattr(source, "max_position_embeddings", None)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_CONTEXT_LENGTH


def control_strings(processor) -> list[str]:
    """Every string the tokenizer or processor would turn into a control token.

    Added tokens are matched before normal tokenization, and processors expand image
    placeholders in the prompt text, so any of these typed by a user must be defused.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    found = {tok.content for tok in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    found.update(getattr(tokenizer, "all_special_tokens", []))
    for name in dir(processor):
        if name.endswith("_token") and not name.startswith("_"):
            value = getattr(processor, name, None)
            if isinstance(value, str):
                found.add(value)
    return sorted((s for s in found if len(s) >= 2), key=len, reverse=True)


class ControlTokenGuard:
    """Makes user text unable to spell a control token: a zero-width space goes after the
    first character of any such string, so it reads the same but tokenizes as plain text."""

    def __init__(self, strings: Sequence[str]):
        self._pattern = re.compile("|".join(re.escape(s) for s in strings)) if strings else None

    def __call__(self, text: str) -> str:
        if not self._pattern:
            return text
        return self._pattern.sub(lambda m: m.group(0)[0] + ZERO_WIDTH_SPACE + m.group(0)[1:], text)


class LocalChatModel:
    """One loaded model, one generation at a time (the Assistant queues the callers).

    All torch work — loading, the processor, the vision tower, prefill and decode — runs on one
    long-lived inference thread (``self.worker``). Measured on 2 CPU cores: ``generate`` runs at
    ~29 tokens/s in a thread that is the only one to have used torch, and at ~17 once another
    living thread has run a parallel torch op (their OpenMP thread teams compete for the cores).
    Callers hand the work over and read the streamed text.
    """

    concurrent = False

    def __init__(
        self,
        model,
        processor,
        *,
        name: str,
        device: str,
        quantization: str,
        image_max_side: int = 1024,
        worker: ThreadPoolExecutor | None = None,
        prefix_cache_bytes: int | None = None,
    ):
        self.model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.worker = worker or inference_thread(name)
        self._lock = threading.Lock()  # one generation at a time, also for callers that bypass the queue
        self._guard = ControlTokenGuard(control_strings(processor))
        cap_processor_upscaling(processor, image_max_side)
        self.info = ModelInfo(
            name=name,
            backend="local",
            device=device,
            quantization=quantization,
            context_length=_context_length(model.config),
            dtype=str(model.dtype).removeprefix("torch."),
        )
        budget = default_prefix_cache_bytes(device) if prefix_cache_bytes is None else prefix_cache_bytes
        self.prefix_cache = PrefixCache(budget)
        self._system_ids: dict[str, list[int]] = {}  # system text -> its turn's tokens alone
        self.record_first_logits = False  # tests and benchmarks compare reuse against a fresh prefill
        self.first_logits = None
        self.image_tokens = self.worker.submit(self._measure_image_tokens, image_max_side).result()
        # Clips go to the processor's own video path when it has one (Qwen2.5-VL, SmolVLM2…);
        # other models get frames as images (assistant.core decides from this).
        self.accepts_video = takes_video(processor)
        self.video_tokens = (
            self.worker.submit(self._measure_video_tokens).result() if self.accepts_video else 0
        )

    @classmethod
    def load(
        cls,
        model_id: str,
        *,
        device: str = "cpu",
        quantization: str = "none",
        image_max_side: int = 1024,
        keep_vision_unquantized: bool = False,
        dtype: str = "auto",
        prefix_cache_bytes: int | None = None,
    ) -> LocalChatModel:
        if quantization not in ("none", "nf4", "int8"):
            raise InvalidParams(f"unknown quantization {quantization!r}: use auto, nf4, int8 or none")
        worker = inference_thread(model_id)
        model, processor = worker.submit(
            _load_weights, model_id, device, quantization, keep_vision_unquantized, dtype
        ).result()
        return cls(
            model,
            processor,
            name=model_id,
            device=device,
            quantization=quantization,
            image_max_side=image_max_side,
            worker=worker,
            prefix_cache_bytes=prefix_cache_bytes,
        )

    # -- prompt building -------------------------------------------------------------------

    def _template_messages(self, messages: Sequence[Message], merge_system: bool = False) -> list[dict]:
        result: list[dict] = []
        pending_system = ""
        for message in messages:
            text = self._guard(message.text)
            if message.role == "system" and merge_system:
                pending_system = text
                continue
            if message.role == "user" and pending_system:
                text = f"{pending_system}\n\n{text}".strip()
                pending_system = ""
            content = [{"type": "image", "image": image} for image in message.images]
            content += [{"type": "video", "video": list(clip.frames)} for clip in message.videos]
            if text or not content:
                content.append({"type": "text", "text": text})
            result.append({"role": message.role, "content": content})
        return result

    def prepare_inputs(self, messages: Sequence[Message]):
        """Tokenized prompt (``input_ids``, pixel tensors…) on the model's device."""
        from jinja2 import TemplateError

        continues = bool(messages) and messages[-1].role == "assistant"  # Continue a cut-off reply
        kwargs = dict(
            add_generation_prompt=not continues,
            continue_final_message=continues,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )
        kwargs.update(video_options(messages))
        try:
            inputs = self.processor.apply_chat_template(self._template_messages(messages), **kwargs)
        except TemplateError:
            # Some templates refuse a system role: fold the system prompt into the first user turn.
            inputs = self.processor.apply_chat_template(
                self._template_messages(messages, merge_system=True), **kwargs
            )
        return inputs.to(self.model.device)

    def _measure_image_tokens(self, side: int) -> int:
        """Prompt tokens one image of the largest allowed size costs (an upper bound)."""
        probe = Image.new("RGB", (max(side, 32), max(side, 32)), (127, 127, 127))
        try:
            with_image = self.prepare_inputs([Message("user", "x", (ImageAttachment(probe),))])[
                "input_ids"
            ].shape[-1]
            without = self.prepare_inputs([Message("user", "x")])["input_ids"].shape[-1]
            return max(1, with_image - without)
        except Exception as exc:  # a model we cannot probe still works; estimate generously
            log.warning("could not measure image token cost (%s); assuming 1024", exc)
            return 1024

    def _measure_video_tokens(self) -> int:
        """Prompt tokens of a two-frame probe clip of VIDEO_PROBE_SIDE pixels (0: cannot tell)."""
        from assistant.video import Clip

        frame = Image.new("RGB", (VIDEO_PROBE_SIDE, VIDEO_PROBE_SIDE), (127, 127, 127))
        probe = Clip("probe", (frame, frame), (0.5, 1.5), 2.0, 1.0, frame.size)
        try:
            with_video = self.prepare_inputs([Message("user", "x", (VideoAttachment(probe),))])
            without = self.prepare_inputs([Message("user", "x")])
            return max(1, with_video["input_ids"].shape[-1] - without["input_ids"].shape[-1])
        except Exception as exc:  # a processor that says it takes video but cannot: frames as images
            log.warning("this model's processor cannot read video (%s); clips go as frames", exc)
            self.accepts_video = False
            return 0

    def count_tokens(self, message: Message) -> int:
        text_tokens = (
            len(self.tokenizer(message.text, add_special_tokens=False)["input_ids"]) if message.text else 0
        )
        video_tokens = 0
        for clip in message.videos:  # the probe's cost, scaled by frame pairs and frame area
            w, h = clip.frames[0].size if clip.frames else (VIDEO_PROBE_SIDE, VIDEO_PROBE_SIDE)
            area = max(1.0, w * h / VIDEO_PROBE_SIDE**2)
            video_tokens += math.ceil(self.video_tokens * area * max(1, math.ceil(len(clip.frames) / 2)))
        return TEMPLATE_OVERHEAD_TOKENS + text_tokens + self.image_tokens * len(message.images) + video_tokens

    # -- generation ------------------------------------------------------------------------

    def stream(self, request: ChatRequest) -> Generator[str | Usage, None, None]:
        """Hand the generation to the inference thread and yield its text as it comes."""
        streamer = text_streamer(self.tokenizer)
        report: dict[str, Any] = {}
        with self._lock:
            job = self.worker.submit(self._generate, request, streamer, report)
            drained = False
            try:
                for chunk in streamer:
                    if chunk:
                        yield chunk
                drained = True
            finally:
                # The consumer stopped early: stop generating within one token. (Not merely "the
                # job is still running": just after the streamer ends it still is, and a reply
                # that ended by itself would then be reported as cancelled.)
                if not drained:
                    request.cancel.set()
                failure = job.exception()  # waits: the model is free once this returns
        if failure is not None:
            raise failure if isinstance(failure, AssistantError) else _generation_error(failure)
        params = request.params
        if request.cancel.is_set() and streamer.generated < params.max_new_tokens:
            finish = "cancelled"
        elif streamer.generated >= params.max_new_tokens:
            finish = "length"
        else:
            finish = "stop"
        yield Usage(
            report["prompt_tokens"],
            streamer.generated,
            finish,
            streamer.first_token_at,
            cached_tokens=report.get("cached_tokens", 0),
        )

    def warm(self, request: ChatRequest, give_way: Callable[[], bool] | None = None) -> None:
        """Read ``request``'s prompt into the prefix cache (one token generated, then dropped):
        a later prompt that starts the same way, photos included, is answered from there.
        ``give_way``: polled at every layer; when it says True the reading stops there."""
        if not self.prefix_cache.enabled:
            return
        params = GenerationParams(max_new_tokens=1, temperature=0)
        for _ in self.stream(replace(request, params=params, cancel=threading.Event(), give_way=give_way)):
            pass

    def _generate(self, request: ChatRequest, streamer, report: dict[str, Any]) -> None:
        """On the inference thread: build the prompt, reuse what the prefix cache holds of it,
        generate into ``streamer``; fills ``report`` (prompt and cached token counts)."""
        try:
            with stops_between_layers(self.model, request.give_way):
                self._generate_within(request, streamer, report)
        except GaveWay:
            log.debug("a read-ahead gave way to a waiting turn")
        finally:
            streamer.end()  # the consumer never waits forever
            _free_device_memory(self.info.device)

    def _generate_within(self, request: ChatRequest, streamer, report: dict[str, Any]) -> None:
        """:meth:`_generate`'s work."""
        report["prompt_tokens"] = 0  # also when giving way before the prompt is built
        inputs = self.prepare_inputs(request.messages)
        prompt_tokens = int(inputs["input_ids"].shape[-1])
        report["prompt_tokens"] = prompt_tokens
        params = request.params
        if prompt_tokens + params.max_new_tokens > self.info.context_length:
            room = self.info.context_length - prompt_tokens
            raise InvalidParams(
                f"the conversation takes {prompt_tokens} tokens and the model's context is "
                f"{self.info.context_length}: start a new chat, send fewer images, or ask for at most {max(room, 0)} new tokens"
            )
        images = [image for m in request.messages for image in m.images]
        try:
            self._generate_with_cache(inputs, images, request, streamer, report)
        except Exception as exc:
            if not _out_of_memory(exc) or not self.prefix_cache.enabled or streamer.generated:
                raise
            # The cache took the memory the prompt needed: free it, and try once without.
            self.prefix_cache.clear()
            _free_device_memory(self.info.device)
            streamer.next_tokens_are_prompt = True  # the retry's generate puts the prompt again
            self._generate_with_cache(inputs, images, request, streamer, report, reuse=False)

    def _generate_with_cache(
        self, inputs, images, request: ChatRequest, streamer, report, reuse: bool = True
    ):
        import torch
        from transformers import DynamicCache, StoppingCriteria, set_seed

        cancel, params = request.cancel, request.params

        class CancelCriteria(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full(
                    (input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device
                )

        ids = inputs["input_ids"][0].tolist()
        layout = image_layout(self, ids, inputs, images)
        owner = request.user
        shared = self._server_prefix(request, ids) if self.prefix_cache.enabled else 0
        kv, cached, model_inputs = None, 0, dict(inputs)
        if reuse and self.prefix_cache.enabled:
            kv, cached = self.prefix_cache.take(ids, layout.spans, owner, shared)
            usable = layout.usable(cached)
            if kv is not None and usable >= self.prefix_cache.min_reuse:
                kv.crop(usable - cached)
                cached, model_inputs = usable, layout.inputs_after(inputs, usable)
                model_inputs.update(_positions_for_reuse(self.model, inputs))
            else:
                kv, cached = None, 0
        if kv is None:
            kv = DynamicCache()  # config-less: every layer keeps all its tokens, so it can be cropped
        report["cached_tokens"] = cached
        sampling = (
            dict(do_sample=True, temperature=params.temperature, top_p=params.top_p)
            if params.temperature > 0
            else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        )
        if params.seed is not None:
            set_seed(params.seed)
        # If generate raises, the cache is not put back: a half-updated one is inconsistent.
        # Giving way is the exception: cut back to what it held, it is whole again.
        try:
            out = self._run_generate(model_inputs, sampling, kv, params, streamer, CancelCriteria())
        except GaveWay:
            if cached and self.prefix_cache.enabled:
                cut_back(kv, cached)
                kept = [span for span in layout.spans if span.end <= cached]
                self.prefix_cache.put(
                    Entry(ids[:cached], kept, kv, cache_bytes(kv), owner, min(shared, cached))
                )
            raise
        if self.record_first_logits:
            self.first_logits = out.logits[0][0].float().cpu()
        if self.prefix_cache.enabled:  # a cancelled reply is fine: the ids say what the cache holds
            length = kv.get_seq_length()
            self.prefix_cache.put(
                Entry(out.sequences[0, :length].tolist(), layout.spans, kv, cache_bytes(kv), owner, shared)
            )

    def _server_prefix(self, request: ChatRequest, ids: list[int]) -> int:
        """How many leading tokens of the prompt ``ids`` only the server wrote (its system prompt
        and the template around it): the part of a cache entry any user may reuse. The system
        turn is rendered alone; nothing of it can depend on what a user wrote."""
        first = request.messages[0] if request.messages else None
        if not request.shared_system or first is None or first.role != "system":
            return 0
        rendered = self._system_ids.get(first.text)
        if rendered is None:
            try:
                rendered = self.prepare_inputs([first])["input_ids"][0].tolist()
            except Exception:  # a template that wants a user turn: share nothing
                rendered = []
            if len(self._system_ids) >= 32:
                self._system_ids.pop(next(iter(self._system_ids)))
            self._system_ids[first.text] = rendered
        n = min(len(rendered), len(ids))
        return next((i for i in range(n) if rendered[i] != ids[i]), n)

    def _run_generate(self, model_inputs, sampling, kv, params: GenerationParams, streamer, cancel_criteria):
        import torch
        from transformers import StoppingCriteriaList

        with torch.inference_mode():
            return self.model.generate(
                **model_inputs,
                **sampling,
                past_key_values=kv,
                max_new_tokens=params.max_new_tokens,
                min_new_tokens=params.min_new_tokens or None,
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([cancel_criteria]),
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                return_dict_in_generate=True,
                output_logits=self.record_first_logits,
            )


def cut_back(kv: Any, length: int) -> None:
    """Crop every layer of a cache to ``length`` tokens. Not ``DynamicCache.crop``: that drops the
    same count from every layer, and after a forward stopped midway only the layers before the
    stop hold the new tokens."""
    for layer in kv.layers:
        extra = layer.get_seq_length() - length
        if extra > 0:
            layer.crop(-extra)


class GaveWay(Exception):
    """Raised between two layers when a read-ahead's ``give_way`` says so."""


@contextmanager
def stops_between_layers(model, give_way: Callable[[], bool] | None):
    """While inside, every layer of ``model`` (each entry of its ``nn.ModuleList``s: the vision
    tower's and the language model's) first asks ``give_way`` and raises :class:`GaveWay` when
    it says True. On the inference thread only: no other work sees the hooks."""
    if give_way is None:
        yield
        return
    from torch import nn

    def check(module, args):
        if give_way():
            raise GaveWay

    layers = [layer for module in model.modules() if isinstance(module, nn.ModuleList) for layer in module]
    handles = [layer.register_forward_pre_hook(check) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# -- the inference thread, loading, dtype -------------------------------------------------------


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


def _load_weights(model_id: str, device: str, quantization: str, keep_vision_unquantized: bool, dtype: str):
    """(model, processor), loaded on the inference thread."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch_dtype = resolve_dtype(dtype, device)
    compute = torch_dtype if device_is_cuda(device) or torch_dtype != torch.float32 else torch.bfloat16
    # int8 on CPU is our weight-only int8 (assistant.models.cpu_int8), applied after loading:
    # bitsandbytes' LLM.int8 decodes at a quarter of its speed there.
    cpu_int8 = quantization == "int8" and not device_is_cuda(device)
    quant = None if cpu_int8 else quantization_config(quantization, compute, keep_vision_unquantized)
    source = hub_load_options(model_id)
    try:
        processor = AutoProcessor.from_pretrained(model_id, **source)
        model = AutoModelForImageTextToText.from_pretrained(
            model_id,
            **source,
            dtype=torch_dtype,
            device_map={"": 0} if device_is_cuda(device) else ("cpu" if quant else None),
            quantization_config=quant,
        )
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as exc:
        raise ModelUnavailable(unavailable_message(model_id, _first_line(exc))) from exc
    if (
        getattr(processor, "chat_template", None) is None
        and getattr(processor, "tokenizer", None) is not None
    ):
        if getattr(processor.tokenizer, "chat_template", None) is None:
            raise ModelUnavailable(
                f"chat model '{model_id}' has no chat template; use an instruction-tuned model"
            )
    prepare_for_inference(model, device, int8_on_cpu=cpu_int8)
    if not device_is_cuda(device) and torch_dtype == torch.float32 and quantization == "none":
        log.info("float32 weights on CPU: --quantization int8 decodes 2-3x faster (docs/benchmarks.md 2c)")
    return model, processor


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


def cache_bytes(kv) -> int:
    """Bytes held by a DynamicCache's keys and values."""
    total = 0
    for layer in getattr(kv, "layers", ()):
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if tensor is not None and hasattr(tensor, "nbytes"):
                total += int(tensor.nbytes)
    return total


def _out_of_memory(exc: BaseException) -> bool:
    return "OutOfMemory" in type(exc).__name__


def _free_device_memory(device: str) -> None:
    if device_is_cuda(device):
        import torch

        torch.cuda.empty_cache()


# -- where the images are in a prompt (for the prefix cache) ------------------------------------

# Model inputs we know how to split per image; a processor returning anything else gets reuse of
# the text before its first image only (always correct).
TOKEN_INPUTS = {"input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids"}
VIDEO_INPUTS = {"pixel_values_videos", "video_grid_thw", "second_per_grid_ts"}
PIXEL_INPUTS = {"pixel_values", "pixel_attention_mask", "image_grid_thw", "image_sizes"}


@dataclass
class ImageLayout:
    """Each image's span of feature tokens in a prompt, and how many rows (Qwen patches) or
    tiles (Idefics3) of the pixel tensors belong to it."""

    spans: list[ImageSpan]  # every image's and clip's span, in prompt order (what the cache checks)
    units: list[int]
    first_image_token: int | None = None
    known: bool = True
    image_spans: list[ImageSpan] | None = None  # the images' own spans, where clips are in ``spans`` too
    video_spans: list[ImageSpan] = field(default_factory=list)
    video_units: list[int] = field(default_factory=list)  # Qwen: patch rows of each clip

    def usable(self, cached: int) -> int:
        """Cached tokens that may be reused: when the layout is unknown, none past the first image."""
        if not self.known and self.first_image_token is not None:
            return min(cached, self.first_image_token)
        return cached

    def inputs_after(self, inputs, cached: int) -> dict:
        """The model inputs to continue from ``cached`` tokens: pixels of the later images only."""
        out = self._videos_after(dict(inputs), cached)
        images = self.spans if self.image_spans is None else self.image_spans
        done = sum(1 for span in images if span.end <= cached) if self.known else 0
        if done == 0:
            return out
        if done == len(images):
            for key in PIXEL_INPUTS:
                out.pop(key, None)
            return out
        before = sum(self.units[:done])
        pixels = out["pixel_values"]
        if "image_grid_thw" in out:  # Qwen: patch rows of all images stacked
            out["pixel_values"], out["image_grid_thw"] = pixels[before:], out["image_grid_thw"][done:]
        elif pixels.dim() == 5:  # Idefics3 / SmolVLM: (batch, tiles, channels, height, width)
            out["pixel_values"] = pixels[:, before:]
            if "pixel_attention_mask" in out:
                out["pixel_attention_mask"] = out["pixel_attention_mask"][:, before:]
        else:  # LLaVA, Gemma 3: one row per image
            out["pixel_values"] = pixels[before:]
            if "image_sizes" in out:
                out["image_sizes"] = out["image_sizes"][done:]
        return out

    def _videos_after(self, out: dict, cached: int) -> dict:
        """Only the clips after ``cached`` tokens keep their patch rows (Qwen's video inputs)."""
        done = sum(1 for span in self.video_spans if span.end <= cached) if self.known else 0
        if done == 0:
            return out
        if done == len(self.video_spans):
            for key in VIDEO_INPUTS:
                out.pop(key, None)
            return out
        before = sum(self.video_units[:done])
        out["pixel_values_videos"] = out["pixel_values_videos"][before:]
        out["video_grid_thw"] = out["video_grid_thw"][done:]
        if "second_per_grid_ts" in out:
            out["second_per_grid_ts"] = out["second_per_grid_ts"][done:]
        return out


def _runs(positions: list[int]) -> list[tuple[int, int]]:
    runs: list[list[int]] = []
    for p in positions:
        if runs and runs[-1][1] == p:
            runs[-1][1] = p + 1
        else:
            runs.append([p, p + 1])
    return [(a, b) for a, b in runs]


def video_spans(config, ids: list[int], inputs) -> tuple[list[ImageSpan], list[int]] | None:
    """Each clip's span of video tokens and its patch rows, named by a hash of those pixels
    (Qwen-style inputs: one run of video tokens per clip, ``video_grid_thw`` per clip); None
    when the prompt does not look like that."""
    import hashlib

    token_id = getattr(config, "video_token_id", None)
    grid = inputs.get("video_grid_thw")
    pixels = inputs.get("pixel_values_videos")
    if token_id is None or grid is None or pixels is None:
        return None
    runs = _runs([i for i, t in enumerate(ids) if t == token_id])
    units = [int(n) for n in grid.prod(-1).tolist()]
    if len(runs) != len(units) or sum(units) != pixels.shape[0]:
        return None
    spans: list[ImageSpan] = []
    row = 0
    for (start, end), n in zip(runs, units, strict=True):
        h = hashlib.blake2b(digest_size=16)
        h.update(str(grid[len(spans)].tolist()).encode())
        h.update(pixels[row : row + n].float().cpu().numpy().tobytes())
        spans.append(ImageSpan(start, end, "video:" + h.hexdigest()))
        row += n
    return spans, units


def image_layout(chat: LocalChatModel, ids: list[int], inputs, images: Sequence[Any]) -> ImageLayout:
    config = chat.model.config
    if VIDEO_INPUTS & set(inputs.keys()):
        clips = video_spans(config, ids, inputs)
        plain = {k: v for k, v in inputs.items() if k not in VIDEO_INPUTS}
        pictures = image_layout(chat, ids, plain, images) if clips is not None else None
        if clips is None or pictures is None or not pictures.known:
            # Unknown: everything from the first clip or image on is computed again (two clips
            # with the same frame count have the same token ids).
            marks = {
                getattr(config, n, None) for n in ("video_token_id", "image_token_id", "image_token_index")
            }
            marks.discard(None)
            first = next((i for i, t in enumerate(ids) if t in marks), 0)
            return ImageLayout([ImageSpan(first, len(ids), f"video:{id(inputs)}")], [], first, known=False)
        spans = sorted([*pictures.spans, *clips[0]], key=lambda span: span.start)
        return ImageLayout(spans, pictures.units, spans[0].start, True, pictures.spans, clips[0], clips[1])
    if not images:
        return ImageLayout([], [])
    token_id = getattr(config, "image_token_id", None)
    if token_id is None:
        token_id = getattr(config, "image_token_index", None)
    positions = [i for i, t in enumerate(ids) if t == token_id] if token_id is not None else []
    unknown = ImageLayout(
        [ImageSpan(positions[0] if positions else 0, len(ids), f"unknown:{id(inputs)}")],
        [],
        positions[0] if positions else 0,
        known=False,
    )
    if not positions or set(inputs.keys()) - TOKEN_INPUTS - PIXEL_INPUTS:
        return unknown
    runs = _runs(positions)
    groups: list[list[tuple[int, int]]]
    if len(runs) == len(images):
        groups = [[run] for run in runs]
    else:
        # Idefics3 / SmolVLM: an image is its tiles' runs, then the global view after <global-img>.
        global_id = getattr(chat.processor, "global_image_token_id", None)
        groups, current = [], []
        for run in runs:
            current.append(run)
            if global_id is not None and run[0] > 0 and ids[run[0] - 1] == global_id:
                groups.append(current)
                current = []
        if current or len(groups) != len(images):
            return unknown
    pixels = inputs.get("pixel_values")
    if "image_grid_thw" in inputs:
        units = [int(n) for n in inputs["image_grid_thw"].prod(-1).tolist()]
    elif pixels is not None and pixels.dim() == 5:
        units = [len(g) for g in groups]
    elif pixels is not None and pixels.shape[0] == len(images):
        units = [1] * len(images)
    else:
        return unknown
    spans = [ImageSpan(g[0][0], g[-1][1], image_digest(im)) for g, im in zip(groups, images, strict=True)]
    return ImageLayout(spans, units, spans[0].start)


def _positions_for_reuse(model, inputs) -> dict:
    """Position ids of the whole prompt, for models whose positions depend on the images (Qwen's
    3D RoPE). Without them generate continues from ``rope_deltas`` left by whatever ran last —
    another conversation's images — and a new image in the suffix fails outright."""
    from transformers.generation.utils import GenerationMixin

    own = type(model)._prepare_position_ids_for_generation
    if own is GenerationMixin._prepare_position_ids_for_generation:
        return {}  # plain positions: generate derives them from the attention mask
    return {"position_ids": model._prepare_position_ids_for_generation(inputs["input_ids"], dict(inputs))}


def takes_video(processor) -> bool:
    """Whether a processor reads video itself: a video processor, a video placeholder token, and
    a chat template that places clips (the model's own capability, not a list of names)."""
    if getattr(processor, "video_processor", None) is None or not getattr(processor, "video_token", None):
        return False
    template = getattr(processor, "chat_template", None) or ""
    if isinstance(template, dict):
        template = " ".join(str(t) for t in template.values())
    return "video" in str(template)


def video_options(messages: Sequence[Message]) -> dict[str, Any]:
    """Processor options for the clips of a prompt: their frames were sampled already, and the
    processor is told when each one was taken."""
    clips = [clip for m in messages for clip in m.videos]
    if not clips:
        return {}
    return {"processor_kwargs": {"video_metadata": video_metadata(clips), "do_sample_frames": False}}


def video_metadata(clips: Sequence[Any]) -> list:
    """transformers' VideoMetadata for clips we sampled: frame count, rate, length, frame times."""
    from transformers.video_utils import VideoMetadata

    return [
        VideoMetadata(
            total_num_frames=len(clip.frames),
            fps=clip.sampled_fps,
            duration=clip.duration_s,
            frames_indices=list(range(len(clip.frames))),
            height=clip.frames[0].size[1],
            width=clip.frames[0].size[0],
        )
        for clip in clips
    ]


def text_streamer(tokenizer):
    """A TextIteratorStreamer that counts new tokens and releases text as soon as it is whole
    characters (transformers' own holds text back until a space ends the word, which delays
    the first visible text by a decode step; only half a UTF-8 character, decoded as U+FFFD,
    really needs to wait)."""
    from transformers import TextIteratorStreamer

    class CountingStreamer(TextIteratorStreamer):
        generated = 0
        first_token_at: float | None = None

        def put(self, value):
            if value.dim() > 1:
                value = value[0]
            if self.skip_prompt and self.next_tokens_are_prompt:
                self.next_tokens_are_prompt = False
                return
            self.generated += value.numel()
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            self.token_cache.extend(value.tolist())
            text: str = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)  # type: ignore[assignment]
            if text.endswith("\ufffd"):
                return
            printable = text[self.print_len :]
            if text.endswith("\n"):  # a line is final: start afresh, decoding stays short
                self.token_cache, self.print_len = [], 0
            else:
                self.print_len += len(printable)
            self.on_finalized_text(printable)

    # no space clean-up: it could rewrite text already sent ("word ." -> "word.")
    return CountingStreamer(
        tokenizer, skip_prompt=True, skip_special_tokens=True, clean_up_tokenization_spaces=False
    )


def device_is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _generation_error(exc: BaseException) -> GenerationFailed:
    name = type(exc).__name__
    if "OutOfMemory" in name:
        return GenerationFailed(
            "the GPU ran out of memory: send fewer or smaller images, lower max tokens, or use --quantization nf4"
        )
    return GenerationFailed(f"generation failed: {_first_line(exc)}")
