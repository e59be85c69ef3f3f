"""``POST /v1/audio/speech`` as OpenAI defines it, and ``GET /v1/audio/voices``.

The audio is streamed as it is synthesized: sentence by sentence, each encoded at once, so a
client (``client.audio.speech.with_streaming_response.create(...)``) can play the first words
while the rest is still being made. Everything is checked before the first byte goes out, so a
bad request is a 400 in OpenAI's error shape, never a broken stream: control characters (a NUL
stopped espeak mid-stream), and work: 4,096 characters may be minutes of speech or, in a script
the voice spells out letter by letter (Arabic to the English voice), 40 minutes of it, so the
audio the input would make is estimated from its phonemes (milliseconds) and bounded by
``MAX_SPEECH_S``; the synthesis itself stops there too.
"""

from __future__ import annotations

import re
from typing import Literal

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from api.errors import ApiError, from_invalid_params
from api.responses import VoiceCard, VoiceList
from api.schemas import Strict
from api.streaming import Workers
from assistant.errors import InvalidParams
from assistant.metrics import metered_speech
from assistant.speech import (
    FORMATS,
    LONG_SPEECH_S,
    MAX_SPEED,
    MEDIA_TYPES,
    MIN_SPEED,
    OPENAI_VOICES,
    bounded,
    check_speed,
    encode,
    give_back_memory,
    speech_seconds,
)

MAX_INPUT_CHARS = 4096  # as OpenAI
MAX_SPEECH_S = 10 * 60.0  # audio one request may make (4,096 English characters: ~4 min at speed 1)
# C0/C1 controls but tab, newline and carriage return
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Names OpenAI clients send for the model: all read by the server's synthesizer.
TTS_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
_END = object()


class SpeechRequest(Strict):
    model: str
    input: str
    voice: str
    response_format: str = "mp3"
    speed: float = Field(default=1.0)
    instructions: str | None = None  # gpt-4o-mini-tts' style hint: Piper has no such control
    stream_format: Literal["audio"] | None = None  # "sse" is not offered


def voice_cards(assistant) -> list[VoiceCard]:
    synth = assistant.synthesizer
    if synth is None:
        return []
    default = synth.voices[0].name
    return [
        VoiceCard(id=v.name, language=v.language, sample_rate=v.sample_rate, default=v.name == default)
        for v in synth.voices
    ]


def install(router: APIRouter, assistant, settings, workers: Workers | None = None) -> None:
    """Add the speech routes to the /v1 router (before its catch-all)."""
    workers = workers or Workers()

    @router.get("/audio/voices")
    async def voices():
        """The voices ``voice`` may name (OpenAI's names, such as alloy, read with the first)."""
        assistant.require_voice()
        return VoiceList(data=voice_cards(assistant), aliases=list(OPENAI_VOICES))

    @router.post("/audio/speech")
    async def speech(body: SpeechRequest, request: Request):
        synth = assistant.require_voice()
        if body.model not in (synth.name, *TTS_ALIASES):
            raise ApiError(
                404,
                f"The model '{body.model}' does not exist; use '{synth.name}' (or {', '.join(TTS_ALIASES)})",
                param="model",
                code="model_not_found",
            )
        text = body.input
        if not text.strip():
            raise ApiError(400, "input must not be empty", param="input", code="invalid_value")
        if len(text) > MAX_INPUT_CHARS:
            raise ApiError(
                400,
                f"input is {len(text)} characters long; at most {MAX_INPUT_CHARS} are allowed",
                param="input",
                code="string_above_max_length",
            )
        control = CONTROL.search(text)
        if control is not None:
            raise ApiError(
                400,
                f"input contains a control character (U+{ord(control.group()):04X}) at position "
                f"{control.start()}: send plain text",
                param="input",
                code="invalid_value",
            )
        if body.response_format not in FORMATS:
            raise ApiError(
                400,
                f"response_format must be one of {', '.join(FORMATS)}, got {body.response_format!r}",
                param="response_format",
                code="invalid_value",
            )
        if body.instructions:
            raise ApiError(
                400,
                "instructions are not supported by this server's voices; leave them out",
                param="instructions",
                code="unsupported_parameter",
            )
        try:
            synth.resolve(body.voice)
            check_speed(body.speed)
            seconds = await workers.run(speech_seconds, synth, text, body.voice, body.speed)
        except InvalidParams as exc:
            raise from_invalid_params(exc, {}) from None
        if seconds > MAX_SPEECH_S:
            raise ApiError(
                400,
                f"input would be about {seconds / 60:.0f} minutes of speech; at most "
                f"{MAX_SPEECH_S / 60:.0f} minutes are made per request: send less text (or a higher speed)",
                param="input",
                code="speech_too_long",
            )
        assistant.quotas.admit(request.state.user)
        # the estimate errs on the long side: the bound stops only what it got badly wrong
        speaking = bounded(
            metered_speech(synth.speak(text, voice=body.voice, speed=body.speed), assistant.metrics),
            MAX_SPEECH_S * 1.5,
        )
        audio = encode(speaking, body.response_format)

        async def stream():
            try:
                while True:
                    data = await workers.run(next, audio, _END)
                    if data is _END:
                        return
                    yield data
            finally:  # the end, or the client went away: stop synthesizing
                with anyio.CancelScope(shield=True):
                    await workers.run(audio.close)
                    if seconds >= LONG_SPEECH_S:
                        await workers.run(give_back_memory, synth)

        return StreamingResponse(
            stream(),
            media_type=MEDIA_TYPES[body.response_format],
            headers={"X-Voice": synth.resolve(body.voice).name, "Cache-Control": "no-store"},
        )


__all__ = ["MAX_INPUT_CHARS", "MAX_SPEECH_S", "MAX_SPEED", "MIN_SPEED", "install"]
