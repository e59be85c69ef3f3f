"""``GET /v1/models`` and ``GET /v1/models/{id}``: what is loaded, as OpenAI's model cards.

One card per loaded model: the chat model (with vLLM's ``max_model_len`` and, where the backend
says, ``dtype``), the speech recognizer, the embedding model (``/v1/embeddings``), and the voice
model (with its ``voices``; their details at ``/v1/audio/voices``).
"""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import APIRouter

from api.errors import ApiError
from api.responses import ModelCard, ModelList


def public_name(name: str) -> str:
    """What clients see of a model: a hub id as it is, a local directory by its last part
    (the server's file layout is nobody's business)."""
    try:
        local = Path(name).expanduser().exists()
    except (OSError, ValueError):
        local = False
    return Path(name).name if local else name


def cards(assistant, created: int) -> list[ModelCard]:
    loaded, found = assistant.describe(), []
    if loaded.chat is not None:
        found.append(
            ModelCard(
                id=public_name(loaded.chat.name),
                created=created,
                max_model_len=loaded.chat.context_length,
                dtype=loaded.chat.dtype or None,
                input_modalities=["text", "image"] if loaded.chat.vision else ["text"],
            )
        )
    if loaded.speech_model is not None:
        found.append(ModelCard(id=loaded.speech_model, created=created))
    if assistant.embedder is not None:  # listed before its first use, which loads it
        found.append(ModelCard(id=assistant.embedder.name, created=created, input_modalities=["text"]))
    if loaded.voice_model is not None:
        found.append(
            ModelCard(id=loaded.voice_model, created=created, voices=[v.name for v in loaded.voices])
        )
    return found


def install(router: APIRouter, assistant) -> None:
    """Add the model routes to the /v1 router (before its catch-all)."""
    created = int(time.time())  # when the server started: the models were loaded then

    @router.get("/models")
    async def list_models():
        return ModelList(data=cards(assistant, created))

    @router.get("/models/{model_id:path}")
    async def get_model(model_id: str):
        for card in cards(assistant, created):
            if card.id == model_id:
                return card
        raise ApiError(404, f"The model '{model_id}' does not exist", param="model", code="model_not_found")


__all__ = ["cards", "install", "public_name"]
