"""What a request may ask of a model: the options of one generation, declared once.

:class:`GenerationParams` holds each option with its range and a :class:`Knob` saying how it
appears in the page's settings panel, in ``/v1`` (OpenAI's names) and on the CLI; those three
derive their controls, fields and flags from :func:`knobs`. Every chat model backend reads
these options; none of them owns them.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from assistant.errors import InvalidParams

MAX_STOP_SEQUENCES = 4


@dataclass(frozen=True)
class Knob:
    """How one generation option is offered: its help, its OpenAI request names, the page's
    control, the CLI flag. The range itself is the pydantic constraint beside it."""

    help: str
    rule: str  # "must be …", said when a value breaks the constraint
    label: str = ""  # the page's control label; "" = not on the page
    control: str = "slider"  # slider | text (a text box for optional whole numbers)
    low: float | None = None  # the slider's ends (the upper end may come from Settings)
    high: float | None = None
    step: float | None = None
    api: tuple[str, ...] = ()  # request fields of /v1/chat/completions, preferred first
    cli: bool = False  # also a flag of `python -m assistant chat`


StrictInt = Annotated[int, Field(strict=True)]
# The server's max_new_tokens cap while GenerationParams.within validates (pydantic calls our
# __init__ for every construction, so the cap cannot travel as validation context).
_CAP: ContextVar[int | None] = ContextVar("max_new_tokens_cap", default=None)
StopSequence = Annotated[str, Field(min_length=1)]


class GenerationParams(BaseModel):
    """Options of one generation, each declared once with its range and where it is offered.

    The page's settings panel, the /chat endpoint's options, the /v1 request schema and the CLI
    flags are all derived from these fields (see :func:`knobs`). Out-of-range values raise
    :class:`InvalidParams` naming the field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: Annotated[
        float,
        Field(strict=True, ge=0, le=2, allow_inf_nan=False),
        Knob(
            "0 = always the most likely word",
            "must be between 0 and 2",
            label="Temperature",
            low=0,
            high=2,
            step=0.05,
            api=("temperature",),
            cli=True,
        ),
    ] = 0.7
    top_p: Annotated[
        float,
        Field(strict=True, gt=0, le=1, allow_inf_nan=False),
        Knob(
            "sample only from the most likely words that add up to this probability",
            "must be greater than 0 and at most 1",
            label="Top-p",
            low=0.05,
            high=1,
            step=0.05,
            api=("top_p",),
            cli=True,
        ),
    ] = 0.95
    max_new_tokens: Annotated[
        int,
        Field(strict=True, ge=1),
        Knob(
            "longest reply, in tokens",
            "must be between 1 and {cap}",
            label="Max new tokens",
            low=1,
            step=1,
            api=("max_completion_tokens", "max_tokens"),
            cli=True,
        ),
    ] = 512
    seed: Annotated[
        StrictInt | None,
        Field(ge=0, lt=2**32),
        Knob(
            "a whole number makes replies repeatable",
            "must be an integer between 0 and 2^32-1",
            label="Seed",
            control="text",
            api=("seed",),
            cli=True,
        ),
    ] = None
    stop: Annotated[
        tuple[StopSequence, ...],
        Field(max_length=MAX_STOP_SEQUENCES),
        Knob(
            "end the reply where one of these strings appears",
            f"must be at most {MAX_STOP_SEQUENCES} non-empty strings",
            api=("stop",),
        ),
    ] = ()
    # benchmarks fix the length so random weights cannot end early
    min_new_tokens: Annotated[
        int,
        Field(strict=True, ge=0),
        Knob("shortest reply, in tokens", "must be between 0 and max_new_tokens", api=("min_tokens",)),
    ] = 0

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _invalid(exc, _CAP.get()) from None

    @classmethod
    def within(cls, max_new_tokens_cap: int, **values: Any) -> GenerationParams:
        """Validated options, with max_new_tokens also held to the server's cap."""
        token = _CAP.set(max_new_tokens_cap)
        try:
            return cls(**values)
        finally:
            _CAP.reset(token)

    @field_validator("max_new_tokens")
    @classmethod
    def _within_cap(cls, value: int) -> int:
        cap = _CAP.get()
        if cap is not None and value > cap:
            raise ValueError("above the cap")
        return value

    @model_validator(mode="after")
    def _min_within_max(self) -> GenerationParams:
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError("min_new_tokens")
        return self


def knobs() -> list[tuple[str, FieldInfo, Knob]]:
    """(name, pydantic field, Knob) of every generation option, in declaration order."""
    found = []
    for name, info in GenerationParams.model_fields.items():
        knob = next(m for m in info.metadata if isinstance(m, Knob))
        found.append((name, info, knob))
    return found


def value_type(info: FieldInfo) -> type:
    """int / float / tuple…: an option's type, Optional and Annotated unwrapped."""
    kind: Any = info.annotation
    while True:
        if get_origin(kind) is Annotated:
            kind = get_args(kind)[0]
        elif get_origin(kind) in (Union, UnionType):
            kind = next(a for a in get_args(kind) if a is not type(None))
        else:
            return get_origin(kind) or kind


def _invalid(exc: ValidationError, max_new_tokens_cap: int | None = None) -> InvalidParams:
    error = exc.errors()[0]
    loc = error.get("loc") or ()
    name = str(loc[0]) if loc else str(error.get("msg", "")).removeprefix("Value error, ")
    rules = {n: k.rule for n, _, k in knobs()}
    if name not in rules:  # an unknown option (extra="forbid")
        return InvalidParams(f"unknown generation option {name!r}: use {', '.join(rules)}")
    got = error.get("input")
    rule = rules[name].format(cap=max_new_tokens_cap or "the server's limit")
    return InvalidParams.for_param(name, rule + ("" if isinstance(got, dict) else f", got {got!r}"))
