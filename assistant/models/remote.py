"""The ChatModel contract over any OpenAI-compatible server (vLLM, another copy of this app…).

Chat goes to ``{base_url}/chat/completions`` with ``stream: true``; images travel as JPEG data
URLs. The server batches concurrent requests itself (``concurrent = True``): callers reach it
in parallel. Speech goes the same way (:mod:`assistant.speech.remote`, through the HTTP
helpers here: :func:`http_client`, :func:`translated`, :func:`raise_for_status`).
Network problems become :class:`ModelUnavailable` / :class:`GenerationFailed` naming the URL.
"""

from __future__ import annotations

import base64
import hmac
import io
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import httpx

from assistant import request_ids
from assistant.conversation import Message, fit_to_context
from assistant.errors import AssistantError, GenerationFailed, InvalidParams, ModelUnavailable
from assistant.models.base import ChatRequest, ModelInfo, Usage

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_LENGTH = 32768  # used when the server does not say (vLLM reports max_model_len)
IMAGE_TOKENS = 1280  # an upward estimate of one image's prompt cost on common VLMs
VIDEO_SERVERS = ("vllm", "multimodal-assistant")  # owned_by of servers that take video_url parts
SALTED_SERVERS = ("vllm", "multimodal-assistant")  # ... and of those that take cache_salt
CHARS_PER_TOKEN = 3
MESSAGE_OVERHEAD_TOKENS = 8
JPEG_QUALITY = 90
CONNECT_TIMEOUT_S = 10.0
DISCOVERY_RETRY_S = 3.0


def http_client(base_url: str, api_key: str | None, timeout_s: float) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(
        base_url=base_url.rstrip("/") + "/",
        headers=headers,
        # read = the longest wait for the next chunk (prefill of a long prompt included)
        timeout=httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s)),
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=32),
    )


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message") or error.get("detail") if isinstance(error, dict) else error
        return str(message or response.reason_phrase)[:500]
    except (ValueError, UnicodeDecodeError):
        return (response.text or response.reason_phrase)[:500]


@contextmanager
def translated(what: str, url: str, timeout_s: float):
    """httpx failures → engine errors a person can act on."""
    try:
        yield
    except AssistantError:
        raise
    except httpx.TimeoutException:
        raise ModelUnavailable(
            f"the {what} at {url} did not answer within {timeout_s:g} s; is it overloaded?"
        ) from None
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise ModelUnavailable(
            f"cannot reach the {what} at {url} ({type(exc).__name__}: {str(exc) or 'connection closed'}); is it running?"
        ) from None
    except httpx.HTTPError as exc:
        raise ModelUnavailable(f"request to the {what} at {url} failed: {exc}") from None


def raise_for_status(response: httpx.Response, what: str, url: str) -> None:
    if response.status_code < 400:
        return
    if not response.is_closed:
        response.read()
    detail, status = _error_detail(response), response.status_code
    if status in (401, 403):
        raise ModelUnavailable(
            f"the {what} at {url} refused our credentials (HTTP {status}): {detail}; check --remote-api-key"
        )
    if status == 404:
        raise ModelUnavailable(
            f"the {what} at {url} does not serve this (HTTP 404): {detail}; check --base-url and --remote-model"
        )
    if status == 400 and _CONTEXT_FULL.search(detail):
        raise ContextOverflow(f"the {what} at {url} rejected the request: {detail}", detail)
    if status in (400, 413, 422):  # the request itself: too long a prompt, an image it refuses…
        raise InvalidParams(f"the {what} at {url} rejected the request: {detail}")
    if status in (429, 503):
        raise ModelUnavailable(f"the {what} at {url} is busy or not ready (HTTP {status}): {detail}")
    raise GenerationFailed(f"the {what} at {url} failed (HTTP {status}): {detail}")


# How servers say the prompt is too long. llama.cpp: "request (7078 tokens) exceeds the available
# context size (4096 tokens)"; vLLM/OpenAI: "This model's maximum context length is 4096 tokens.
# However, you requested 7078 tokens…"; Ollama and LM Studio say "context length".
_CONTEXT_FULL = re.compile(
    r"context (size|length|window)|maximum context|exceeds the available context", re.I
)
_NUMBERS = re.compile(r"(\d+)\s*tokens", re.I)


class ContextOverflow(InvalidParams):
    """The server refused the prompt for its length; carries the sizes it named, when it did."""

    def __init__(self, message: str, detail: str):
        super().__init__(message)
        numbers = [int(n) for n in _NUMBERS.findall(detail)]
        mentions = re.search(r"context (?:size|length)[^\d]*(\d+)", detail, re.I)
        self.context = int(mentions.group(1)) if mentions else (min(numbers) if len(numbers) >= 2 else None)
        requested = [n for n in numbers if self.context is None or n != self.context]
        self.prompt_tokens = max(requested) if requested else None


def served_context(card: dict) -> int | None:
    """A server's context length from its model card or props, in each server's own words."""
    candidates = [
        card.get("max_model_len"),  # vLLM (and this app)
        (card.get("meta") or {}).get("n_ctx")
        if isinstance(card.get("meta"), dict)
        else None,  # llama.cpp /models
        ((card.get("default_generation_settings") or {}).get("n_ctx")),  # llama.cpp /props
        card.get("loaded_context_length"),  # LM Studio
        card.get("max_context_length"),
        card.get("context_length"),
    ]
    info = card.get("model_info")
    if isinstance(info, dict):  # Ollama /api/show: "<arch>.context_length"
        candidates += [v for k, v in info.items() if k.endswith(".context_length")]
    parameters = card.get("parameters")
    if isinstance(parameters, str):  # Ollama: "num_ctx 8192" lines win over the model's maximum
        found = re.search(r"num_ctx\s+(\d+)", parameters)
        candidates.insert(0, int(found.group(1)) if found else None)
    for value in candidates:
        if isinstance(value, int) and value > 0:
            return value
    return None


def display_name(model_id: str) -> str:
    """What the page shows for a served model: a GGUF path's file name, not the whole path."""
    if "/" in model_id and model_id.lower().endswith(".gguf"):
        return model_id.rsplit("/", 1)[-1]
    return model_id


def image_data_url(image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def video_data_url(clip) -> str:
    """A clip as vLLM takes it: the file itself, base64 in a data URL (the server samples it)."""
    return f"data:{clip.mime};base64," + base64.b64encode(clip.file_bytes()).decode("ascii")


def to_openai(message: Message) -> dict:
    if not message.images and not message.videos:
        return {"role": message.role, "content": message.text}
    parts = [{"type": "image_url", "image_url": {"url": image_data_url(im)}} for im in message.images]
    parts += [{"type": "video_url", "video_url": {"url": video_data_url(clip)}} for clip in message.videos]
    if message.text:
        parts.append({"type": "text", "text": message.text})
    return {"role": message.role, "content": parts}


class RemoteChatModel:
    concurrent = True

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        context_length: int | None = None,
        client: httpx.Client | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._client = client or http_client(self.base_url, api_key, timeout_s)
        self._model = model
        self._context_length = context_length  # given by the user: wins over what the server says
        self._discovered = False
        self._closed = False
        self._send_usage_option = True  # cleared once if the server refuses stream_options
        self._server = "openai"  # or "llama.cpp" / "vllm", learned from /models: some options differ
        self._salt_key = secrets.token_bytes(32)
        self._salted = False  # the server takes a per-request cache_salt
        self._takes_video = False  # vLLM and this app take video_url parts; others get frames
        self._warned_min_tokens = False
        self.info = ModelInfo(
            model or "(remote model)",
            "openai",
            self.base_url,
            "remote",
            context_length or DEFAULT_CONTEXT_LENGTH,
        )

    @classmethod
    def from_settings(cls, settings) -> RemoteChatModel:
        if not settings.base_url:
            raise ModelUnavailable("--backend openai needs --base-url (e.g. http://gpu-box:8000/v1)")
        model = cls(
            settings.base_url,
            model=settings.remote_model,
            api_key=settings.remote_api_key,
            timeout_s=settings.remote_timeout_s,
            context_length=settings.remote_context_length,
        )
        try:
            model.discover()
        except ModelUnavailable as exc:  # the server may come up later than this app
            log.warning("%s (retrying in the background)", exc)
            threading.Thread(target=model._discover_until_found, name="remote-discover", daemon=True).start()
        return model

    def _discover_until_found(self) -> None:
        while True:
            time.sleep(DISCOVERY_RETRY_S)
            if self._discovered or self._closed:
                return
            try:
                self.discover()
                log.info("the chat server at %s is up: using %s", self.base_url, self._model)
            except (ModelUnavailable, RuntimeError):  # RuntimeError: closed meanwhile
                pass

    def discover(self) -> None:
        """Ask the server for its models: the name to use (the first, unless given) and its context."""
        with translated("chat server", self.base_url, self.timeout_s):
            response = self._client.get("models")
            raise_for_status(response, "chat server", self.base_url)
            cards = [c for c in response.json().get("data", []) if isinstance(c, dict) and c.get("id")]
        if not cards:
            raise ModelUnavailable(f"the chat server at {self.base_url} lists no models")
        card = next((c for c in cards if c["id"] == self._model), None)
        if card is None and self._model:
            log.warning(
                "the chat server at %s does not list %r (it has %s); using it anyway",
                self.base_url,
                self._model,
                [c["id"] for c in cards],
            )
            card = {"id": self._model}
        card = card or cards[0]
        self._model = card["id"]
        if card.get("owned_by") == "llamacpp" or isinstance(card.get("meta"), dict):
            self._server = "llama.cpp"
        elif card.get("owned_by") == "vllm":
            self._server = "vllm"
        self._takes_video = card.get("owned_by") in VIDEO_SERVERS
        self._salted = card.get("owned_by") in SALTED_SERVERS
        context = (
            self._context_length or served_context(card) or self._probe_context() or DEFAULT_CONTEXT_LENGTH
        )
        self.info = ModelInfo(
            display_name(self._model),
            "openai",
            self.base_url,
            "remote",
            int(context),
            vision=self._sees(card),
        )
        self._discovered = True

    def _sees(self, card: dict) -> bool:
        """Whether the served model takes pictures: this app's ``input_modalities``, llama.cpp's
        ``/props`` modalities; True where the server does not say (vLLM refuses clearly). A text
        model is then given the text of photos, read here by OCR, instead of images it refuses."""
        modalities = card.get("input_modalities")
        if isinstance(modalities, list):
            return "image" in modalities
        if self._server != "llama.cpp":
            return True
        try:
            response = self._client.get(
                f"{self.base_url.removesuffix('/v1')}/props", timeout=min(5.0, self.timeout_s)
            )
            found = response.json().get("modalities") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return True
        return not isinstance(found, dict) or bool(found.get("vision", True))

    def _probe_context(self) -> int | None:
        """Servers that do not put the context in /models: llama.cpp's /props, Ollama's /api/show."""
        root = self.base_url.removesuffix("/v1")
        probes = [("GET", f"{root}/props", None), ("POST", f"{root}/api/show", {"model": self._model})]
        for method, url, body in probes:
            try:
                response = self._client.request(method, url, json=body, timeout=min(5.0, self.timeout_s))
                if response.status_code == 200:
                    found = served_context(response.json())
                    if found:
                        return found
            except (httpx.HTTPError, ValueError):
                continue
        return None

    @property
    def accepts_video(self) -> bool:
        """Whether clips go as video_url parts (vLLM, this app) rather than as frames."""
        return self._takes_video

    def count_tokens(self, message: Message) -> int:
        # An estimate from above: the exact tokenizer lives on the server.
        return (
            MESSAGE_OVERHEAD_TOKENS
            + len(message.text) // CHARS_PER_TOKEN
            + IMAGE_TOKENS * len(message.images)
            + sum(IMAGE_TOKENS * max(1, len(clip.frames) // 2) for clip in message.videos)
        )

    def _body(self, request: ChatRequest) -> dict:
        p = request.params
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [to_openai(m) for m in request.messages],
            "stream": True,
            "max_tokens": p.max_new_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
        }
        if p.seed is not None:
            body["seed"] = p.seed
        if p.stop:
            body["stop"] = list(p.stop)
        if p.min_new_tokens:
            body["min_tokens"] = p.min_new_tokens  # vLLM's extension (this app accepts it too)
            if self._server == "llama.cpp" and p.min_new_tokens >= p.max_new_tokens:
                body["ignore_eos"] = True  # llama.cpp ignores min_tokens; a fixed length it can do
        if request.continues and self._server == "vllm":
            # Carry on from the last reply's last word (llama.cpp does so by itself when the
            # last message is the assistant's); vLLM needs to be told.
            body["continue_final_message"], body["add_generation_prompt"] = True, False
        if self._send_usage_option:
            body["stream_options"] = {"include_usage": True}
        if self._salted:
            # vLLM's prefix cache is shared by every request unless salted: one user could time
            # another's prompt. The salt names the user to nobody (a keyed hash, per process).
            body["cache_salt"] = hmac.new(self._salt_key, request.user.encode(), "sha256").hexdigest()[:32]
        return body

    def stream(self, request: ChatRequest) -> Generator[str | Usage, None, None]:
        try:
            yield from self._stream_once(request)
        except ContextOverflow as overflow:
            # The server counts the prompt's tokens itself: learn its context (and how far off our
            # estimate was), drop the oldest turns to fit, and try once more.
            if overflow.context:
                self.info = replace(self.info, context_length=overflow.context)
            fitted = self._refit(request, overflow)
            if fitted is None:
                raise InvalidParams(str(overflow)) from None
            log.info(
                "the chat server's context is full: retrying with %d of %d messages",
                len(fitted.messages),
                len(request.messages),
            )
            yield from self._stream_once(fitted)

    def _refit(self, request: ChatRequest, overflow: ContextOverflow) -> ChatRequest | None:
        messages = list(request.messages)
        estimate = sum(self.count_tokens(m) for m in messages)
        scale = max(1.0, overflow.prompt_tokens / estimate) if overflow.prompt_tokens and estimate else 1.0
        system = messages[0] if messages and messages[0].role == "system" else None
        history = messages[1:] if system else messages
        budget = self.info.context_length - request.params.max_new_tokens
        fitted = fit_to_context(system, history, lambda m: int(self.count_tokens(m) * scale) + 1, budget)
        if len(fitted) >= len(messages):
            return None  # nothing left to drop: the newest message alone is too long
        return replace(request, messages=fitted)

    def _stream_once(self, request: ChatRequest) -> Generator[str | Usage, None, None]:
        with translated("chat server", self.base_url, self.timeout_s):
            if self._model is None:
                self.discover()
            body = self._body(request)
            headers = {request_ids.HEADER: request.request_id} if request.request_id else None
            with self._client.stream("POST", "chat/completions", json=body, headers=headers) as response:
                if (
                    response.status_code == 400
                    and "stream_options" in body
                    and "stream_options" in response.read().decode(errors="replace")
                ):
                    self._send_usage_option = False  # an older server: count chunks instead
                    response.close()
                    yield from self._stream_once(request)
                    return
                raise_for_status(response, "chat server", self.base_url)
                yield from self._read_events(response, request)

    def _read_events(
        self, response: httpx.Response, request: ChatRequest
    ) -> Generator[str | Usage, None, None]:
        # the estimate stands until the server reports its own count
        usage = Usage(prompt_tokens=sum(self.count_tokens(m) for m in request.messages))
        counted, reported = 0, False
        try:
            for line in response.iter_lines():
                if request.cancel.is_set():
                    usage.finish_reason = "cancelled"
                    yield usage
                    return  # leaving the `with` closes the connection; the server stops generating
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    error = chunk["error"]
                    raise GenerationFailed(
                        f"the chat server at {self.base_url} failed mid-reply: {error.get('message', error) if isinstance(error, dict) else error}"
                    )
                if chunk.get("usage"):
                    usage.prompt_tokens = chunk["usage"].get("prompt_tokens", usage.prompt_tokens)
                    usage.completion_tokens = chunk["usage"].get("completion_tokens", counted)
                    reported = True
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if choice.get("finish_reason"):
                        usage.finish_reason = "length" if choice["finish_reason"] == "length" else "stop"
                    if text:
                        if usage.first_token_at is None:
                            usage.first_token_at = time.perf_counter()
                        counted += 1
                        if not reported:
                            usage.completion_tokens = counted
                        yield text
            else:
                raise GenerationFailed(
                    f"the chat server at {self.base_url} closed the stream before it finished"
                )
            minimum = request.params.min_new_tokens
            if (
                minimum
                and usage.finish_reason == "stop"
                and usage.completion_tokens < minimum
                and not self._warned_min_tokens
            ):
                self._warned_min_tokens = True
                log.warning(
                    "the chat server at %s ignores min_tokens (asked %d, got %d)",
                    self.base_url,
                    minimum,
                    usage.completion_tokens,
                )
            yield usage
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise GenerationFailed(
                f"the chat server at {self.base_url} sent a malformed stream ({type(exc).__name__}: {exc})"
            ) from None
        except httpx.TimeoutException:
            raise GenerationFailed(
                f"the chat server at {self.base_url} sent nothing for {self.timeout_s:g} s mid-reply"
            ) from None
        except httpx.TransportError as exc:
            raise GenerationFailed(
                f"the connection to the chat server at {self.base_url} broke mid-reply ({type(exc).__name__})"
            ) from None

    def close(self) -> None:
        self._closed = True
        self._client.close()
