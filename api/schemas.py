"""Request bodies of the OpenAI-compatible routes.

Every model forbids extra fields: a field we do not understand is answered with a 400 that
names it, never silently ignored (a client asking for ``tools`` or ``logprobs`` must know it
got none).
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from assistant.limits import has_lone_surrogate
from assistant.options import knobs, value_type


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _valid_unicode(cls, value):
        # JSON may carry a lone UTF-16 surrogate ("\\ud800"); no tokenizer or encoder takes it.
        for text in value if isinstance(value, list) else (value,):
            if isinstance(text, str) and has_lone_surrogate(text):
                raise ValueError(
                    "contains a lone surrogate (such as \\ud800), which is not valid Unicode text"
                )
        return value


class ImageUrl(Strict):
    url: str
    detail: Optional[Literal["auto", "low", "high"]] = None  # a hint; images are always sent whole


class VideoUrl(Strict):
    url: str  # data:video/mp4;base64,… or https:// (as vLLM takes it)


class FileData(Strict):
    # OpenAI's file part: the file inline; uploaded files (file_id) are not kept by this server.
    file_data: Optional[str] = None  # data:application/pdf;base64,…
    filename: Optional[str] = None
    file_id: Optional[str] = None


PART_FIELDS = ("text", "image_url", "video_url", "file")


class ContentPart(Strict):
    # One flat model rather than a tagged union: validation errors then name plain paths
    # (``messages[0].content[1].image_url.url``) instead of pydantic's union tags.
    type: Literal["text", "image_url", "video_url", "file"]
    text: Optional[str] = None
    image_url: Optional[ImageUrl] = None
    video_url: Optional[VideoUrl] = None
    file: Optional[FileData] = None

    @model_validator(mode="after")
    def _matches_type(self):
        wanted = self.type
        if getattr(self, wanted) is None:
            raise ValueError(f"a '{self.type}' part needs a '{wanted}' field")
        for other in PART_FIELDS:
            if other != wanted and getattr(self, other) is not None:
                raise ValueError(f"a '{self.type}' part cannot have a '{other}' field")
        return self


class ChatMessageIn(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[ContentPart], None] = None
    name: Optional[str] = None  # accepted for compatibility; one user per conversation here


class StreamOptions(Strict):
    include_usage: bool = False


class ChatCompletionBase(Strict):
    model: str
    messages: list[ChatMessageIn]
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    n: Optional[int] = None
    user: Optional[str] = None  # an end-user id for the caller's own logs; unused here
    # vLLM's: requests with different salts never reuse each other's cached prompt (a front end
    # serving many people through one key sends one per person).
    cache_salt: Optional[str] = Field(default=None, min_length=1, max_length=256)
    # Accepted only at their "off" values, which is what many clients send by default.
    frequency_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    logprobs: Optional[bool] = None

    @field_validator("frequency_penalty", "presence_penalty", "logprobs")
    @classmethod
    def _off_only(cls, value):
        if value:
            raise ValueError("not supported by this server (leave it out or set it to 0/false)")
        return value


def _api_type(info) -> Any:
    """The request field's type: lax (the engine validates), and OpenAI's shapes (stop may be one string)."""
    kind = value_type(info)
    return Union[str, list[str], None] if kind is tuple else Optional[kind]


# The generation options under their OpenAI names (max_tokens, min_tokens…), taken from the one
# declaration in GenerationParams; their ranges are checked there, once.
ChatCompletionRequest = create_model(  # type: ignore[call-overload]  # fields built from a dict
    "ChatCompletionRequest",
    __base__=ChatCompletionBase,
    **{api: (_api_type(info), None) for _, info, knob in knobs() for api in knob.api},
)


def generation_values(body: ChatCompletionBase) -> tuple[dict[str, Any], dict[str, str]]:
    """({engine option: value} as sent, {engine option: the request field that set it})."""
    values: dict[str, Any] = {}
    fields: dict[str, str] = {}
    for name, _, knob in knobs():
        fields[name] = knob.api[0] if knob.api else name
        for api in knob.api:
            value = getattr(body, api)
            if value is not None:
                values[name] = [value] if isinstance(value, str) else value
                fields[name] = api
                break
    return values, fields


class EmbeddingRequest(Strict):
    """``POST /v1/embeddings``, as OpenAI defines it. Token arrays are refused by the route, by
    name (``input`` is typed loosely so that the refusal says why, not only "not a string")."""

    input: Union[str, list[Any]]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = None  # only the model's own: these models cannot shorten
    user: Optional[str] = None  # OpenAI's end-user id: accepted, not used
