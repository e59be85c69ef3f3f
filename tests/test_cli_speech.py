"""``python -m assistant speak`` and ``chat --speak``: files any player reads, heard back by
Whisper; bad output names refused with the CLI's one-line error."""

from __future__ import annotations

import json
import wave

import av
import pytest

from tests.test_cli import assert_clean_error, run_cli, tiny_model  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow
TEXT = "Good morning! The train to Berlin leaves at nine. Please be on time."


@pytest.fixture(scope="module")
def transcriber():
    from assistant.speech import WhisperTranscriber as Transcriber

    return Transcriber()


def test_speak_writes_a_wav_whisper_understands(tmp_path, transcriber):
    out = tmp_path / "out.wav"
    result = run_cli("speak", TEXT, "-o", out, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["output"] == str(out) and info["voice"] == "en_US-joe-medium"
    assert 3 < info["seconds"] < 10 and info["rtf"] < 0.5
    with wave.open(str(out)) as w:  # sizes in the header are right: a plain reader takes it
        assert w.getframerate() == 24000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        assert abs(w.getnframes() / 24000 - info["seconds"]) < 0.1
    heard = transcriber.transcribe(out, language="en").text.lower()
    assert "berlin" in heard and "train" in heard and "time" in heard, heard


@pytest.mark.parametrize("suffix", [".mp3", ".flac", ".opus"])
def test_speak_other_formats(tmp_path, suffix):
    out = tmp_path / f"out{suffix}"
    result = run_cli("speak", "Hello there. How are you?", "-o", out, "--tts-speed", "1.2")
    assert result.returncode == 0, result.stderr
    with av.open(str(out)) as container:
        stream = container.streams.audio[0]
        seconds = sum(f.samples for f in container.decode(stream)) / stream.rate
    assert 0.8 < seconds < 4


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("speak", "Hello.", "-o", "out.xyz"), ("must end in",)),
        (("speak", "Hello.", "-o", "/no/such/dir/out.wav"), ("no such directory",)),
        (("speak", "   ", "-o", "out.wav"), ("empty",)),
        (("speak", "```\ncode only\n```", "-o", "{tmp}/code.wav"), ("no words",)),
        (("speak", "Hello.", "-o", "{tmp}/x.wav", "--tts-voice", "/no/voice.onnx"), ("no such file",)),
        (("speak", "Hello.", "-o", "{tmp}/x.wav", "--tts-speed", "9"), ("speed",)),
        (("speak", "Hello."), ("-o",)),
    ],
)
def test_speak_errors_are_one_line(tmp_path, args, words):
    result = run_cli(*[a.format(tmp=tmp_path) for a in args])
    assert_clean_error(result, *words)


def test_chat_speak_writes_the_reply_as_it_streams(tiny_model, tmp_path):  # noqa: F811
    out = tmp_path / "reply.wav"
    result = run_cli(
        "chat", "--model", tiny_model, "--max-new-tokens", "24", "--seed", "1", "--speak", "-o", out, "Hello"
    )
    assert result.returncode == 0, result.stderr
    # the tiny random model's words are English-looking gibberish: read by the English voice
    assert "spoke" in result.stderr, result.stderr
    with wave.open(str(out)) as w:
        assert w.getnframes() > 24000 * 0.5


def test_chat_speak_needs_an_output(tiny_model):  # noqa: F811
    assert_clean_error(run_cli("chat", "--model", tiny_model, "--speak", "Hello"), "-o")
