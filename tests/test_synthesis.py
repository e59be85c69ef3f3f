"""Text to speech: the embedded Piper voice, heard back by our own Whisper; speaking a reply while
it streams (first audio soon after the first sentence, cancel at once); the remote backend."""

from __future__ import annotations

import json
import threading
import time

import httpx
import numpy as np
import pytest

from assistant.errors import InvalidParams, ModelUnavailable
from assistant.speech import EMBEDDED_VOICE, PiperSynthesizer, SpeechChunk, SpokenReply
from assistant.speech.remote import RemoteSynthesizer
from assistant.speech.speakable import split
from assistant.speech.voices import embedded_voice, find_voice
from tests.test_speech import wer

pytestmark = pytest.mark.slow

TEXT = (
    "The weather will be sunny tomorrow, with a light breeze from the west. "
    "Take a hat if you go outside. Paris is the capital of France. "
    "It is famous for the Eiffel Tower and its museums. To make tea, boil some water, "
    "pour it over the leaves, and wait three minutes before drinking."
)
# Word error rate of the round trip (Piper joe-medium -> Whisper base, int8, beam 5), measured
# here on TEXT (48 words): 0.00-0.05 at speed 1 over 8 runs ("a light" heard as "the light"),
# 0.02-0.08 at speed 1.5 over 7 runs ("Paris" once "Harris", "boil" once "well"). Piper's VITS
# adds random noise, so runs differ. The bounds are the worst measured plus about two to five
# words; garbled, truncated or silent audio scores near 1.0 and fails.
MAX_WER = 0.12
MAX_WER_FAST = 0.20
# The goal is first audio within 300 ms of the first sentence (measured by `python -m bench
# --only voice`: 80-140 ms alone on 2 cores). Under a loaded test machine (load average 6 on 2
# cores seen here) one synthesis can take longer, so the test holds a looser bound that still
# fails when speech waits for the whole reply (48 words at 30 tokens/s: 1.6 s).
FIRST_AUDIO_BOUND_S = 1.0


def to_16k(chunks: list[SpeechChunk]) -> np.ndarray:
    audio = np.concatenate([c.samples for c in chunks])
    rate = chunks[0].sample_rate
    n = int(len(audio) * 16000 / rate)
    return np.interp(np.linspace(0, len(audio) - 1, n), np.arange(len(audio)), audio).astype(np.float32)


@pytest.fixture(scope="module")
def voice() -> PiperSynthesizer:
    return PiperSynthesizer()  # the embedded default, as the app loads it


@pytest.fixture(scope="module")
def transcriber():
    from assistant.speech import WhisperTranscriber as Transcriber

    return Transcriber()


def test_the_embedded_voice_ships_with_the_app(voice):
    files = embedded_voice()
    assert files.model.is_file() and files.config.is_file()
    assert voice.voices[0].name == EMBEDDED_VOICE
    assert voice.voices[0].language == "en" and voice.voices[0].sample_rate == 22050
    assert "embedded" in voice.name


def test_several_sentences_come_back_as_pieces_and_whisper_understands_them(voice, transcriber):
    started = time.perf_counter()
    chunks = list(voice.speak(TEXT))
    elapsed = time.perf_counter() - started
    assert [c.text for c in chunks] == split(TEXT)  # one chunk per sentence, in order
    seconds = sum(c.seconds for c in chunks)
    assert 12 < seconds < 30  # 48 words at a normal pace
    assert elapsed / seconds < 0.5  # real-time factor: ~0.05 measured on 2 shared cores
    heard = transcriber.transcribe(to_16k(chunks), language="en")
    assert wer(TEXT, heard.text, "en") <= MAX_WER, heard.text


def test_speed_changes_the_pace_and_stays_understood(voice, transcriber):
    normal = sum(c.seconds for c in voice.speak(TEXT))
    fast_chunks = list(voice.speak(TEXT, speed=1.5))
    fast = sum(c.seconds for c in fast_chunks)
    assert 0.55 < fast / normal < 0.8
    heard = transcriber.transcribe(to_16k(fast_chunks), language="en")
    assert wer(TEXT, heard.text, "en") <= MAX_WER_FAST, heard.text


def test_markdown_is_not_spoken_as_symbols(voice, transcriber):
    text = "## The answer\n**The capital of France** is a large city.\n```\nx = 1\n```\n| a | b |"
    chunks = list(voice.speak(text))
    assert [c.text for c in chunks] == ["The answer", "The capital of France is a large city."]
    heard = transcriber.transcribe(to_16k(chunks), language="en").text.lower()
    assert "capital of france" in heard and "large city" in heard, heard
    assert "asterisk" not in heard and "equals" not in heard and "hash" not in heard, heard


@pytest.mark.parametrize(("kwargs", "param"), [({"voice": "nobody"}, "voice"), ({"speed": 9.0}, "speed")])
def test_unknown_voice_or_speed_is_refused(voice, kwargs, param):
    with pytest.raises(InvalidParams) as caught:
        list(voice.speak("Hello.", **kwargs))
    assert caught.value.param == param


def test_openai_voice_names_read_with_the_default_voice(voice):
    assert voice.resolve("alloy") == voice.voices[0]


def with_second_voice(tmp_path, code: str) -> PiperSynthesizer:
    """The embedded voice and a copy of it that says it reads ``code`` (voice ``<code>-test``)."""
    files = embedded_voice()
    (tmp_path / f"{code}-test.onnx").symlink_to(files.model)
    config = json.loads(files.config.read_text())
    config["language"] = {"code": code}
    (tmp_path / f"{code}-test.onnx.json").write_text(json.dumps(config))
    return PiperSynthesizer(("embedded", str(tmp_path / f"{code}-test.onnx")))


def test_a_voice_file_and_its_language(tmp_path):
    two = with_second_voice(tmp_path, "es_ES")
    assert [v.name for v in two.voices] == [EMBEDDED_VOICE, "es_ES-test"]
    assert two.voice_for("es").name == "es_ES-test"
    assert two.voice_for("en").name == EMBEDDED_VOICE
    assert two.voice_for("fr") is None
    assert two.voice_for(None).name == EMBEDDED_VOICE


def test_a_missing_voice_file_says_what_to_do(tmp_path):
    with pytest.raises(ModelUnavailable, match="no such file"):
        find_voice(str(tmp_path / "nothing.onnx"))
    (tmp_path / "lonely.onnx").write_bytes(b"x")
    with pytest.raises(ModelUnavailable, match="lonely.onnx.json"):
        find_voice(str(tmp_path / "lonely.onnx"))


# --- speaking a reply while it streams -----------------------------------------------------


def stream_tokens(spoken: SpokenReply, text: str, delay_s: float) -> None:
    for word in text.split(" "):
        spoken.feed(word + " ")
        time.sleep(delay_s)
    spoken.finish()


def test_a_streamed_reply_is_heard_sentence_by_sentence_from_its_first_sentence(voice):
    spoken = SpokenReply(voice)
    feeder = threading.Thread(target=stream_tokens, args=(spoken, TEXT, 0.03))  # ~30 tokens/s
    feeder.start()
    chunks = list(spoken)
    feeder.join()
    assert [c.text for c in chunks] == split(TEXT)
    assert spoken.first_piece_at is not None and spoken.first_audio_at is not None
    first_audio = spoken.first_audio_at - spoken.first_piece_at
    assert first_audio < FIRST_AUDIO_BOUND_S, f"first audio {first_audio * 1000:.0f} ms after the sentence"


def test_cancel_stops_the_speech_at_once(voice):
    spoken = SpokenReply(voice)
    spoken.feed(TEXT)
    got = iter(spoken)
    next(got)
    started = time.perf_counter()
    spoken.cancel()
    assert list(got) == []
    assert time.perf_counter() - started < 0.2
    spoken.feed("More words. And more.")  # after a cancel: ignored
    assert list(spoken) == []


def test_a_reply_in_a_language_without_a_voice_is_not_read_in_english(voice):
    spoken = SpokenReply(voice)
    stream_tokens(spoken, "El tiempo es bueno hoy. Mañana va a llover en la ciudad.", 0)
    assert list(spoken) == []
    assert spoken.missing_language == "es"


def test_speech_nobody_listens_to_is_dropped_after_the_first_sentence(voice):
    spoken = SpokenReply(voice, language="en", listener_timeout_s=0.3)
    spoken.feed(TEXT)
    spoken.finish()
    deadline = time.monotonic() + 10
    while not spoken.cancelled.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spoken.cancelled.is_set() and spoken.first_audio_at is not None
    assert list(spoken) == []


def test_a_listener_gets_it_all(voice):
    spoken = SpokenReply(voice, language="en", listener_timeout_s=5)
    spoken.feed(TEXT)
    spoken.finish()
    assert [c.text for c in spoken] == split(TEXT)


def test_the_language_heard_picks_the_voice(voice):
    spoken = SpokenReply(voice, language="en")
    spoken.feed("Hi! ")
    spoken.finish()
    assert [c.text for c in spoken] == ["Hi!"]
    assert spoken.voice().name == EMBEDDED_VOICE


def test_a_streamed_reply_is_heard_from_its_first_clause(voice):
    text = "Sure, the capital of France is Paris, which sits on the Seine. It has about two million people."
    spoken = SpokenReply(voice)
    feeder = threading.Thread(target=stream_tokens, args=(spoken, text, 0.03))
    feeder.start()
    chunks = list(spoken)
    feeder.join()
    assert [c.text for c in chunks] == [
        "Sure, the capital of France is",  # the first piece: six words, not the whole sentence
        "Paris, which sits on the Seine.",
        "It has about two million people.",
    ]
    assert spoken.voice().name == EMBEDDED_VOICE  # six words were enough to tell English


def test_a_short_first_piece_that_cannot_tell_the_language_waits_for_more(tmp_path):
    spoken = SpokenReply(with_second_voice(tmp_path, "fr_FR"))
    # "Bien sûr, la capitale de la" (the first piece) has as many Spanish words as French ones.
    spoken.feed("Bien sûr, la capitale de la ")
    assert not spoken.decided
    spoken.feed("France est Paris, et elle est très belle. Voilà.")
    spoken.finish()
    assert spoken.voice(timeout=5).name == "fr_FR-test"
    assert [c.text for c in spoken][0] == "Bien sûr, la capitale de la"


# --- the remote backend --------------------------------------------------------------------


def test_remote_backend_reads_pcm_from_an_openai_compatible_server():
    asked = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(json.loads(request.content))
        samples = (np.sin(np.arange(2400) / 10) * 10000).astype("<i2").tobytes()
        return httpx.Response(200, content=samples[:1001] + samples[1001:])

    client = httpx.Client(base_url="http://speech.test/v1", transport=httpx.MockTransport(handler))
    remote = RemoteSynthesizer("http://speech.test/v1", model="kokoro", voice="af_bella", client=client)
    chunks = list(remote.speak("One sentence. And another one!", speed=1.25))
    assert [a["input"] for a in asked] == ["One sentence.", "And another one!"]
    assert asked[0] == {
        "model": "kokoro",
        "input": "One sentence.",
        "voice": "af_bella",
        "response_format": "pcm",
        "speed": 1.25,
    }
    assert sum(len(c.samples) for c in chunks) == 2 * 2400
    assert all(c.sample_rate == 24000 for c in chunks)


def test_remote_backend_errors_are_typed():
    client = httpx.Client(
        base_url="http://speech.test/v1",
        transport=httpx.MockTransport(
            lambda r: httpx.Response(400, json={"error": {"message": "bad voice"}})
        ),
    )
    remote = RemoteSynthesizer("http://speech.test/v1", client=client)
    with pytest.raises(InvalidParams, match="bad voice"):
        list(remote.speak("Hello."))


def test_a_voice_name_is_taken_from_the_cache_or_downloaded(tmp_path, monkeypatch):
    import piper.download_voices

    asked = []

    def offline(name, folder):
        asked.append(name)
        raise OSError("the hub is unreachable")

    monkeypatch.setattr(piper.download_voices, "download_voice", offline)
    with pytest.raises(ModelUnavailable, match="could not be downloaded") as caught:
        find_voice("de_DE-thorsten-medium", tmp_path)
    assert "--tts-voice" in str(caught.value) and asked == ["de_DE-thorsten-medium"]
    folder = tmp_path / "piper-voices"  # already there (downloaded before): no download at all
    files = embedded_voice()
    (folder / "en_US-cached.onnx").symlink_to(files.model)
    (folder / "en_US-cached.onnx.json").symlink_to(files.config)
    found = find_voice("en_US-cached", tmp_path)
    assert found.name == "en_US-cached" and found.model == folder / "en_US-cached.onnx"
    assert asked == ["de_DE-thorsten-medium"]
