"""Response bodies of the /v1 routes, as typed models (request bodies: :mod:`api.schemas`).

Our own small pydantic models rather than the ``openai`` package's types (``ChatCompletion``,
``ChatCompletionChunk``, ``CompletionUsage``, ``Model``…), because what a client receives must
stay exactly what it is:

- **The fields we send, no more.** The SDK's types carry every optional field OpenAI has ever
  added (``service_tier``, ``metadata``, ``moderation``, ``obfuscation``, ``refusal``,
  ``audio``, ``tool_calls``…) and grow with each release. Dumped whole they add null values we
  never sent; with ``exclude_none`` they drop the nulls we do send (``system_fingerprint``,
  ``logprobs``, the per-chunk ``usage`` of ``include_usage``); with ``exclude_unset`` every
  ``object`` literal must be set by hand or it vanishes. Their field order is not ours either
  (``choices`` before ``object``, ``completion_tokens`` first). Here each model lists exactly
  the wire fields, in the wire order, and an upgrade of ``openai`` (a client library) cannot change the
  server's answers.
- **Absent is not null.** A field that is left out when it has no value says so in its
  declaration (``omitted_if_none()``, pydantic's ``exclude_if``): a delta's ``role``, a model card's ``dtype``; the one
  field that is sometimes absent and sometimes ``null`` (a chunk's ``usage``, present only with
  ``include_usage``) is excluded where the chunk is dumped.
- **Our extra fields are declared**, not smuggled: ``max_model_len`` and ``dtype`` (as vLLM
  reports them) and ``voices`` on model cards, ``aliases`` on the voice list. The SDK's models
  allow any extra field, and so would silently send a misspelled one; these forbid them.

They are dumped with ``model_dump()`` and encoded by the same ``json.dumps`` as before
(``JSONResponse``, :func:`api.streaming.sse`), so the bytes are the bytes a hand-built dict made.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

OWNER = "multimodal-assistant"  # every model card's owned_by


def _absent(value: Any) -> bool:
    return value is None


def omitted_if_none() -> Any:
    """A field left out of the JSON when it has no value (rather than sent as null)."""
    return Field(default=None, exclude_if=_absent)


class Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelled field fails here, not at a client


# --------------------------------------------------------------------------- errors


class ErrorDetail(Reply):
    message: str
    type: str
    param: Optional[str]
    code: Optional[str]


class ErrorResponse(Reply):
    error: ErrorDetail


# --------------------------------------------------------------------------- models


class ModelCard(Reply):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = OWNER
    max_model_len: Optional[int] = omitted_if_none()  # the chat model's context length (vLLM's name)
    dtype: Optional[str] = omitted_if_none()  # of its weights, where the backend says
    voices: Optional[list[str]] = omitted_if_none()  # the voice model's (POST /v1/audio/speech)
    # What the chat model reads (OpenRouter's name): ["text"] for a text-only model, whose
    # photos and scans are read by OCR.
    input_modalities: Optional[list[str]] = omitted_if_none()


class ModelList(Reply):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --------------------------------------------------------------------------- chat completions


class PromptTokensDetails(Reply):
    cached_tokens: int  # as OpenAI and vLLM report it: prompt tokens served from the prefix cache


class Usage(Reply):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class AssistantMessage(Reply):
    role: Literal["assistant"] = "assistant"
    content: str


FinishReason = Literal["stop", "length"]


class Choice(Reply):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: FinishReason


class ChatCompletion(Reply):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[Choice]
    usage: Usage


class Delta(Reply):
    role: Optional[Literal["assistant"]] = omitted_if_none()  # the first chunk's
    content: Optional[str] = omitted_if_none()  # "" in the first chunk; none in the last


class ChunkChoice(Reply):
    index: int = 0
    delta: Delta
    logprobs: None = None
    finish_reason: Optional[FinishReason] = None


class ChatCompletionChunk(Reply):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[ChunkChoice]
    # With include_usage only (left out otherwise): null but in the last chunk, which has no choices.
    usage: Optional[Usage] = None


# --------------------------------------------------------------------------- transcriptions


class DurationUsage(Reply):
    type: Literal["duration"] = "duration"
    seconds: int  # of audio, rounded up


class Transcription(Reply):  # response_format=json
    text: str
    usage: DurationUsage


class TranscriptionSegment(Reply):
    id: int
    start: float
    end: float
    text: str


class VerboseTranscription(Reply):  # response_format=verbose_json
    task: Literal["transcribe"] = "transcribe"
    language: str
    duration: float
    text: str
    segments: list[TranscriptionSegment]
    usage: DurationUsage


# --------------------------------------------------------------------------- speech


class VoiceCard(Reply):
    id: str
    object: Literal["voice"] = "voice"
    language: str
    sample_rate: int
    default: bool


class VoiceList(Reply):
    object: Literal["list"] = "list"
    data: list[VoiceCard]
    aliases: list[str]  # OpenAI's voice names, read with the first voice


# --------------------------------------------------------------------------- embeddings


class Embedding(Reply):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], str]  # floats, or base64 of little-endian float32 (encoding_format)


class EmbeddingUsage(Reply):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(Reply):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
