"""POST /v1/audio/speech (OpenAI's shape, streamed) and GET /v1/audio/voices, with the real
embedded voice; the official ``openai`` client against a live server; the speech heard back."""

from __future__ import annotations

import io
import threading
import time

import av
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api import install_api
from assistant.core import Assistant
from assistant.settings import Settings
from assistant.speech import EMBEDDED_VOICE, PiperSynthesizer
from tests.fakes import FakeChatModel
from tests.server import free_port

pytestmark = pytest.mark.slow
KEY = "sk-test"
TEXT = "Paris is the capital of France. It is famous for the Eiffel Tower."


@pytest.fixture(scope="module")
def voice():
    return PiperSynthesizer()


def make_app(synthesizer, **settings) -> FastAPI:
    settings = Settings(api_key=KEY, **settings)
    assistant = Assistant(settings, FakeChatModel(), None, synthesizer=synthesizer)
    app = FastAPI()
    install_api(app, assistant, settings)
    return app


@pytest.fixture(scope="module")
def client(voice):
    return TestClient(make_app(voice), headers={"Authorization": f"Bearer {KEY}"})


def speech(client, **body):
    body.setdefault("model", "tts-1")
    body.setdefault("voice", "alloy")
    body.setdefault("input", TEXT)
    return client.post("/v1/audio/speech", json=body)


def decoded_seconds(data: bytes) -> tuple[str, int, float]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.codec_context.name, stream.rate, samples / stream.rate


@pytest.mark.parametrize(
    ("fmt", "media_type", "codec"),
    [
        ("mp3", "audio/mpeg", "mp3"),
        ("opus", "audio/ogg", "opus"),
        ("aac", "audio/aac", "aac"),
        ("flac", "audio/flac", "flac"),
        ("wav", "audio/wav", "pcm_s16le"),
    ],
)
def test_each_format_is_a_playable_file_of_the_whole_text(client, fmt, media_type, codec):
    response = speech(client, response_format=fmt)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(media_type)
    name, _, seconds = decoded_seconds(response.content)
    assert name.startswith(codec)
    assert 3.0 < seconds < 8.0  # two sentences, 12 words


def test_pcm_is_24khz_16bit_mono_as_openai_sends_it(client):
    pcm = speech(client, response_format="pcm").content
    wav = speech(client, response_format="wav").content
    assert len(pcm) % 2 == 0
    assert 3.0 < len(pcm) / 2 / 24000 < 8.0
    assert wav[:4] == b"RIFF" and int.from_bytes(wav[24:28], "little") == 24000
    samples = np.frombuffer(pcm, "<i2")
    assert samples.std() > 1000  # speech, not silence


def test_speed_makes_it_shorter(client):
    normal = len(speech(client, response_format="pcm").content)
    fast = len(speech(client, response_format="pcm", speed=2.0).content)
    assert 0.4 < fast / normal < 0.65


def test_the_default_format_is_mp3_and_our_voice_name_works(client):
    response = speech(client, voice=EMBEDDED_VOICE, model="piper en_US-joe-medium (embedded)")
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/mpeg"
    assert response.headers["x-voice"] == EMBEDDED_VOICE


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"input": ""}, 400, "input"),
        ({"input": "   "}, 400, "input"),
        ({"input": "word " * 1000}, 400, "input"),
        ({"voice": "nobody"}, 400, "voice"),
        ({"response_format": "ogg"}, 400, "response_format"),
        ({"speed": 5.0}, 400, "speed"),
        ({"speed": 0.1}, 400, "speed"),
        ({"model": "dall-e-3"}, 404, "model"),
        ({"colour": "blue"}, 400, "colour"),
        ({"instructions": "sound cheerful"}, 400, "instructions"),
        ({"stream_format": "sse"}, 400, "stream_format"),
    ],
)
def test_bad_requests_get_openai_errors(client, body, status, param):
    response = speech(client, **body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert error["message"]


def test_a_missing_voice_is_named(client):
    response = client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi."})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "voice"


def test_voices_are_listed(client):
    voices = client.get("/v1/audio/voices").json()
    assert [v["id"] for v in voices["data"]] == [EMBEDDED_VOICE]
    assert voices["data"][0]["language"] == "en" and voices["data"][0]["default"] is True
    assert "alloy" in voices["aliases"]
    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert models["piper en_US-joe-medium (embedded)"]["voices"] == [EMBEDDED_VOICE]


def test_the_key_is_required(voice):
    bare = TestClient(make_app(voice))
    assert (
        bare.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": "x"}).status_code
        == 401
    )


def test_with_tts_off_the_route_says_so():
    off = TestClient(make_app(None), headers={"Authorization": f"Bearer {KEY}"})
    response = speech(off)
    assert response.status_code == 503
    assert "--tts off" in response.json()["error"]["message"]
    assert off.get("/v1/audio/voices").status_code == 503


# --- the official client against a live server ----------------------------------------------


@pytest.fixture(scope="module")
def live(voice):
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(voice), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(10)


def test_openai_client_streams_speech_and_whisper_hears_it(live, tmp_path):
    import openai

    from assistant.speech import WhisperTranscriber as Transcriber

    oai = openai.OpenAI(api_key=KEY, base_url=live, max_retries=0, timeout=60)
    text = " ".join([TEXT] * 3) + " Thank you for listening."
    started = time.perf_counter()
    arrivals = []
    out = tmp_path / "reply.mp3"
    with (
        oai.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=text, response_format="mp3"
        ) as response,
        open(out, "wb") as file,
    ):
        for data in response.iter_bytes(4096):
            arrivals.append(time.perf_counter() - started)
            file.write(data)
    total = arrivals[-1]
    assert len(arrivals) > 2
    # the first sentence arrives before the last is made (7 sentences: ~1/7 of the time when
    # quiet; a client given the file in one piece at the end would see ~1.0)
    assert arrivals[0] < total * 0.8, f"first bytes at {arrivals[0]:.2f} s of {total:.2f} s"
    heard = Transcriber().transcribe(out, language="en").text.lower()
    assert "paris" in heard and "capital of france" in heard and "listening" in heard, heard

    with pytest.raises(openai.BadRequestError) as caught:
        oai.audio.speech.create(model="tts-1", voice="nobody", input="Hello.")
    assert caught.value.body["param"] == "voice"
