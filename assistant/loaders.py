"""The models the settings name, loaded: the chat model (a local Hugging Face model, a remote
OpenAI-compatible server, or the embedded text model standing in for a default that cannot be
had), the transcriber and the synthesizer. :meth:`assistant.core.Assistant.load` calls these
once at start-up; ``python -m assistant transcribe`` and ``speak`` load only what they need.
"""

from __future__ import annotations

import logging

from assistant.errors import ModelUnavailable
from assistant.models.base import ChatModel
from assistant.settings import MB, Settings
from assistant.speech import EMBEDDED, PiperSynthesizer, Synthesizer, Transcriber, WhisperTranscriber

log = logging.getLogger(__name__)


def load_chat_model(settings: Settings) -> ChatModel:
    if settings.backend == "openai":
        from assistant.models.remote import RemoteChatModel

        return RemoteChatModel.from_settings(settings)
    from assistant.models.local import LocalChatModel

    return LocalChatModel.load(
        settings.model or "",
        device=settings.device,
        quantization=settings.quantization,
        image_max_side=settings.image_max_side,
        dtype=settings.dtype,
        prefix_cache_bytes=None if settings.prefix_cache_mb is None else settings.prefix_cache_mb * MB,
    )


def load_stand_in(settings: Settings, why: str) -> tuple[ChatModel | None, str | None]:
    """The embedded text model, for when the default one cannot be had; and the notice that
    says so (None, None when it cannot be loaded either)."""
    from assistant.models import gguf

    if gguf.embedded_gguf() is None:
        return None, None
    try:
        model = load_chat_model(settings.replace(model=gguf.EMBEDDED, quantization="none"))
    except ModelUnavailable as exc:
        log.error("the embedded model cannot be loaded either: %s", exc)
        return None, None
    log.warning("the default model cannot be loaded: %s", why)
    return model, (
        f"The default model, {settings.model}, cannot be loaded here. The embedded "
        f"{gguf.EMBEDDED_NAME} answers instead: a small text-only model for simple questions; "
        "it reads the text in photos and scans (OCR) but cannot see pictures."
    )


def load_transcriber(settings: Settings) -> Transcriber:
    if settings.asr_backend == "openai":
        from assistant.speech.remote import RemoteTranscriber

        return RemoteTranscriber.from_settings(settings)
    return WhisperTranscriber(
        settings.asr_model,
        device=settings.asr_device,
        compute_type=settings.asr_compute_type,
        beam_size=settings.asr_beam_size,
        max_audio_seconds=settings.max_audio_seconds,
        max_audio_bytes=settings.max_audio_bytes,
    )


def load_synthesizer(settings: Settings) -> Synthesizer:
    """The synthesizer the settings ask for (``--tts-backend``, ``--tts-voice``, ``--tts-speed``)."""
    if settings.tts_backend == "openai":
        from assistant.speech.remote import RemoteSynthesizer

        return RemoteSynthesizer.from_settings(settings)
    return PiperSynthesizer(tuple(settings.tts_voice) or (EMBEDDED,), speed=settings.tts_speed)
