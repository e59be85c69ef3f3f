"""The /v1 routes: models, chat completions (JSON or SSE), audio transcriptions (speech: api.audio).

Every route goes through :class:`OpenAIRoute`, which checks the API key first and turns any
error into OpenAI's error JSON; nothing here touches the app-wide handlers, so the Gradio
page mounted beside these routes keeps its own behaviour.
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from api import audio
from api.errors import ApiError, from_exception, from_invalid_params
from api.images import ImageFetcher
from api.messages import convert
from api.replies import Completion
from api.schemas import ChatCompletionRequest, generation_values
from api.streaming import Workers
from assistant.errors import InvalidParams, ModelUnavailable
from assistant.settings import MB
from assistant.store import LOCAL_OWNER
from web.logins import Logins, TooManyAttempts

# Who calls with the API key (a login's user name cannot contain a colon).
API_KEY_USER = ":api-key"
WHISPER_ALIAS = "whisper-1"  # the name OpenAI clients and tools send by default
TRANSCRIPTION_FIELDS = ("file", "model", "language", "response_format")
RESPONSE_FORMATS = ("json", "text", "verbose_json")


def route_class(api_key: str | None, max_body_bytes: int, logins: Logins | None = None) -> type[APIRoute]:
    """Routes that check credentials first (the API key as Bearer, or a page login as HTTP Basic)
    and turn every error into OpenAI's error JSON."""
    expected = api_key.encode() if api_key else None
    challenge = 'Basic realm="assistant", charset="UTF-8"' if logins else "Bearer"
    if logins and expected is not None:
        wanted = "send 'Authorization: Bearer <key>' or a page login as HTTP Basic"
    elif logins:
        wanted = "send a page login as HTTP Basic ('Authorization: Basic <base64 of user:password>')"
    else:
        wanted = "send 'Authorization: Bearer <key>'"

    def authenticate(request: Request) -> str:
        """Who calls: a page login's user name, or API_KEY_USER for the API key."""
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if expected is not None and scheme.lower() == "bearer":
            if hmac.compare_digest(given.strip().encode(), expected):
                return API_KEY_USER
        elif logins and scheme.lower() == "basic":
            client = request.client.host if request.client else "?"
            try:
                user = logins.check_basic(client, header)
                if user is not None:
                    return user
            except TooManyAttempts as exc:
                raise ApiError(
                    429, str(exc), code="rate_limit_exceeded", headers={"Retry-After": str(exc.retry_after_s)}
                ) from None
        what = "API key" if not logins else "credentials"
        raise ApiError(401, f"missing or wrong {what}: {wanted}", code="invalid_api_key")

    class OpenAIRoute(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()

            async def guarded(request: Request):
                try:
                    request.state.user = LOCAL_OWNER
                    if expected is not None or logins:
                        request.state.user = authenticate(request)
                    length = request.headers.get("content-length", "")
                    if length.isdigit() and int(length) > max_body_bytes:
                        raise ApiError(
                            413,
                            f"the request body is larger than {max_body_bytes // MB} MB",
                            code="request_too_large",
                        )
                    return await handler(request)
                except HTTPException as exc:
                    return ApiError(exc.status_code, str(exc.detail)).response()
                except Exception as exc:
                    error = from_exception(exc)
                    return error.response({"WWW-Authenticate": challenge} if error.status == 401 else None)

            return guarded

    return OpenAIRoute


def public_name(name: str) -> str:
    """What clients see of a model: a hub id as it is, a local directory by its last part
    (the server's file layout is nobody's business)."""
    try:
        local = Path(name).expanduser().exists()
    except (OSError, ValueError):
        local = False
    return Path(name).name if local else name


def chat_body_limit(settings) -> int:
    """The largest /v1 request body: a chat with its images as base64 data URLs, or an audio file."""
    chat_body = (settings.max_images_in_context + 4) * settings.max_image_bytes * 4 // 3 + MB
    clip_or_document = max(settings.max_video_bytes, settings.max_document_bytes) * 4 // 3 + MB
    return max(chat_body, settings.max_audio_bytes + MB, clip_or_document)


def build_router(assistant, settings, logins: Logins | None = None) -> APIRouter:
    if logins is None and settings.auth:
        logins = Logins(settings.auth)
    router = APIRouter(
        prefix="/v1", route_class=route_class(settings.api_key, chat_body_limit(settings), logins)
    )
    fetcher = ImageFetcher(
        allow_remote=settings.allow_remote_images,
        max_bytes=settings.max_image_bytes,
        timeout_s=settings.remote_image_timeout_s,
        max_video_bytes=settings.max_video_bytes,
        max_document_bytes=settings.max_document_bytes,
    )
    workers = Workers()
    created = int(time.time())

    def model_card(name: str, **extra) -> dict:
        return {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "multimodal-assistant",
            **extra,
        }

    def cards() -> list[dict]:
        loaded, found = assistant.describe(), []
        if loaded.chat is not None:
            extra = {"dtype": loaded.chat.dtype} if loaded.chat.dtype else {}
            found.append(
                model_card(public_name(loaded.chat.name), max_model_len=loaded.chat.context_length, **extra)
            )
        if loaded.speech_model is not None:
            found.append(model_card(loaded.speech_model))
        if loaded.voice_model is not None:  # POST /v1/audio/speech; its voices at /v1/audio/voices
            found.append(model_card(loaded.voice_model, voices=[v.name for v in loaded.voices]))
        return found

    @router.get("/models")
    async def list_models():
        return {"object": "list", "data": cards()}

    @router.get("/models/{model_id:path}")
    async def get_model(model_id: str):
        for card in cards():
            if card["id"] == model_id:
                return card
        raise ApiError(404, f"The model '{model_id}' does not exist", param="model", code="model_not_found")

    @router.post("/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        served = assistant.require_chat().info.name
        name = public_name(served)
        if body.model not in (name, served):
            raise ApiError(
                404,
                f"The model '{body.model}' does not exist; this server serves '{name}'",
                param="model",
                code="model_not_found",
            )
        if body.n not in (None, 1):
            raise ApiError(400, "n must be 1: this server returns one choice per request", param="n")
        if body.stream_options is not None and not body.stream:
            raise ApiError(400, "stream_options is only allowed when stream is true", param="stream_options")
        history, message, system_prompt = await convert(body.messages, fetcher)
        values, fields = generation_values(body)
        try:
            params = assistant.params(**values)
        except InvalidParams as exc:
            raise from_invalid_params(exc, fields) from None
        cancel = threading.Event()
        reply = assistant.reply(
            history,
            message,
            params,
            system_prompt=system_prompt,
            literal_system=True,
            cancel=cancel,
            user=request.state.user + (f"\0{body.cache_salt}" if body.cache_salt else ""),
        )
        completion = Completion(name, workers.iterate(reply, request, cancel))
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return await completion.streaming(include_usage)
        return await completion.complete()

    @router.post("/audio/transcriptions")
    async def transcriptions(request: Request):
        asr_name = assistant.describe().speech_model
        if asr_name is None:
            raise ModelUnavailable("speech recognition is not loaded on this server")
        async with request.form(max_files=1, max_fields=16) as form:  # room to name a stray field
            for key in form:
                if key not in TRANSCRIPTION_FIELDS:
                    raise ApiError(
                        400,
                        f"Unrecognized request argument supplied: {key}",
                        param=key,
                        code="unknown_parameter",
                    )
            upload, model = form.get("file"), form.get("model")
            if not isinstance(upload, UploadFile):
                raise ApiError(
                    400,
                    "missing required parameter: file (send the audio as multipart form data)",
                    param="file",
                    code="missing_required_parameter",
                )
            if not model:
                raise ApiError(
                    400, "missing required parameter: model", param="model", code="missing_required_parameter"
                )
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
                    400,
                    f"response_format must be one of {', '.join(RESPONSE_FORMATS)}",
                    param="response_format",
                )
            language = form.get("language") or None
            data = await upload.read(settings.max_audio_bytes + 1)
        if len(data) > settings.max_audio_bytes:
            raise ApiError(
                413,
                f"the audio file is larger than {settings.max_audio_bytes // MB} MB",
                param="file",
                code="audio_too_large",
            )
        transcript = await workers.run(assistant.transcribe, data, language)
        if response_format == "text":
            return PlainTextResponse(transcript.text)
        usage = {"type": "duration", "seconds": math.ceil(transcript.duration_s)}
        if response_format == "json":
            return {"text": transcript.text, "usage": usage}
        segments = [
            {"id": i, "start": s.start, "end": s.end, "text": s.text}
            for i, s in enumerate(transcript.segments)
        ]
        return {
            "task": "transcribe",
            "language": transcript.language,
            "duration": transcript.duration_s,
            "text": transcript.text,
            "segments": segments,
            "usage": usage,
        }

    audio.install(router, assistant, settings, workers)  # /audio/speech, /audio/voices

    # The interactive docs and the schema sit behind the same credentials as the routes.
    @router.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request):
        return request.app.openapi()

    @router.get("/docs", include_in_schema=False)
    async def docs(request: Request):
        return get_swagger_ui_html(openapi_url="/v1/openapi.json", title="Multimodal assistant API")

    @router.api_route(
        "/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
    )
    async def unknown_route(request: Request):
        raise ApiError(404, f"Unknown route: {request.method} {request.url.path}", code="unknown_url")

    return router
