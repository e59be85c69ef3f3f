"""What the page sends (typed words and attached files) as the engine's ``Message``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from assistant import media
from assistant.conversation import Message
from assistant.errors import InvalidParams


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
