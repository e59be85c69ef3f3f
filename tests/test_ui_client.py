"""The page's ``/chat`` endpoint driven with gradio_client against ``app.py`` on a tiny model.

The tiny model has random weights, so its words mean nothing; what it does do is answer
the same prompt the same way when sampling is greedy. Tests use that to show what reached
the model (a transcript, an image in the history) and that nobody's turn leaked into another's.
"""

from __future__ import annotations

import os
import threading

import pytest
from gradio_client import Client, handle_file

from tests import speech_samples
from tests.server import start_app, tiny_model

pytestmark = pytest.mark.slow

GREEDY = {"temperature": 0, "max_new_tokens": 24}
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    running = start_app(["--model", str(tiny_model()), "--data-dir", str(data), "--max-file-size-mb", "1"])
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(app):
    return Client(app.url, verbose=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("media")
    paths = {}
    for name in ("astronaut", "coffee", "chelsea"):
        paths[name] = str(folder / f"{name}.jpg")
        Image.fromarray(getattr(data, name)()).save(paths[name], quality=85)
    paths["speech"] = str(speech_samples.make_speech(QUESTION, folder / "question.wav"))
    paths["text_as_jpg"] = str(folder / "holiday.jpg")
    with open(paths["text_as_jpg"], "w") as f:
        f.write("these are my notes, not a photo\n")
    paths["broken_ogg"] = str(folder / "voice.ogg")
    with open(paths["broken_ogg"], "wb") as f:
        f.write(b"OggS" + bytes(range(256)) * 12)
    paths["huge"] = str(folder / "huge.png")
    with open(paths["huge"], "wb") as f:  # over the app's 1 MB upload limit
        f.write(b"\x89PNG\r\n\x1a\n" + os.urandom(1_300_000))
    return paths


def ask(client, text="", files=(), history=(), options=GREEDY):
    return client.predict(
        {"text": text, "files": [handle_file(f) for f in files]}, list(history), options, api_name="/chat"
    )


def user(text, *images):
    return {
        "role": "user",
        "content": [
            *({"type": "file", "file": handle_file(p)} for p in images),
            {"type": "text", "text": text},
        ],
    }


def test_text(client):
    reply = client.predict(
        {"text": "Hello there!", "files": []}, [], api_name="/chat"
    )  # the contract's own shape
    assert isinstance(reply, str) and reply.strip()


def test_text_and_image(client, files):
    with_photo = ask(client, "What is in this photo?", [files["astronaut"]])
    assert with_photo.strip()
    assert with_photo != ask(client, "What is in this photo?")  # the photo reached the model


def test_two_images_across_two_turns(client, files):
    first = ask(client, "What is this?", [files["coffee"]])
    second = ask(
        client,
        "And this one?",
        [files["chelsea"]],
        history=[user("What is this?", files["coffee"]), {"role": "assistant", "content": first}],
    )
    assert second.strip()
    # The first turn's photo is still in context: without it the greedy answer changes.
    without_first_photo = ask(
        client,
        "And this one?",
        [files["chelsea"]],
        history=[user("What is this?"), {"role": "assistant", "content": first}],
    )
    assert second != without_first_photo


def test_audio_only_message_uses_the_transcript(client, files):
    spoken = ask(client, files=[files["speech"]])
    assert spoken == ask(client, QUESTION)  # Whisper heard exactly the question
    assert spoken != ask(client, "What is the capital of Spain?")


def test_streaming_with_submit(client):
    job = client.submit(
        {"text": "Tell me a story", "files": []},
        [],
        {"temperature": 0, "max_new_tokens": 64},
        api_name="/chat",
    )
    final = job.result(timeout=120)
    updates = job.outputs()
    assert len(updates) > 1 and updates[-1] == final
    assert all(
        later.startswith(earlier) for earlier, later in zip(updates, updates[1:])
    )  # the reply so far, growing


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("text_as_jpg", "holiday.jpg is not a supported image"),
        ("broken_ogg", "voice.ogg is truncated or corrupt"),
    ],
)
def test_bad_file_is_rejected_and_the_app_keeps_serving(client, files, name, expected):
    with pytest.raises(Exception, match=expected):
        ask(client, "Look at this", [files[name]])
    assert ask(client, "Still there?").strip()


def test_too_large_file_is_rejected(client, files):
    with pytest.raises(Exception, match="(?i)too large|exceeds|maximum|size"):
        ask(client, "Look", [files["huge"]])
    assert ask(client, "Still there?").strip()


def test_bad_history_and_options_are_refused(client):
    # A path the caller did not upload is refused before Gradio reads it (web.payloads).
    with pytest.raises(Exception, match="403"):
        ask(client, "hi", history=[{"role": "user", "content": {"path": "/etc/passwd"}}])
    with pytest.raises(Exception, match="unknown option 'temprature'"):
        ask(client, "hi", options={"temprature": 0})


def test_two_clients_at_once_without_cross_talk(app, client, files):
    turns = {"a": ("Describe the photo", [files["coffee"]]), "b": ("Write a poem about rain", [])}
    alone = {k: ask(client, text, f) for k, (text, f) in turns.items()}
    assert alone["a"] != alone["b"]
    together, errors = {}, []

    def run(key):
        try:
            other = Client(app.url, verbose=False)
            text, f = turns[key]
            together[key] = ask(other, text, f)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in turns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert together == alone
