"""Any Hugging Face image-text-to-text model, run in this process.

Loading goes through ``AutoProcessor`` + ``AutoModelForImageTextToText`` (a hub id or a local
directory), optionally quantized with bitsandbytes. Prompts are built with the processor's own
chat template; replies stream from a worker thread through ``TextIteratorStreamer``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from assistant.conversation import ImageAttachment, Message
from assistant.errors import GenerationFailed, InvalidParams, ModelUnavailable
from assistant.models.base import ChatRequest, ModelInfo, Usage

log = logging.getLogger(__name__)

# Vision towers and projectors, by the module names transformers uses for them. Kept in
# full precision when ``keep_vision_unquantized`` is asked for.
VISION_MODULE_PATTERNS = [
    r"(?:model\.)?(?:visual|vision_tower|vision_model|vision_encoder|multi_modal_projector|connector|mm_projector|embed_vision)",
]
ZERO_WIDTH_SPACE = "\u200b"
DEFAULT_CONTEXT_LENGTH = 4096
TEMPLATE_OVERHEAD_TOKENS = 8  # role markers and separators around each message
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
    """One loaded model, one generation at a time (the Assistant queues the callers)."""

    concurrent = False

    def __init__(
        self, model, processor, *, name: str, device: str, quantization: str, image_max_side: int = 1024
    ):
        self.model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self._lock = threading.Lock()  # also protects direct callers that bypass the queue
        self._guard = ControlTokenGuard(control_strings(processor))
        cap_processor_upscaling(processor, image_max_side)
        self.info = ModelInfo(
            name=name,
            backend="local",
            device=device,
            quantization=quantization,
            context_length=_context_length(model.config),
        )
        self.image_tokens = self._measure_image_tokens(image_max_side)

    @classmethod
    def load(
        cls,
        model_id: str,
        *,
        device: str = "cpu",
        quantization: str = "none",
        image_max_side: int = 1024,
        keep_vision_unquantized: bool = False,
    ) -> LocalChatModel:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if quantization not in ("none", "nf4", "int8"):
            raise InvalidParams(f"unknown quantization {quantization!r}: use auto, nf4, int8 or none")
        if device == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.float32  # bf16 matmuls are slow on most CPUs
        quant = quantization_config(
            quantization, dtype if device == "cuda" else torch.bfloat16, keep_vision_unquantized
        )
        source = hub_load_options(model_id)
        try:
            processor = AutoProcessor.from_pretrained(model_id, **source)
            model = AutoModelForImageTextToText.from_pretrained(
                model_id,
                **source,
                dtype=dtype,
                device_map={"": 0} if device == "cuda" else ("cpu" if quant else None),
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
        model.eval()
        return cls(
            model,
            processor,
            name=model_id,
            device=device,
            quantization=quantization,
            image_max_side=image_max_side,
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
            if text or not content:
                content.append({"type": "text", "text": text})
            result.append({"role": message.role, "content": content})
        return result

    def prepare_inputs(self, messages: Sequence[Message]):
        """Tokenized prompt (``input_ids``, pixel tensors…) on the model's device."""
        from jinja2 import TemplateError

        kwargs = dict(add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
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

    def count_tokens(self, message: Message) -> int:
        text_tokens = (
            len(self.tokenizer(message.text, add_special_tokens=False)["input_ids"]) if message.text else 0
        )
        return TEMPLATE_OVERHEAD_TOKENS + text_tokens + self.image_tokens * len(message.images)

    # -- generation ------------------------------------------------------------------------

    def stream(self, request: ChatRequest) -> Generator[str | Usage, None, None]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, set_seed

        params = request.params
        cancel = request.cancel

        class CancelCriteria(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full(
                    (input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device
                )

        with self._lock:
            inputs = self.prepare_inputs(request.messages)
            prompt_tokens = int(inputs["input_ids"].shape[-1])
            if prompt_tokens + params.max_new_tokens > self.info.context_length:
                room = self.info.context_length - prompt_tokens
                raise InvalidParams(
                    f"the conversation takes {prompt_tokens} tokens and the model's context is "
                    f"{self.info.context_length}: start a new chat, send fewer images, or ask for at most {max(room, 0)} new tokens"
                )
            streamer = text_streamer(self.tokenizer)
            sampling = (
                dict(do_sample=True, temperature=params.temperature, top_p=params.top_p)
                if params.temperature > 0
                else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
            )
            if params.seed is not None:
                set_seed(params.seed)
            failure: list[BaseException] = []

            def work():
                try:
                    with torch.inference_mode():
                        self.model.generate(
                            **inputs,
                            **sampling,
                            max_new_tokens=params.max_new_tokens,
                            min_new_tokens=params.min_new_tokens or None,
                            streamer=streamer,
                            stopping_criteria=StoppingCriteriaList([CancelCriteria()]),
                            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                        )
                except BaseException as exc:  # handed to the consumer below, never lost
                    failure.append(exc)
                finally:
                    streamer.end()  # the consumer never waits forever

            worker = threading.Thread(target=work, name="generate", daemon=True)
            worker.start()
            try:
                for chunk in streamer:
                    if chunk:
                        yield chunk
            finally:
                if worker.is_alive():  # consumer stopped early: stop generating within one token
                    cancel.set()
                worker.join()
                if device_is_cuda(self.info.device):
                    torch.cuda.empty_cache()
            if failure:
                raise _generation_error(failure[0])
            if cancel.is_set() and streamer.generated < params.max_new_tokens:
                finish = "cancelled"
            elif streamer.generated >= params.max_new_tokens:
                finish = "length"
            else:
                finish = "stop"
            usage = Usage(prompt_tokens, streamer.generated, finish, streamer.first_token_at)
        yield usage  # outside the lock: the model is free once the last token is out


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
