"""``POST /v1/audio/transcriptions`` as OpenAI defines it: multipart form in, text or JSON out.

``model`` may be the loaded recognizer's name or ``whisper-1`` (what OpenAI clients send by
default); ``response_format`` is ``json``, ``text`` or ``verbose_json`` (with segments). A form
field we do not know is a 400 that names it, as for the JSON routes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from starlette.datastructures import FormData, UploadFile

from api.errors import ApiError
from api.responses import DurationUsage, Transcription, TranscriptionSegment, VerboseTranscription
from api.streaming import Workers
from assistant.errors import ModelUnavailable
from assistant.settings import MB
from assistant.speech import Transcript

WHISPER_ALIAS = "whisper-1"  # the name OpenAI clients and tools send by default
TRANSCRIPTION_FIELDS = ("file", "model", "language", "response_format")
RESPONSE_FORMATS = ("json", "text", "verbose_json")


@dataclass(frozen=True)
class TranscriptionRequest:
    audio: bytes  # at most one byte over the cap: the caller checks
    language: str | None
    response_format: str


def missing(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=param, code="missing_required_parameter")


def check_form(form: FormData, asr_name: str) -> tuple[UploadFile, str]:
    """The upload, and the response format; a 4xx for what is missing, unknown or wrong."""
    for key in form:
        if key not in TRANSCRIPTION_FIELDS:
            raise ApiError(
                400, f"Unrecognized request argument supplied: {key}", param=key, code="unknown_parameter"
            )
    upload, model = form.get("file"), form.get("model")
    if not isinstance(upload, UploadFile):
        raise missing("file", "missing required parameter: file (send the audio as multipart form data)")
    if not model:
        raise missing("model", "missing required parameter: model")
    if model not in (asr_name, WHISPER_ALIAS):
        raise ApiError(
            404,
            f"The model '{model}' does not exist; use '{asr_name}'",
            param="model",
            code="model_not_found",
        )
    response_format = form.get("response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise ApiError(
            400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}", param="response_format"
        )
    return upload, str(response_format)


async def read_request(request: Request, asr_name: str, max_bytes: int) -> TranscriptionRequest:
    async with request.form(max_files=1, max_fields=16) as form:  # room to name a stray field
        upload, response_format = check_form(form, asr_name)
        language = form.get("language") or None
        audio = await upload.read(max_bytes + 1)
    if len(audio) > max_bytes:
        raise ApiError(
            413, f"the audio file is larger than {max_bytes // MB} MB", param="file", code="audio_too_large"
        )
    return TranscriptionRequest(audio, language if isinstance(language, str) else None, response_format)


def shaped(transcript: Transcript, response_format: str):
    if response_format == "text":
        return PlainTextResponse(transcript.text)
    usage = DurationUsage(seconds=math.ceil(transcript.duration_s))
    if response_format == "json":
        return Transcription(text=transcript.text, usage=usage)
    return VerboseTranscription(
        language=transcript.language,
        duration=transcript.duration_s,
        text=transcript.text,
        segments=[
            TranscriptionSegment(id=i, start=s.start, end=s.end, text=s.text)
            for i, s in enumerate(transcript.segments)
        ],
        usage=usage,
    )


def install(router: APIRouter, assistant, settings, workers: Workers) -> None:
    """Add the route to the /v1 router (before its catch-all)."""

    @router.post("/audio/transcriptions")
    async def transcriptions(request: Request):
        asr_name = assistant.describe().speech_model
        if asr_name is None:
            raise ModelUnavailable("speech recognition is not loaded on this server")
        asked = await read_request(request, asr_name, settings.max_audio_bytes)
        assistant.quotas.admit(request.state.user)
        transcript = await workers.run(assistant.transcribe, asked.audio, asked.language)
        return shaped(transcript, asked.response_format)


__all__ = ["RESPONSE_FORMATS", "WHISPER_ALIAS", "install"]
