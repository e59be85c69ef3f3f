"""Command-line flags and their ``ASSISTANT_*`` environment twins, derived from the declarations
in :mod:`assistant.settings` (server settings) and :mod:`assistant.models.base` (generation
options). Nothing here names a setting: add a field there and it is a flag, an environment
variable and a row of the README's table at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from assistant.options import knobs, value_type
from assistant.settings import Flag, Settings, flags

ENV_PREFIX = "ASSISTANT_"
TRUE = {"1", "true", "yes", "on"}
GROUPS = ("server", "chat model", "speech", "video and documents", "voice")


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def flag_name(field: dataclasses.Field, flag: Flag) -> str:
    return flag.name or "--" + field.name.replace("_", "-")


def _value_type(field: dataclasses.Field) -> Any:
    """int / float / str / bool / Path: the field's type without Optional."""
    hint = typing.get_type_hints(Settings)[field.name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _shown_default(field: dataclasses.Field, flag: Flag) -> Any:
    default: Any = field.default
    if flag.repeat:
        return []
    if flag.unit != 1:
        return default / flag.unit
    if isinstance(default, Path):
        return str(default)
    return default


def add_settings_arguments(
    parser: argparse.ArgumentParser, *, groups: Iterable[str] = GROUPS, cli_only: bool = False
) -> None:
    """One argument per Settings field with a flag (``cli_only``: those marked ``cli``)."""
    sections = {name: parser.add_argument_group(name) for name in groups}
    for field, flag in flags():
        if flag.group not in sections or (cli_only and not flag.cli):
            continue
        kind = _value_type(field)
        name = flag_name(field, flag)
        metavar = flag.metavar or ("MB" if flag.unit != 1 else name.lstrip("-").upper().replace("-", "_"))
        options: dict[str, Any] = dict(dest=field.name, help=flag.help, default=_shown_default(field, flag))
        if kind is bool:
            options["action"] = "store_true"
        elif flag.repeat:
            options.update(action="append", metavar=metavar)
        else:
            options.update(
                type=float if flag.unit != 1 else (kind if kind in (int, float) else str),
                choices=flag.choices,
                metavar=None if flag.choices else metavar,
            )
        # the main spelling last: the environment twin is named after it
        sections[flag.group].add_argument(*flag.aliases, name, **options)


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """The per-request generation options a command line offers (``--temperature`` …)."""
    for name, field, knob in knobs():
        if knob.cli:
            parser.add_argument(
                "--" + name.replace("_", "-"), dest=name, type=value_type(field), help=knob.help
            )


def apply_environment(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Make ASSISTANT_* variables the defaults of their flags (flags still win)."""
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = environ.get(env_name(action.option_strings[-1]))
        if value is None:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            action.default = value.strip().lower() in TRUE
        elif isinstance(action, argparse._AppendAction):
            action.default = [v for v in value.split(",") if v]
        else:
            action.default = action.type(value) if callable(action.type) else value


def settings_from_args(args: argparse.Namespace, base: Settings | None = None) -> Settings:
    """The parsed flags as Settings (fields without a parsed flag keep ``base``'s values).

    A value its declaration cannot parse ends the program with ``error: --flag: why``.
    """
    values: dict[str, Any] = {}
    for field, flag in flags():
        if not hasattr(args, field.name):
            continue
        raw = getattr(args, field.name)
        try:
            values[field.name] = _convert(field, flag, raw)
        except ValueError as exc:
            raise SystemExit(f"error: {flag_name(field, flag)} {exc}") from None
    return (base or Settings()).replace(**values)


def _convert(field: dataclasses.Field, flag: Flag, raw: Any) -> Any:
    if raw is None:
        return None
    if flag.repeat:
        parse = flag.parse or str
        return tuple(parse(v) for v in raw)
    if flag.parse is not None:
        return flag.parse(raw)
    if flag.unit != 1:
        return int(round(raw * flag.unit))
    if _value_type(field) is Path:
        return Path(raw).expanduser()
    return raw


def flag_table() -> str:
    """The README's table of flags, generated from the declarations (a test keeps it current)."""
    home = str(Path.home())
    rows = ["| flag | environment | default | what it does |", "|---|---|---|---|"]
    for group in GROUPS:
        for field, flag in flags():
            if flag.group != group:
                continue
            name = flag_name(field, flag)
            default = flag.shown_default or _shown_default(field, flag)
            shown = "" if default in (None, [], False) else f"`{str(default).replace(home, '~')}`"
            what = flag.help + (f" (one of {', '.join(flag.choices)})" if flag.choices else "")
            rows.append(f"| `{name}` | `{env_name(name)}` | {shown} | {what.replace('|', '/')} |")
    return "\n".join(rows)


__all__ = [
    "add_generation_arguments",
    "add_settings_arguments",
    "apply_environment",
    "env_name",
    "flag_table",
    "settings_from_args",
]
