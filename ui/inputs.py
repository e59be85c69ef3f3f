"""What the page sends, as the engine takes it: the typed words and attached files as a
``Message``, the settings panel's values as ``GenerationParams`` and a system prompt."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from assistant import media
from assistant.conversation import Message
from assistant.errors import InvalidParams
from assistant.options import GenerationParams, knobs, value_type


def file_path(item) -> str:
    """Gradio hands files over as paths, or as dicts/FileData with a ``path``."""
    if isinstance(item, (str, Path)):
        return str(item)
    if isinstance(item, dict):
        return str(item.get("path") or (item.get("file") or {}).get("path"))
    return str(item.path)


def message(value: dict | str | None) -> Message:
    """The user's message from a MultimodalTextbox value: words, photos, a voice recording,
    video clips, documents (PDF, text, Markdown)."""
    if isinstance(value, str):
        value = {"text": value}
    value = value or {}
    return to_message(value.get("text") or "", value.get("files") or [])


def to_message(text: str, files: Iterable, role: str = "user", *, sent_before: bool = False) -> Message:
    """What the page sends (words and files, as Gradio hands them over) as one ``Message``: the
    one converter for the box's new message and for the history a ``/chat`` call sends.

    Files are routed by content, not by name. In a new message anything that is not recognisably
    audio, video or a document goes with the images, so the engine's image check names the file
    and says what is wrong, and one voice recording at most is taken. A message ``sent_before``
    (history) keeps only its photos, clips and documents (a recording there is not transcribed
    again, a file of no known kind is left out); an assistant's message, only its photos.
    """
    found: dict[str, list[str]] = {"image": [], "audio": [], "video": [], "document": []}
    for item in files:
        path = file_path(item)
        kind = media.kind_of(path)
        if sent_before and kind not in ("image", "video", "document"):
            continue
        found[kind if kind in found else "image"].append(path)
    if role == "assistant":
        return Message.assistant(text).with_images(found["image"])
    if len(found["audio"]) > 1:
        raise InvalidParams("send one voice recording at a time")
    audio = found["audio"][0] if found["audio"] else None
    return Message.user(text, found["image"], audio, videos=found["video"], documents=found["document"])


def restore_value(value: dict | str | None, error: str) -> dict:
    """The box as it was, minus any file the error names, so nothing typed is lost."""
    if isinstance(value, str):
        value = {"text": value}
    value = value or {}
    files = [file_path(f) for f in value.get("files") or []]
    return {"text": value.get("text") or "", "files": [f for f in files if Path(f).name not in error]}


def choices(assistant, persona, custom_prompt, *values) -> tuple[GenerationParams, str]:
    """(GenerationParams, system prompt text) from the panel's values; InvalidParams when out of range."""
    shown = [(name, field, knob) for name, field, knob in knobs() if knob.label]
    params = assistant.params(
        **{name: _read(name, field, knob, value) for (name, field, knob), value in zip(shown, values)}
    )
    # The custom text wins and is taken literally (even one word); else the persona's text.
    custom = (custom_prompt or "").strip()
    system_prompt = custom or (assistant.system_prompt(persona) if persona else "")
    return params, system_prompt


def _read(name: str, field, knob, value):
    """A control's value as the option's type (sliders send floats; a text box sends text)."""
    whole = value_type(field) is int
    if knob.control == "text":
        text = str(value if value is not None else "").strip()
        if not text:
            return None
        try:
            return int(text) if whole else float(text)
        except ValueError:
            kind = "whole number" if whole else "number"
            raise InvalidParams(
                f"the {name} must be a {kind} (or empty for random), got {text!r}", param=name
            ) from None
    return int(value) if whole else float(value)
