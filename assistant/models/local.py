"""Any Hugging Face image-text-to-text model, run in this process.

Loading (``AutoProcessor`` + ``AutoModelForImageTextToText``, a hub id or a local directory,
optionally quantized) is :mod:`assistant.models.loading`. Here: prompts built with the
processor's own chat template, generation on the one inference thread with the prefix cache
(where the pictures are in a prompt: :mod:`assistant.models.prefix_layout`), and replies
streamed through ``TextIteratorStreamer``.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from PIL import Image

from assistant.conversation import ImageAttachment, Message, VideoAttachment
from assistant.errors import AssistantError, GenerationFailed, InvalidParams
from assistant.models.base import ChatRequest, ModelInfo, Usage
from assistant.models.gguf import EMBEDDED, EMBEDDED_NAME
from assistant.models.give_way import GaveWay, stops_between_layers
from assistant.models.loading import (
    cap_processor_upscaling,
    context_length,
    default_prefix_cache_bytes,
    device_is_cuda,
    first_line,
    inference_thread,
    load_weights,
)
from assistant.models.prefix_cache import Entry, PrefixCache
from assistant.models.prefix_layout import cache_bytes, cut_back, image_layout, positions_for_reuse
from assistant.models.video_inputs import takes_video, video_options
from assistant.options import GenerationParams

log = logging.getLogger(__name__)

ZERO_WIDTH_SPACE = "\u200b"
TEMPLATE_OVERHEAD_TOKENS = 8  # role markers and separators around each message
VIDEO_PROBE_SIDE = 448  # the frame size the video token cost is measured at


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
        # A text model comes with its tokenizer as its processor: it cannot see pictures.
        self.vision = self.tokenizer is not processor
        self.worker = worker or inference_thread(name)
        self._lock = threading.Lock()  # one generation at a time, also for callers that bypass the queue
        self._guard = ControlTokenGuard(control_strings(processor))
        cap_processor_upscaling(processor, image_max_side)
        self.info = ModelInfo(
            name=name,
            backend="local",
            device=device,
            quantization=quantization,
            context_length=context_length(model.config),
            dtype=str(model.dtype).removeprefix("torch."),
            vision=self.vision,
            sampling=sampling_defaults(getattr(model, "generation_config", None)),
        )
        budget = default_prefix_cache_bytes(device) if prefix_cache_bytes is None else prefix_cache_bytes
        self.prefix_cache = PrefixCache(budget)
        self._system_ids: dict[str, list[int]] = {}  # system text -> its turn's tokens alone
        self.record_first_logits = False  # tests and benchmarks compare reuse against a fresh prefill
        self.first_logits = None
        self.image_tokens = (
            self.worker.submit(self._measure_image_tokens, image_max_side).result() if self.vision else 0
        )
        # Clips go to the processor's own video path when it has one (Qwen2.5-VL, SmolVLM2…);
        # other models get frames as images (assistant.core decides from this).
        self.accepts_video = self.vision and takes_video(processor)
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
            load_weights, model_id, device, quantization, keep_vision_unquantized, dtype
        ).result()
        return cls(
            model,
            processor,
            name=EMBEDDED_NAME if model_id == EMBEDDED else model_id,
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
            if not self.vision:  # text templates take a string (pictures arrive as text already)
                result.append({"role": message.role, "content": text})
                continue
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
        from assistant.media.video import Clip

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
        ceiling = report.get("max_new_tokens", request.params.max_new_tokens)  # what fitted
        if request.cancel.is_set() and streamer.generated < ceiling:
            finish = "cancelled"
        elif streamer.generated >= ceiling:
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
        # The reply's length is a ceiling: in a long chat it gets the room the context has left.
        room = self.info.context_length - prompt_tokens
        if room < 1:
            raise InvalidParams(
                f"the conversation takes {prompt_tokens} tokens and the model's context is "
                f"{self.info.context_length}: start a new chat or send fewer images"
            )
        if request.params.max_new_tokens > room:
            params = request.params.model_copy(
                update={"max_new_tokens": room, "min_new_tokens": min(request.params.min_new_tokens, room)}
            )
            request = replace(request, params=params)
        report["max_new_tokens"] = request.params.max_new_tokens
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
                model_inputs.update(positions_for_reuse(self.model, inputs))
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


# -- device memory and streaming ----------------------------------------------------------------


def sampling_defaults(generation_config) -> dict[str, float]:
    """Temperature and top-p the model's makers set, where they ask for sampling at all."""
    if generation_config is None or not getattr(generation_config, "do_sample", False):
        return {}
    found = {name: getattr(generation_config, name, None) for name in ("temperature", "top_p")}
    return {name: float(value) for name, value in found.items() if isinstance(value, (int, float))}


def _out_of_memory(exc: BaseException) -> bool:
    return "OutOfMemory" in type(exc).__name__


def _free_device_memory(device: str) -> None:
    if device_is_cuda(device):
        import torch

        torch.cuda.empty_cache()


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


def _generation_error(exc: BaseException) -> GenerationFailed:
    name = type(exc).__name__
    if "OutOfMemory" in name:
        return GenerationFailed(
            "the GPU ran out of memory: send fewer or smaller images, lower max tokens, or use --quantization nf4"
        )
    return GenerationFailed(f"generation failed: {first_line(exc)}")
