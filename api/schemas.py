"""Request bodies of the OpenAI-compatible routes.

Every model forbids extra fields: a field we do not understand is answered with a 400 that
names it, never silently ignored (a client asking for ``tools`` or ``logprobs`` must know it
got none).
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageUrl(Strict):
    url: str
    detail: Optional[Literal["auto", "low", "high"]] = None  # a hint; images are always sent whole


class ContentPart(Strict):
    # One flat model rather than a tagged union: validation errors then name plain paths
    # (``messages[0].content[1].image_url.url``) instead of pydantic's union tags.
    type: Literal["text", "image_url"]
    text: Optional[str] = None
    image_url: Optional[ImageUrl] = None

    @model_validator(mode="after")
    def _matches_type(self):
        wanted, other = ("text", "image_url") if self.type == "text" else ("image_url", "text")
        if getattr(self, wanted) is None:
            raise ValueError(f"a '{self.type}' part needs a '{wanted}' field")
        if getattr(self, other) is not None:
            raise ValueError(f"a '{self.type}' part cannot have a '{other}' field")
        return self


class ChatMessageIn(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[ContentPart], None] = None
    name: Optional[str] = None  # accepted for compatibility; one user per conversation here


class StreamOptions(Strict):
    include_usage: bool = False


class ChatCompletionRequest(Strict):
    model: str
    messages: list[ChatMessageIn]
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    max_tokens: Optional[int] = None
    max_completion_tokens: Optional[int] = None
    min_tokens: Optional[int] = None  # vLLM's extension; lets benchmarks fix the reply length
    seed: Optional[int] = None
    stop: Union[str, list[str], None] = None
    n: Optional[int] = None
    user: Optional[str] = None  # an end-user id for the caller's own logs; unused here
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
