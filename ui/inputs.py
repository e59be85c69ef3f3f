"""Turn what was typed and attached in the multimodal box into one user message."""

from __future__ import annotations

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
    video clips, documents (PDF, text, Markdown).

    Files are routed by content, not by name. Anything that is not recognisably audio, video or
    a document goes with the images, so the engine's image check names the file and says what
    is wrong.
    """
    if isinstance(value, str):
        value = {"text": value}
    value = value or {}
    text = value.get("text") or ""
    found: dict[str, list[str]] = {"image": [], "audio": [], "video": [], "document": []}
    for item in value.get("files") or []:
        path = file_path(item)
        kind = media.kind_of(path)
        found[kind if kind in found else "image"].append(path)
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
