"""System prompts and personas, stored as plain ``.txt`` files in ``prompts/``."""

from __future__ import annotations

import re
from pathlib import Path

from assistant.errors import InvalidParams

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def available(prompts_dir: Path) -> list[str]:
    """Persona names (file stems), 'default' first."""
    names = sorted(p.stem for p in Path(prompts_dir).glob("*.txt"))
    return sorted(names, key=lambda n: n != "default")


def load(name: str, prompts_dir: Path) -> str:
    """The text of persona ``name``. Names are file stems only: no paths, no traversal."""
    if not _NAME.match(name or ""):
        raise InvalidParams(f"unknown system prompt {name!r}: use one of {', '.join(available(prompts_dir))}")
    path = Path(prompts_dir) / f"{name}.txt"
    if not path.is_file():
        raise InvalidParams(f"unknown system prompt {name!r}: use one of {', '.join(available(prompts_dir))}")
    return path.read_text(encoding="utf-8").strip()


def texts(prompts_dir: Path) -> set[str]:
    """The text of every persona (as :func:`load` gives it)."""
    return {load(name, prompts_dir) for name in available(prompts_dir)}


def resolve(name_or_text: str | None, prompts_dir: Path) -> str:
    """A persona name gives that file's text; anything else is taken as the prompt itself."""
    if not name_or_text:
        return ""
    if _NAME.match(name_or_text):  # a bare word is a persona name; an unknown one is an error
        return load(name_or_text, prompts_dir)
    return name_or_text.strip()
