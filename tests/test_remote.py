"""The remote backend: the ChatModel contract over an OpenAI-compatible server.

Fast part: ``RemoteChatModel`` / ``RemoteTranscriber`` against this app's own API in-process
(``TestClient`` is an ``httpx.Client``) and against scripted failures. Real part (``slow``): a
front-end app pointed at a second app (the "engine"), the engine killed and brought back.
"""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from api import install_api
from assistant.conversation import Message
from assistant.core import Assistant, Done, Token
from assistant.errors import GenerationFailed, InvalidParams, ModelUnavailable
from assistant.models.base import ChatRequest, Usage
from assistant.models.remote import RemoteChatModel
from assistant.options import GenerationParams
from assistant.settings import Settings
from assistant.speech.remote import RemoteTranscriber
from tests.fakes import FakeChatModel
from tests.test_api import FakeTranscriber

URL = "http://engine.test/v1"


def engine_client(model=None, transcriber=None, key="engine-key") -> tuple[TestClient, FakeChatModel]:
    model = model or FakeChatModel()
    settings = Settings(api_key=key)
    app = FastAPI()
    install_api(app, Assistant(settings, model, transcriber), settings)
    return TestClient(app, base_url=URL + "/", headers={"Authorization": f"Bearer {key}"}), model


def remote(model=None, **kw) -> tuple[RemoteChatModel, FakeChatModel]:
    tc, fake = engine_client(model)
    chat_model = RemoteChatModel(URL, client=tc, **kw)
    chat_model.discover()
    return chat_model, fake


def scripted(handler, **kw) -> RemoteChatModel:
    client = httpx.Client(base_url=URL + "/", transport=httpx.MockTransport(handler))
    return RemoteChatModel(URL, model="m", client=client, **kw)


def run(chat_model, text="hi", images=(), **params) -> tuple[str, Usage]:
    request = ChatRequest([Message.user(text, images)], GenerationParams(**params))
    items = list(chat_model.stream(request))
    return "".join(i for i in items if isinstance(i, str)), items[-1]


def sse(*chunks) -> bytes:
    return b"".join(
        b"data: " + (c if isinstance(c, bytes) else json.dumps(c).encode()) + b"\n\n" for c in chunks
    )


def delta(text=None, finish=None) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]}


# --------------------------------------------------------------------------- against this app's API


def test_discovers_the_served_model_and_its_context():
    chat_model, _ = remote()
    assert chat_model.info.name == "fake" and chat_model.info.context_length == 4096
    assert chat_model.info.backend == "openai" and not hasattr(chat_model, "queue")  # the server batches


def test_streams_with_images_params_and_usage():
    chat_model, fake = remote()
    text, usage = run(
        chat_model,
        "what is it?",
        [Image.new("RGB", (40, 30), "blue")],
        max_new_tokens=3,
        temperature=0.3,
        top_p=0.9,
        seed=5,
        stop=("zz",),
        min_new_tokens=1,
    )
    assert text == "Hello, world"
    got = fake.requests[-1]
    assert got.messages[-1].text == "what is it?" and got.messages[-1].images[0].size == (40, 30)
    assert (
        got.params.max_new_tokens,
        got.params.temperature,
        got.params.top_p,
        got.params.seed,
        got.params.stop,
        got.params.min_new_tokens,
    ) == (3, 0.3, 0.9, 5, ("zz",), 1)
    # usage comes from the server's final chunk (stream_options.include_usage)
    assert usage.prompt_tokens == fake.usages[-1].prompt_tokens and usage.completion_tokens == 3
    assert usage.finish_reason == "length" and usage.first_token_at is not None


def test_assistant_over_a_remote_model_end_to_end():
    chat_model, fake = remote()
    front = Assistant(Settings(), chat_model)
    history = [Message("user", "earlier"), Message("assistant", "ok")]
    events = list(front.reply(history, Message.user("hi"), front.params(stop=["world"])))
    assert [e.text for e in events if isinstance(e, Token)] == ["Hello", ", "]
    assert isinstance(events[-1], Done) and events[-1].stats.finish_reason == "stop"
    assert [m.role for m in fake.requests[-1].messages] == ["system", "user", "assistant", "user"]


def test_token_estimate_counts_images():
    chat_model, _ = remote()
    plain = chat_model.count_tokens(Message("user", "x" * 300))
    assert (
        plain >= 100
        and chat_model.count_tokens(Message.user("x" * 300, (Image.new("RGB", (8, 8)),))) > plain + 500
    )


def test_cancel_closes_the_stream():
    chat_model, fake = remote(FakeChatModel(chunks=["a"] * 50))
    request = ChatRequest([Message("user", "hi")], GenerationParams(max_new_tokens=50))
    stream = chat_model.stream(request)
    assert next(stream) == "a"
    request.cancel.set()
    rest = list(stream)
    assert len(rest) == 1 and rest[0].finish_reason == "cancelled"


def test_remote_api_key_is_sent_and_a_wrong_one_is_explained():
    tc, _ = engine_client()
    tc.headers["Authorization"] = "Bearer wrong"
    with pytest.raises(ModelUnavailable, match="refused our credentials.*--remote-api-key"):
        RemoteChatModel(URL, client=tc).discover()


# --------------------------------------------------------------------------- failures


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_a_clear_error_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    chat_model = RemoteChatModel(url, model="m", timeout_s=5)
    with pytest.raises(ModelUnavailable, match=f"cannot reach the chat server at {url}.*is it running"):
        run(chat_model)
    with pytest.raises(ModelUnavailable, match="cannot reach the speech server"):
        RemoteTranscriber(url).transcribe(b"RIFF")


def test_from_settings_starts_even_when_the_server_is_down():
    chat_model = RemoteChatModel.from_settings(
        Settings(backend="openai", base_url=f"http://127.0.0.1:{free_port()}/v1")
    )
    assert chat_model.info.name == "(remote model)"
    with pytest.raises(ModelUnavailable):
        run(chat_model)
    chat_model.close()  # also ends its background search for the server


@pytest.mark.parametrize(
    "status,error,words",
    [
        (500, GenerationFailed, "failed \\(HTTP 500\\): boom"),
        (503, ModelUnavailable, "busy or not ready"),
        (400, InvalidParams, "rejected the request: boom"),
        (404, ModelUnavailable, "--remote-model"),
    ],
)
def test_http_errors_are_translated(status, error, words):
    chat_model = scripted(lambda r: httpx.Response(status, json={"error": {"message": "boom"}}))
    with pytest.raises(error, match=words):
        run(chat_model)


def test_timeout_is_a_clear_error():
    def handler(request):
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(ModelUnavailable, match="did not answer within 7 s"):
        run(scripted(handler, timeout_s=7))


@pytest.mark.parametrize(
    "body,words",
    [
        (sse(delta("a"), {"error": {"message": "engine died"}}), "failed mid-reply: engine died"),
        (sse(delta("a")), "closed the stream before it finished"),
        (b"data: {not json\n\n", "malformed stream"),
    ],
)
def test_broken_streams_are_generation_failures(body, words):
    chat_model = scripted(lambda r: httpx.Response(200, content=body))
    with pytest.raises(GenerationFailed, match=words):
        run(chat_model)


def test_server_without_stream_options_falls_back_to_counting_chunks():
    bodies = []

    def handler(request):
        body = json.loads(request.content)
        bodies.append(body)
        if "stream_options" in body:
            return httpx.Response(
                400, json={"error": {"message": "Unrecognized request argument supplied: stream_options"}}
            )
        return httpx.Response(200, content=sse(delta("a"), delta("b"), delta(finish="stop"), b"[DONE]"))

    chat_model = scripted(handler)
    text, usage = run(chat_model)
    assert text == "ab" and usage.completion_tokens == 2 and usage.prompt_tokens > 0
    run(chat_model)
    assert ["stream_options" in b for b in bodies] == [True, False, False]  # remembered


# --------------------------------------------------------------------------- speech


def test_remote_transcriber_against_this_app():
    asr = FakeTranscriber()
    tc, _ = engine_client(transcriber=asr)
    transcriber = RemoteTranscriber.from_settings(Settings(asr_backend="openai", base_url=URL))
    transcriber._client = tc
    assert transcriber.name == "whisper-1"
    t = transcriber.transcribe(b"RIFFaudio", language="de")
    assert (t.text, t.language, t.duration_s, len(t.segments), t.segments[1].text) == (
        "hello there. general kenobi",
        "de",
        2.5,
        2,
        "general kenobi",
    )
    assert asr.calls[-1] == (b"RIFFaudio", "de")
    transcriber.transcribe(np.zeros(1600, dtype=np.float32))
    assert asr.calls[-1][0][:4] == b"RIFF"  # samples travel as a WAV file


def test_remote_transcriber_maps_language_names_and_limits_size(tmp_path):
    client = httpx.Client(
        base_url=URL + "/",
        transport=httpx.MockTransport(
            lambda r: httpx.Response(200, json={"text": " Hola ", "language": "spanish", "duration": 1.5})
        ),
    )
    t = RemoteTranscriber(URL, client=client, max_audio_bytes=10).transcribe(b"tiny")
    assert (t.text, t.language, t.segments) == ("Hola", "es", ())
    (tmp_path / "big.wav").write_bytes(b"x" * 11)
    with pytest.raises(Exception, match="larger than"):
        RemoteTranscriber(URL, client=client, max_audio_bytes=10).transcribe(tmp_path / "big.wav")


# =========================================================================== two real apps
# A front end (``--backend openai --asr-backend openai``) in front of a second app, the
# "engine", on a tiny random Idefics3 + Whisper base: the front holds no model of its own.

ENGINE_KEY, FRONT_KEY = "engine-key", "front-key"


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    from tests.server import free_port, start_app
    from tools.random_models import build

    model_dir = build("idefics3", tmp_path_factory.getbasetemp() / "tiny-idefics3")
    port = free_port()
    engine_args = [
        "--model",
        str(model_dir),
        "--device",
        "cpu",
        "--api-key",
        ENGINE_KEY,
        "--data-dir",
        str(tmp_path_factory.mktemp("engine")),
    ]
    front_args = [
        "--backend",
        "openai",
        "--base-url",
        f"http://127.0.0.1:{port}/v1",
        "--remote-api-key",
        ENGINE_KEY,
        "--asr-backend",
        "openai",
        "--device",
        "cpu",
        "--api-key",
        FRONT_KEY,
        "--data-dir",
        str(tmp_path_factory.mktemp("front")),
    ]
    with ThreadPoolExecutor(2) as pool:  # started together: the front finds the engine once it is up
        started = [pool.submit(start_app, engine_args, port), pool.submit(start_app, front_args)]
        running = []
        for future in started:
            try:
                running.append(future.result())
            except Exception:
                for app in running:
                    app.stop()
                raise
    state = {"engine": running[0], "front": running[1], "engine_args": engine_args, "port": port}
    yield state
    state["front"].stop()
    state["engine"].stop()


def openai_client(app, key):
    import openai

    return openai.OpenAI(api_key=key, base_url=app.url + "v1", max_retries=0, timeout=60)


def wait_for_model(client, timeout=30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        ids = [m.id for m in client.models.list().data]
        if "(remote model)" not in ids or time.monotonic() > deadline:
            return ids
        time.sleep(0.5)


def ask(client, model, text="Say something.", **kw):
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": text}],
        max_tokens=10,
        temperature=0,
        extra_body={"min_tokens": 10},
        **kw,
    )


@pytest.mark.slow
def test_front_end_serves_the_api_through_the_engine(apps):
    engine, front = openai_client(apps["engine"], ENGINE_KEY), openai_client(apps["front"], FRONT_KEY)
    engine_model = engine.models.list().data[0].id
    listed = wait_for_model(front)
    # (then the embedding model and the voice model of /v1/audio/speech, when they are on;
    # changed on purpose: the embedding model is new)
    assert listed[:2] == [engine_model, "whisper-1"] and len(listed) <= 4

    direct, through = ask(engine, engine_model), ask(front, engine_model)
    assert (
        through.choices[0].message.content == direct.choices[0].message.content
    )  # same prompt, same greedy words
    assert through.usage.prompt_tokens == direct.usage.prompt_tokens and through.usage.completion_tokens == 10

    from tests.test_api import photo_data_url

    content = [
        {"type": "text", "text": "Describe it."},
        {"type": "image_url", "image_url": {"url": photo_data_url()}},
    ]
    chunks = list(
        front.chat.completions.create(
            model=engine_model,
            messages=[{"role": "user", "content": content}],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"min_tokens": 8},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.prompt_tokens > through.usage.prompt_tokens  # the image reached the engine


@pytest.mark.slow
def test_front_end_speech_goes_to_the_engine(apps, tmp_path):
    from tests.speech_samples import have_tools, make_speech

    if not have_tools():
        pytest.skip("espeak-ng, sox and ffmpeg are needed to make speech")
    wav = make_speech("What is the capital of France?", tmp_path / "q.wav")
    with open(wav, "rb") as f:
        text = (
            openai_client(apps["front"], FRONT_KEY)
            .audio.transcriptions.create(model="whisper-1", file=f)
            .text
        )
    assert "capital" in text.lower() and "france" in text.lower(), text


@pytest.mark.slow
def test_engine_down_is_explained_and_the_front_recovers(apps):
    import openai
    from gradio_client import Client

    from tests.server import start_app

    front = openai_client(apps["front"], FRONT_KEY)
    model = wait_for_model(front)[0]
    page = Client(apps["front"].url, verbose=False)
    assert page.predict(
        {"text": "hello", "files": []}, [], api_name="/chat"
    )  # the page's endpoint, through the engine

    engine = apps["engine"]
    engine.proc.kill()  # a crash, not a polite shutdown
    engine.proc.wait(timeout=30)
    with pytest.raises(openai.APIStatusError) as caught:
        ask(front, model)
    error = caught.value
    assert error.status_code == 503 and error.code == "model_unavailable"
    assert (
        f"cannot reach the chat server at http://127.0.0.1:{apps['port']}/v1" in error.message
        and "is it running" in error.message
    )
    with pytest.raises(Exception, match="cannot reach the chat server"):
        page.predict({"text": "hello", "files": []}, [], api_name="/chat")
    assert [m.id for m in front.models.list().data][0] == model  # the front itself keeps answering

    apps["engine"] = start_app(apps["engine_args"], apps["port"])
    assert ask(front, model).usage.completion_tokens == 10
    assert page.predict({"text": "hello again", "files": []}, [], api_name="/chat")


# --------------------------------------------------------------------------- other servers' ways


def test_each_servers_way_of_saying_its_context_is_read():
    from assistant.models.remote import served_context

    assert served_context({"id": "m", "max_model_len": 8192}) == 8192  # vLLM, this app
    assert (
        served_context({"id": "m", "owned_by": "llamacpp", "meta": {"n_ctx": 4096, "n_ctx_train": 8192}})
        == 4096
    )
    assert served_context({"default_generation_settings": {"n_ctx": 2048}}) == 2048  # llama.cpp /props
    assert (
        served_context({"id": "m", "loaded_context_length": 16384, "max_context_length": 32768}) == 16384
    )  # LM Studio
    ollama = {"model_info": {"llama.context_length": 131072}, "parameters": "num_ctx 8192\nstop <|eot|>"}
    assert served_context(ollama) == 8192  # the runtime setting, not the model's maximum
    assert served_context({"id": "m"}) is None


def llama_cpp_like(n_ctx=4096, props=False, overflow_until=0):
    """A scripted llama-server: /models with meta.n_ctx (or only /props), and a context check."""
    seen = {"bodies": [], "overflows": 0}

    def handler(request):
        if request.url.path.endswith("/models"):
            card = {"id": "/models/smolvlm-Q8_0.gguf", "object": "model", "owned_by": "llamacpp"}
            if not props:
                card["meta"] = {"n_ctx": n_ctx}
            return httpx.Response(200, json={"object": "list", "data": [card]})
        if request.url.path.endswith("/props"):
            return httpx.Response(200, json={"default_generation_settings": {"n_ctx": n_ctx}})
        body = json.loads(request.content)
        seen["bodies"].append(body)
        if seen["overflows"] < overflow_until:
            seen["overflows"] += 1
            return httpx.Response(400, json={"error": {"code": 400, "type": "exceed_context_size_error",
                                  "message": f"request (7078 tokens) exceeds the available context size ({n_ctx} tokens)"}})  # fmt: skip
        return httpx.Response(200, content=sse(delta("ok"), delta(finish="stop"), b"[DONE]"))

    return handler, seen


def test_llama_cpp_context_and_model_name_are_understood():
    handler, _ = llama_cpp_like(n_ctx=4096)
    chat_model = RemoteChatModel(
        URL, client=httpx.Client(base_url=URL + "/", transport=httpx.MockTransport(handler))
    )
    chat_model.discover()
    assert chat_model.info.context_length == 4096  # not the 32768 fallback
    assert chat_model.info.name == "smolvlm-Q8_0.gguf"  # shown by file name, sent by its id
    handler, _ = llama_cpp_like(n_ctx=2048, props=True)
    chat_model = RemoteChatModel(
        URL, client=httpx.Client(base_url=URL + "/", transport=httpx.MockTransport(handler))
    )
    chat_model.discover()
    assert chat_model.info.context_length == 2048  # from /props
    handler, _ = llama_cpp_like(n_ctx=4096)
    given = RemoteChatModel(
        URL,
        context_length=1000,
        client=httpx.Client(base_url=URL + "/", transport=httpx.MockTransport(handler)),
    )
    given.discover()
    assert given.info.context_length == 1000  # --remote-context-length wins


def test_a_prompt_the_server_finds_too_long_is_trimmed_and_retried_once():
    handler, seen = llama_cpp_like(n_ctx=4096, overflow_until=1)
    chat_model = RemoteChatModel(
        URL, client=httpx.Client(base_url=URL + "/", transport=httpx.MockTransport(handler))
    )
    chat_model.discover()
    history = [Message("system", "be brief")]
    for i in range(30):
        history += [Message("user", f"question {i} " + "word " * 300), Message("assistant", "answer " * 200)]
    request = ChatRequest(
        [*history, Message("user", "the newest question")], GenerationParams(max_new_tokens=64)
    )
    items = list(chat_model.stream(request))
    assert "".join(i for i in items if isinstance(i, str)) == "ok"
    first, retry = seen["bodies"]
    assert len(retry["messages"]) < len(first["messages"])
    assert (
        retry["messages"][0]["content"] == "be brief"
        and retry["messages"][-1]["content"] == "the newest question"
    )

    handler, seen = llama_cpp_like(n_ctx=4096, overflow_until=5)
    stubborn = RemoteChatModel(
        URL, client=httpx.Client(base_url=URL + "/", transport=httpx.MockTransport(handler))
    )
    stubborn.discover()
    with pytest.raises(InvalidParams, match="context size"):
        list(stubborn.stream(request))
    assert len(seen["bodies"]) == 2  # retried once, then the server's reason is reported


def test_fixed_length_replies_on_llama_cpp_use_ignore_eos(caplog):
    handler, seen = llama_cpp_like()
    chat_model = RemoteChatModel(
        URL, client=httpx.Client(base_url=URL + "/", transport=httpx.MockTransport(handler))
    )
    chat_model.discover()
    list(
        chat_model.stream(
            ChatRequest([Message("user", "hi")], GenerationParams(max_new_tokens=8, min_new_tokens=8))
        )
    )
    assert seen["bodies"][-1]["ignore_eos"] is True and seen["bodies"][-1]["min_tokens"] == 8
    with caplog.at_level("WARNING"):
        list(
            chat_model.stream(
                ChatRequest([Message("user", "hi")], GenerationParams(max_new_tokens=8, min_new_tokens=4))
            )
        )
    assert "ignores min_tokens" in caplog.text  # the scripted server stopped after one token


def served_by(owned_by: str, reply: str) -> tuple[RemoteChatModel, list[dict]]:
    """A remote model on a scripted server whose /models card says ``owned_by``, and the
    request bodies it is sent."""
    bodies: list[dict] = []

    def handler(request):
        if request.url.path.endswith("/models"):
            card = {"id": "m", "object": "model", "owned_by": owned_by, "max_model_len": 4096}
            return httpx.Response(200, json={"object": "list", "data": [card]})
        bodies.append(json.loads(request.content))
        return httpx.Response(200, content=sse(delta(reply), delta(finish="stop"), b"[DONE]"))

    chat_model = RemoteChatModel(
        URL, client=httpx.Client(base_url=URL + "/", transport=httpx.MockTransport(handler))
    )
    chat_model.discover()
    return chat_model, bodies


@pytest.mark.parametrize("owned_by, told", [("vllm", True), ("llamacpp", False)])
def test_continue_asks_vllm_to_carry_on_the_last_reply(owned_by, told):
    """Continue sends the unfinished reply last; vLLM is told to carry it on (llama.cpp does so
    by itself when the last message is the assistant's), a new reply is never told so."""
    chat_model, bodies = served_by(owned_by, " more")
    question = Message("user", "Tell me a story")
    list(chat_model.stream(ChatRequest([question, Message("assistant", "Once upon")])))
    list(chat_model.stream(ChatRequest([question])))
    carry_on, fresh = bodies
    assert carry_on["messages"][-1] == {"role": "assistant", "content": "Once upon"}
    assert carry_on.get("continue_final_message", False) is told
    assert carry_on.get("add_generation_prompt", True) is not told
    assert "continue_final_message" not in fresh and "add_generation_prompt" not in fresh


@pytest.mark.parametrize(
    "owned_by, salted", [("vllm", True), ("multimodal-assistant", True), ("llamacpp", False)]
)
def test_vllm_gets_one_cache_salt_per_user(owned_by, salted):
    """vLLM shares its prefix cache across requests unless each carries a cache_salt: each user
    gets their own (a keyed hash, never the name), so no user can time another's prompt."""
    chat_model, bodies = served_by(owned_by, "ok")
    for user in ("alice", "bob", "alice"):
        list(chat_model.stream(ChatRequest([Message("user", "hi")], user=user)))
    salts = [body.get("cache_salt") for body in bodies]
    if not salted:
        assert salts == [None, None, None]
        return
    assert salts[0] == salts[2] != salts[1] and all(salts)
    assert "alice" not in json.dumps(bodies) and "bob" not in json.dumps(bodies)


def test_a_cache_salt_keeps_one_keys_callers_apart(tmp_path):
    """A front end that serves many people through one API key salts each one's requests."""
    client, fake = engine_client()
    body = {"model": fake.info.name, "messages": [{"role": "user", "content": "hi"}]}
    for salt in ("a" * 32, "b" * 32, None):
        assert client.post("chat/completions", json={**body, "cache_salt": salt}).status_code == 200
    users = [request.user for request in fake.requests]
    assert len(set(users)) == 3 and all(u.startswith(":api-key") for u in users)
    empty = client.post("chat/completions", json={**body, "cache_salt": ""})
    assert empty.status_code == 400 and "cache_salt" in empty.text
