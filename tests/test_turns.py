"""End of turn (assistant.speech.turns) on real models and spoken audio, timed in audio seconds.

The clips are espeak-ng's (deterministic), with silences put in by numpy; smart-turn v3.2 is the
real model from the pipecat-ai wheel, Silero the one inside faster-whisper.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from assistant.errors import MediaError, ModelUnavailable
from assistant.speech import turns
from assistant.speech.turns import SAMPLING_RATE, TurnDetector, TurnEvent, TurnSettings
from tests.speech_samples import have_tools, speech_samples

pytestmark = [
    pytest.mark.skipif(not have_tools(), reason="needs espeak-ng, sox and ffmpeg"),
    pytest.mark.skipif(turns.smart_turn_file() is None, reason="needs pipecat-ai (requirements-nodeps.txt)"),
]

LEAD = 0.5  # seconds of silence before the speech in every clip


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLING_RATE), np.float32)


def trimmed(audio: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > 0.01 * np.abs(audio).max())
    return audio[loud[0] : loud[-1] + 1]


@pytest.fixture(scope="module")
def complete() -> tuple[np.ndarray, float]:
    """A whole request, then 3 s of silence; and where its speech ends."""
    speech = trimmed(speech_samples("Set a timer for ten minutes."))
    return np.concatenate([silence(LEAD), speech, silence(3)]), LEAD + len(speech) / SAMPLING_RATE


@pytest.fixture(scope="module")
def paused() -> tuple[np.ndarray, float]:
    """ "I would like to know", 600 ms of silence, "what the capital of France is"; and where
    the speech after the pause starts."""
    first = trimmed(speech_samples("I would like to know"))
    rest = trimmed(speech_samples("what the capital of France is."))
    resumes = LEAD + len(first) / SAMPLING_RATE + 0.6
    return np.concatenate([silence(LEAD), first, silence(0.6), rest, silence(3)]), resumes


def run(audio: np.ndarray, chunk: int = 320, settings: TurnSettings | None = None) -> list[TurnEvent]:
    detector = TurnDetector(settings)
    return [
        event
        for start in range(0, len(audio), chunk)
        for event in detector.feed(audio[start : start + chunk])
    ]


def test_a_complete_request_ends_when_smart_turn_says_so(complete):
    audio, speech_end = complete
    events = run(audio)
    assert [e.kind for e in events] == ["speech_started", "turn_ended"]
    started, ended = events
    assert LEAD - 0.1 < started.at < LEAD + 0.2
    assert ended.reason == "complete" and ended.asked == 1 and ended.probability > 0.5
    # 200 ms of silence (in 32-ms VAD windows) and no more: the model answered at once
    assert 0.15 < ended.at - speech_end < 0.3
    assert ended.model_ms > 0


def test_a_pause_after_an_incomplete_phrase_does_not_end_the_turn(paused):
    audio, resumes = paused
    events = run(audio)
    assert [e.kind for e in events] == ["speech_started", "turn_ended"]  # one turn, not two
    ended = events[1]
    assert ended.at > resumes + 1.0  # ended after the second part, not in the pause
    assert ended.asked >= 2  # asked in the pause (incomplete), and again after the speech


def test_the_cap_ends_a_turn_smart_turn_keeps_calling_incomplete():
    speech = trimmed(speech_samples("I would like to know"))
    audio = np.concatenate([silence(LEAD), speech, silence(4)])
    events = run(audio)
    assert [e.kind for e in events] == ["speech_started", "turn_ended"]
    ended = events[1]
    assert ended.reason == "cap" and ended.probability < 0.5 and ended.asked == 1
    assert 1.9 < ended.at - (LEAD + len(speech) / SAMPLING_RATE) < 2.15
    shorter = run(audio, settings=TurnSettings(max_wait_s=1.0))[1]
    assert shorter.reason == "cap" and 0.9 < shorter.wait < 1.1


def test_silence_and_noise_start_no_turn():
    rng = np.random.default_rng(0)
    assert run(silence(5)) == []
    hiss = (0.01 * rng.standard_normal(10 * SAMPLING_RATE)).astype(np.float32)  # -40 dBFS
    assert run(hiss) == []
    # a click (20 ms at full scale) is shorter than min_speech_s
    click = np.concatenate([silence(1), np.tile([0.9, -0.9], 160).astype(np.float32), silence(1)])
    assert run(click) == []


def test_memory_is_bounded_to_eight_seconds_of_a_long_turn():
    sentence = trimmed(speech_samples("Please describe the picture I just sent you, and then tell me more."))
    detector = TurnDetector()
    for _ in range(int(20 * SAMPLING_RATE / len(sentence)) + 1):  # 20 s with no pause
        detector.feed(sentence)
        assert len(detector._tail) <= 8 * SAMPLING_RATE
    assert detector.in_turn and len(detector._tail) == 8 * SAMPLING_RATE
    # between turns only the pre-roll is kept
    detector.reset()
    detector.feed(silence(3))
    assert len(detector._tail) <= 0.5 * SAMPLING_RATE


@pytest.mark.parametrize("chunk", [160, 512, 1000, 4800, 10**7])
def test_chunk_sizes_do_not_change_the_outcome(paused, complete, chunk):
    for audio, _ in (paused, complete):
        expected = [(e.kind, e.at, e.reason, e.speech_end, e.probability, e.asked) for e in run(audio, 320)]
        got = [(e.kind, e.at, e.reason, e.speech_end, e.probability, e.asked) for e in run(audio, chunk)]
        assert got == expected


def test_int16_input_is_heard_as_float(complete):
    audio, _ = complete
    as_int16 = (audio * 32767).astype(np.int16)
    assert [(e.kind, e.reason) for e in run(as_int16)] == [(e.kind, e.reason) for e in run(audio)]


def test_features_match_pipecats_own_code(paused):
    """Our input to smart-turn is faster-whisper's extractor on the normalised audio; pipecat
    computes it with vendored numpy code (numpy only, so loadable alone)."""
    spec = importlib.util.find_spec("pipecat")
    assert spec and spec.submodule_search_locations
    path = f"{spec.submodule_search_locations[0]}/audio/turn/smart_turn/_whisper_features.py"
    loader = importlib.util.spec_from_file_location("pipecat_whisper_features", path)
    assert loader and loader.loader
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    audio = np.pad(paused[0][: 5 * SAMPLING_RATE], (3 * SAMPLING_RATE, 0))
    theirs = module.compute_whisper_log_mel_features(audio, do_normalize=True)
    models = turns._Models.get(None)
    normalised = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
    ours = models._features(normalised.astype(np.float32), padding=0)
    assert ours.shape == theirs.shape == (80, 800)
    assert np.abs(ours - theirs).max() < 1e-4


def test_bad_input_and_a_missing_model_are_named(tmp_path):
    detector = TurnDetector()
    with pytest.raises(MediaError, match="mono"):
        detector.feed(np.zeros((2, 320), np.float32))
    with pytest.raises(MediaError, match="int16"):
        detector.feed(np.zeros(320, np.int32))
    with pytest.raises(MediaError, match="not numbers"):
        detector.feed(np.full(320, np.nan, np.float32))
    with pytest.raises(ModelUnavailable, match="pip install --no-deps"):
        TurnDetector(model_path=tmp_path / "absent.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ModelUnavailable, match="broken.onnx"):
        TurnDetector(model_path=broken)
    with pytest.raises(ValueError):
        TurnSettings(silence_s=3.0, max_wait_s=2.0)
