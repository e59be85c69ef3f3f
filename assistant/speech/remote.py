"""Speech through a remote OpenAI-compatible server (OpenAI, vLLM, a GPU box, this app).

:class:`RemoteTranscriber` sends a recording to ``/audio/transcriptions``; :class:`RemoteSynthesizer`
reads ``/audio/speech`` as 24 kHz pcm while the server sends it. Both fulfil the contracts of
:mod:`~assistant.speech.types`; network problems become ``ModelUnavailable`` naming the URL (the
transcriber's in the chat backend's words: it shares :mod:`assistant.models.remote`'s HTTP
helpers). Imported on demand: it brings httpx and the chat backend with it.
"""

from __future__ import annotations

import io
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from assistant.errors import InvalidParams, MediaError, ModelUnavailable
from assistant.models.remote import http_client, raise_for_status, translated
from assistant.settings import MAX_AUDIO_BYTES
from assistant.speech import speakable
from assistant.speech.bounds import CHARS_PER_SECOND, check_speed
from assistant.speech.types import Segment, SpeechChunk, Transcript, VoiceInfo
from assistant.speech.voices import EMBEDDED

REMOTE_SAMPLE_RATE = 24000  # OpenAI's pcm: 24 kHz, 16-bit, mono
_LANGUAGE_CODES = {
    "english": "en",
    "spanish": "es",
    "french": "fr",
    "german": "de",
    "italian": "it",
    "portuguese": "pt",
    "dutch": "nl",
    "russian": "ru",
    "chinese": "zh",
    "japanese": "ja",
    "korean": "ko",
}


# --- /audio/transcriptions --------------------------------------------------------------------


class RemoteTranscriber:
    """Speech to text through a remote ``/v1/audio/transcriptions`` (OpenAI, vLLM, this app)."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str = "whisper-1",
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_audio_bytes: int = MAX_AUDIO_BYTES,
        client: httpx.Client | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.name = model
        self.device = "remote"
        self.timeout_s, self.max_audio_bytes = timeout_s, max_audio_bytes
        self._client = client or http_client(self.base_url, api_key, timeout_s)

    @classmethod
    def from_settings(cls, settings) -> RemoteTranscriber:
        if not settings.base_url:
            raise ModelUnavailable("--asr-backend openai needs --base-url")
        # 'embedded' names our local default; remote servers know OpenAI's name for Whisper.
        model = settings.asr_model if settings.asr_model not in ("embedded", "", None) else "whisper-1"
        return cls(
            settings.base_url,
            model=model,
            api_key=settings.remote_api_key,
            timeout_s=settings.remote_timeout_s,
            max_audio_bytes=settings.max_audio_bytes,
        )

    def _payload(self, audio) -> tuple[str, bytes]:
        if isinstance(audio, (str, Path)):
            path = Path(audio)
            try:
                size = path.stat().st_size
            except OSError as exc:
                raise MediaError(f"cannot read the audio file {path.name}: {exc.strerror}") from None
            if size > self.max_audio_bytes:
                raise MediaError(f"{path.name} is larger than {self.max_audio_bytes // 2**20} MB")
            return path.name, path.read_bytes()
        if isinstance(audio, (bytes, bytearray)):
            if len(audio) > self.max_audio_bytes:
                raise MediaError(f"the audio is larger than {self.max_audio_bytes // 2**20} MB")
            return "audio", bytes(audio)
        return "audio.wav", _wav_bytes(audio)  # 16 kHz mono float samples

    def transcribe(self, audio, language: str | None = None):
        filename, data = self._payload(audio)
        form = {"model": self.name, "response_format": "verbose_json"}
        if language:
            form["language"] = language
        started = time.perf_counter()
        with translated("speech server", self.base_url, self.timeout_s):
            response = self._client.post(
                "audio/transcriptions",
                data=form,
                files={"file": (filename, data, "application/octet-stream")},
            )
            raise_for_status(response, "speech server", self.base_url)
            body = response.json()
        segments = tuple(
            Segment(float(s.get("start", 0)), float(s.get("end", 0)), str(s.get("text", "")).strip())
            for s in body.get("segments") or []
        )
        detected = str(body.get("language") or language or "")
        return Transcript(
            text=str(body.get("text", "")).strip(),
            language=_LANGUAGE_CODES.get(detected.lower(), detected),
            duration_s=float(body.get("duration") or (segments[-1].end if segments else 0.0)),
            segments=segments,
            language_probability=1.0 if language else 0.0,
            elapsed_s=time.perf_counter() - started,
        )


def _wav_bytes(samples) -> bytes:
    pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1, 1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


# --- /audio/speech ----------------------------------------------------------------------------


class RemoteSynthesizer:
    """Speech from an OpenAI-compatible ``/v1/audio/speech`` (OpenAI, a GPU box, this app), read
    as 24 kHz pcm while the server sends it, one request per piece."""

    device = "remote"

    def __init__(
        self,
        base_url: str,
        *,
        model: str = "tts-1",
        voice: str = "alloy",
        api_key: str | None = None,
        speed: float = 1.0,
        timeout_s: float = 120.0,
        client: Any = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.model, self.speed = model, check_speed(speed)
        self.name = f"{model} (remote)"
        self.voices: tuple[VoiceInfo, ...] = (VoiceInfo(voice, "en", REMOTE_SAMPLE_RATE),)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)

    @classmethod
    def from_settings(cls, settings) -> RemoteSynthesizer:
        url = settings.tts_base_url or settings.base_url
        if not url:
            raise ModelUnavailable("--tts-backend openai needs --tts-base-url (or --base-url)")
        voices = [v for v in settings.tts_voice if v != EMBEDDED]
        return cls(
            url,
            model=settings.tts_model,
            voice=voices[0] if voices else "alloy",
            api_key=settings.tts_api_key or settings.remote_api_key,
            speed=settings.tts_speed,
            timeout_s=settings.remote_timeout_s,
        )

    def voice_for(self, language: str | None) -> VoiceInfo | None:
        return self.voices[0]  # the server's voices are its own business (many are multilingual)

    def resolve(self, voice: str | None) -> VoiceInfo:
        return (
            self.voices[0] if voice in (None, EMBEDDED) else VoiceInfo(str(voice), "en", REMOTE_SAMPLE_RATE)
        )

    def seconds_of(self, text: str, voice: str | None = None, speed: float | None = None) -> float:
        said = sum(len(p) for p in speakable.split(text))
        return said / CHARS_PER_SECOND / (self.speed * check_speed(speed))

    def speak(self, text: str, voice: str | None = None, speed: float | None = None) -> Iterator[SpeechChunk]:
        rate = self.speed * check_speed(speed)
        for piece in speakable.split(text):
            yield from self._request(piece, voice or self.voices[0].name, rate)

    def speak_piece(self, piece: str, voice: VoiceInfo, rate: float = 1.0) -> SpeechChunk:
        parts = [c.samples for c in self._request(piece, voice.name, rate)]
        return SpeechChunk(
            np.concatenate(parts) if parts else np.zeros(0, np.float32), REMOTE_SAMPLE_RATE, piece
        )

    def _request(self, piece: str, voice: str, rate: float) -> Iterator[SpeechChunk]:
        body = {"model": self.model, "input": piece, "voice": voice, "response_format": "pcm", "speed": rate}
        try:
            with self._client.stream("POST", "/audio/speech", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    detail = response.text[:300]
                    if response.status_code in (400, 404, 422):
                        raise InvalidParams(f"the speech server refused the request: {detail}")
                    raise ModelUnavailable(f"the speech server answered {response.status_code}: {detail}")
                left = b""
                for data in response.iter_bytes():
                    data, cut = left + data, (len(left) + len(data)) // 2 * 2
                    data, left = data[:cut], data[cut:]
                    if data:
                        samples = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
                        yield SpeechChunk(samples, REMOTE_SAMPLE_RATE, piece)
        except httpx.HTTPError as exc:
            raise ModelUnavailable(
                f"the speech server at {self.base_url} cannot be reached ({exc})"
            ) from None
