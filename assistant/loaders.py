"""The models the settings name, loaded: the chat model (a local Hugging Face model, a remote
OpenAI-compatible server, or the embedded text model standing in for a default that cannot be
had), the transcriber and the synthesizer; and what is loaded, as the page and ``/v1/models``
describe it. :meth:`assistant.core.Assistant.load` calls :func:`load_models` once at start-up;
``python -m assistant transcribe`` and ``speak`` load only what they need.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from assistant.errors import ModelUnavailable
from assistant.models.base import ChatModel, ModelInfo
from assistant.settings import MB, Settings, resolve_defaults
from assistant.speech import (
    EMBEDDED,
    PiperSynthesizer,
    Synthesizer,
    Transcriber,
    VoiceInfo,
    WhisperTranscriber,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Description:
    """What is loaded, as the page's settings panel and ``/v1/models`` show it."""

    chat_model: str | None  # the configured name, loaded or not
    chat: ModelInfo | None  # None: not loaded (see chat_error)
    chat_error: str | None
    speech_model: str | None  # None: speech recognition is not loaded
    speech_device: str | None
    voice_model: str | None = None  # None: speech synthesis is not loaded (--tts off)
    voices: tuple[VoiceInfo, ...] = ()
    # Why the model answering is not the one asked for (the embedded one standing in).
    chat_notice: str | None = None


@dataclass(frozen=True)
class Loaded:
    """What :func:`load_models` loaded, and the settings with the device's defaults resolved."""

    settings: Settings
    chat_model: ChatModel | None
    chat_error: str | None  # why there is no chat model (or why the stand-in answers)
    chat_notice: str | None  # set when the embedded model stands in
    transcriber: Transcriber | None
    synthesizer: Synthesizer | None


def load_models(
    settings: Settings,
    *,
    load_chat: bool = True,
    load_asr: bool = True,
    require_chat: bool = False,
    load_tts: bool = True,
) -> Loaded:
    """Load the models once. A chat model that cannot be loaded is remembered as
    ``chat_error`` (unless ``require_chat``: raised), so the app can still start and
    transcribe. When no model was named and the default cannot be had (offline, not
    downloaded), the embedded text model answers instead and ``chat_notice`` says so."""
    chose_model = bool(settings.model)
    settings = resolve_defaults(settings)
    chat_model, chat_error, notice = None, None, None
    if load_chat:
        try:
            chat_model = load_chat_model(settings)
        except ModelUnavailable as exc:
            chat_error = str(exc)
            if not chose_model and settings.backend == "local":
                chat_model, notice = load_stand_in(settings, chat_error)
            if chat_model is None and require_chat:
                raise
            if chat_model is None:
                log.error("%s", exc)
            else:
                log.warning("%s", notice)
    transcriber = load_transcriber(settings) if load_asr else None
    synthesizer = load_synthesizer(settings) if load_tts and settings.tts == "on" else None
    return Loaded(settings, chat_model, chat_error, notice, transcriber, synthesizer)


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
