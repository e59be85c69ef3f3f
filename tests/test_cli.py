"""The CLI contract: streamed reply / transcript on stdout, --json last line, and for any bad
input or unavailable model exit code 2 with one `error: …` line on stderr, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.speech_samples import make_speech
from tools.random_models import build

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, timeout=240):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "assistant", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def assert_clean_error(result, *words):
    assert result.returncode == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build("idefics3", tmp_path_factory.getbasetemp() / "tiny-idefics3")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "photo.jpg"
    Image.new("RGB", (320, 240), (30, 120, 200)).save(path)
    return path


def test_chat_streams_and_ends_with_json(tiny_model, photo):
    result = run_cli(
        "chat",
        "--model",
        tiny_model,
        "--image",
        photo,
        "--max-new-tokens",
        "8",
        "--temperature",
        "0",
        "--json",
        "What is in this photo?",
    )
    assert result.returncode == 0, result.stderr
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"reply", "tokens", "ttft_s", "tokens_per_s"} <= last.keys()
    assert 1 <= last["tokens"] <= 8 and last["ttft_s"] > 0
    assert result.stdout.startswith(last["reply"])  # the reply was streamed before the JSON line


def test_chat_with_audio_reports_transcript(tiny_model, tmp_path):
    audio = make_speech("What is the weather like today?", tmp_path / "q.webm", fmt="webm")
    result = run_cli("chat", "--model", tiny_model, "--audio", audio, "--max-new-tokens", "4", "--json")
    assert result.returncode == 0, result.stderr
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert "weather" in last["transcript"].lower()


def test_transcribe_webm_offline_with_embedded_weights(tmp_path):
    audio = make_speech("Please turn on the kitchen lights.", tmp_path / "cmd.webm", fmt="webm")
    result = run_cli("transcribe", audio, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"text", "language", "duration_s", "elapsed_s"} <= data.keys()
    assert "kitchen" in data["text"].lower() and data["language"] == "en"
    plain = run_cli("transcribe", audio, "--language", "en")
    assert "kitchen light" in plain.stdout.lower()


@pytest.mark.parametrize(
    "args,words",
    [
        (["transcribe", "/no/such/file.wav"], ["no such file"]),
        (["chat", "--model", "/no/such/model/dir", "hi"], ["/no/such/model/dir"]),
        (["chat", "--model", "nobody/not-a-model", "hi"], ["nobody/not-a-model", "hf download"]),
        (["chat", "--temperature", "abc", "hi"], ["temperature"]),
        (["chat", "--image", "/no/such.jpg", "hi"], ["no such file"]),
        (["bogus-command"], ["invalid choice"]),
    ],
)
def test_bad_input_without_model_exits_2(args, words):
    assert_clean_error(run_cli(*args), *words)


def test_bad_files_exit_2(tiny_model, tmp_path):
    page = tmp_path / "page.jpg"
    page.write_text("<html><body>not an image</body></html>")
    assert_clean_error(run_cli("chat", "--model", tiny_model, "--image", page, "hi"), "page.jpg")
    assert_clean_error(run_cli("transcribe", page), "audio")
    assert_clean_error(run_cli("chat", "--model", tiny_model, "--temperature", "5", "hi"), "temperature")
    assert_clean_error(
        run_cli("chat", "--model", tiny_model, "--system", "no-such-persona", "hi"), "system prompt"
    )
