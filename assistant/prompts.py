"""System prompts and personas, stored as plain ``.txt`` files in ``prompts/``.

A persona may have a variant for models that read text only in ``prompts/text-only/`` (the
default one tells a vision model it can see images; a 135M text model told so answered
"Paris" in French and a week as 50 days)."""

from __future__ import annotations

import re
from pathlib import Path

from assistant.errors import InvalidParams

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def available(prompts_dir: Path) -> list[str]:
    """Persona names (file stems), 'default' first."""
    names = sorted(p.stem for p in Path(prompts_dir).glob("*.txt"))
    return sorted(names, key=lambda n: n != "default")


TEXT_ONLY = "text-only"  # the folder of variants for text-only models


def load(name: str, prompts_dir: Path, text_only: bool = False) -> str:
    """The text of persona ``name`` (its text-only variant where asked and there is one).
    Names are file stems only: no paths, no traversal."""
    if not _NAME.match(name or ""):
        raise InvalidParams(f"unknown system prompt {name!r}: use one of {', '.join(available(prompts_dir))}")
    path = Path(prompts_dir) / f"{name}.txt"
    variant = Path(prompts_dir) / TEXT_ONLY / f"{name}.txt"
    if text_only and path.is_file() and variant.is_file():
        path = variant
    if not path.is_file():
        raise InvalidParams(f"unknown system prompt {name!r}: use one of {', '.join(available(prompts_dir))}")
    return path.read_text(encoding="utf-8").strip()


def texts(prompts_dir: Path) -> set[str]:
    """The text of every persona and variant (as :func:`load` gives them)."""
    names = available(prompts_dir)
    return {load(name, prompts_dir, text_only) for name in names for text_only in (False, True)}


def resolve(name_or_text: str | None, prompts_dir: Path, text_only: bool = False) -> str:
    """A persona name gives that file's text; anything else is taken as the prompt itself."""
    if not name_or_text:
        return ""
    if _NAME.match(name_or_text):  # a bare word is a persona name; an unknown one is an error
        return load(name_or_text, prompts_dir, text_only)
    return name_or_text.strip()
