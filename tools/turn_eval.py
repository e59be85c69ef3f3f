"""How well the end of a spoken turn is found: false cut-offs and waits, on synthetic questions.

    .venv/bin/python -m tools.turn_eval              # espeak-ng and Piper questions, all rules
    .venv/bin/python -m tools.turn_eval --tts espeak --chunk-ms 100

Each question is heard twice through :class:`assistant.speech.turns.TurnDetector`, fed in
``--chunk-ms`` chunks as a microphone would (0.5 s of silence before, 3 s after):

- **whole**: spoken in one go;
- **paused**: with 600 ms of silence inside, after an incomplete phrase ("I would like to
  know ... what the capital of France is").

A *false cut-off* is a turn that ended before the speech after the pause began (or, whole, any
turn that ended before the speech did). The *added wait* is from the real end of the speech (the
last 10-ms frame above 1 % of the clip's peak) to the end of the turn, in audio time; in a live
stream smart-turn's own time (printed, per call) comes on top. Rules compared: smart-turn after
200 ms (the default), 400 ms and 700 ms of silence, and a fixed 800-ms silence (what the page's
voice mode does today, there on an energy VAD; here on the same Silero VAD).

Voices: espeak-ng (five English voices, 130-175 words a minute; each part of a paused question is
synthesised alone, so espeak ends the first with a falling, final-sounding tone: a hard case) and
Piper's embedded ``en_US-joe-medium`` at three speeds (the question synthesised whole with a
comma at the pause, whose gap is widened to 600 ms: a continuing tone, nearer to a person).
"""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from assistant.speech.turns import SAMPLING_RATE, TurnDetector, TurnSettings
from tests.speech_samples import speech_samples

PAUSE_S = 0.6
ESPEAK_VOICES = [("en-us", 140), ("en", 160), ("en-gb-x-rp", 150), ("en-us+f3", 130), ("en-us+m3", 175)]
PIPER_SPEEDS = [0.9, 1.0, 1.15]
# (the incomplete phrase before the pause, the rest): 12 phrasings
QUESTIONS = [
    ("I would like to know", "what the capital of France is."),
    ("Could you tell me", "how far it is to the moon?"),
    ("What is the", "tallest mountain in Europe?"),
    ("Set a timer for", "ten minutes."),
    ("Remind me to call", "my sister tomorrow."),
    ("Tell me about the history of", "the Roman empire."),
    ("Show me the", "photos from last week."),
    ("I was wondering if", "you could help me with my homework."),
    ("How many calories are in", "a banana?"),
    ("Can you explain how", "a rainbow is made?"),
    ("What is the best way to", "learn to play the guitar?"),
    ("Please translate", "good morning into Spanish."),
]
RULES = {
    "smart-turn 200 ms": TurnSettings(),
    "smart-turn 400 ms": TurnSettings(silence_s=0.4),
    "smart-turn 700 ms": TurnSettings(silence_s=0.7),  # asked only after a longer silence than the pause
    "fixed 800 ms": TurnSettings(silence_s=0.8, max_wait_s=0.8),  # ends at 0.8 s, never asks
}


@dataclass
class Clip:
    name: str
    audio: np.ndarray
    speech_end: float  # seconds, in the clip
    resumes: float | None  # paused: where the speech after the pause starts


@dataclass
class Outcome:
    cut: bool
    wait: float | None  # None: no turn ended
    asked: int
    model_ms: float


def espeak_clips(count: int) -> Iterator[tuple[Clip, Clip]]:
    for i, (first, rest) in enumerate(QUESTIONS[:count]):
        voice, speed = ESPEAK_VOICES[i % len(ESPEAK_VOICES)]
        whole = speech_samples(f"{first} {rest}", voice, speed)
        parts = [speech_samples(first, voice, speed), speech_samples(rest, voice, speed)]
        yield _clip(f"espeak {voice} {speed}: {first} ...", whole, parts)


def piper_clips(count: int) -> Iterator[tuple[Clip, Clip]]:
    from scipy.signal import resample_poly

    from assistant.speech import PiperSynthesizer

    synthesizer = PiperSynthesizer()
    voice = synthesizer.resolve(None)

    def say(text: str, rate: float) -> np.ndarray:
        chunk = synthesizer.speak_piece(text, voice, rate)
        return (0.5 * resample_poly(chunk.samples, SAMPLING_RATE, chunk.sample_rate)).astype(np.float32)

    for i, (first, rest) in enumerate(QUESTIONS[:count]):
        rate = PIPER_SPEEDS[i % len(PIPER_SPEEDS)]
        whole = say(f"{first} {rest}", rate)
        with_comma = say(f"{first}, {rest}", rate)
        gap = _longest_gap(with_comma)
        parts = [_trim(with_comma[: gap[0]]), _trim(with_comma[gap[1] :])]
        yield _clip(f"piper x{rate}: {first} ...", whole, parts)


def _clip(name: str, whole: np.ndarray, parts: list[np.ndarray]) -> tuple[Clip, Clip]:
    lead, trail = np.zeros(SAMPLING_RATE // 2, np.float32), np.zeros(3 * SAMPLING_RATE, np.float32)
    pause = np.zeros(int(PAUSE_S * SAMPLING_RATE), np.float32)
    whole = _trim(whole)
    first, rest = _trim(parts[0]), _trim(parts[1])
    resumes = (len(lead) + len(first) + len(pause)) / SAMPLING_RATE
    return (
        Clip(name, np.concatenate([lead, whole, trail]), (len(lead) + len(whole)) / SAMPLING_RATE, None),
        Clip(
            name,
            np.concatenate([lead, first, pause, rest, trail]),
            resumes + len(rest) / SAMPLING_RATE,
            resumes,
        ),
    )


def _loud(audio: np.ndarray, frame: int = 160) -> np.ndarray:
    frames = audio[: len(audio) // frame * frame].reshape(-1, frame)
    level = np.sqrt((frames**2).mean(axis=1))
    return level > 0.01 * level.max()


def _trim(audio: np.ndarray) -> np.ndarray:
    """The clip from its first to its last loud 10-ms frame (the real start and end of speech)."""
    loud = np.flatnonzero(_loud(audio))
    return audio[loud[0] * 160 : (loud[-1] + 1) * 160]


def _longest_gap(audio: np.ndarray) -> tuple[int, int]:
    """The longest quiet run inside the clip (Piper's comma), in samples."""
    loud = _loud(audio)
    best, start = (0, 0), None
    for i, is_loud in enumerate(loud):
        if not is_loud and start is None:
            start = i
        if is_loud and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best[0] * 160, best[1] * 160


def run(clip: Clip, settings: TurnSettings, chunk: int) -> Outcome:
    detector = TurnDetector(settings)
    for start in range(0, len(clip.audio), chunk):
        for event in detector.feed(clip.audio[start : start + chunk]):
            if event.kind == "turn_ended":
                cut = event.at < (clip.resumes if clip.resumes is not None else clip.speech_end)
                return Outcome(cut, None if cut else event.at - clip.speech_end, event.asked, event.model_ms)
    return Outcome(False, None, 0, 0.0)


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line), "?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tts", choices=["espeak", "piper", "both"], default="both")
    parser.add_argument("--count", type=int, default=len(QUESTIONS), help="questions per voice family")
    parser.add_argument("--chunk-ms", type=int, default=20)
    parser.add_argument("--noise-db", type=float, help="add a microphone's hiss at this dBFS (e.g. -60)")
    parser.add_argument("--verbose", action="store_true", help="each question's outcome")
    args = parser.parse_args()
    families = ["espeak", "piper"] if args.tts == "both" else [args.tts]
    chunk = args.chunk_ms * SAMPLING_RATE // 1000
    asked, model_ms = 0, 0.0
    print(f"CPU: {cpu_name()}; pause {PAUSE_S * 1000:.0f} ms; chunks of {args.chunk_ms} ms")
    for family in families:
        clips = list((espeak_clips if family == "espeak" else piper_clips)(args.count))
        if args.noise_db is not None:
            rng = np.random.default_rng(0)
            for clip in (c for pair in clips for c in pair):
                clip.audio = clip.audio + (
                    10 ** (args.noise_db / 20) * rng.standard_normal(len(clip.audio))
                ).astype(np.float32)
        print(f"\n{family}: {len(clips)} questions, whole and paused")
        for rule, settings in RULES.items():
            for kind in (0, 1):
                outcomes = [run(pair[kind], settings, chunk) for pair in clips]
                asked += sum(o.asked for o in outcomes)
                model_ms += sum(o.model_ms for o in outcomes)
                waits = [o.wait for o in outcomes if o.wait is not None]
                cuts = sum(o.cut for o in outcomes)
                figures = (
                    f"median {np.median(waits):.2f} s, p90 {np.percentile(waits, 90):.2f} s" if waits else "-"
                )
                print(
                    f"  {rule:18s} {'paused' if kind else 'whole ':6s}: false cut-offs {cuts}/{len(outcomes)}; "
                    f"added wait {figures}"
                )
                if args.verbose:
                    for pair, outcome in zip(clips, outcomes, strict=True):
                        print(
                            f"      {'CUT ' if outcome.cut else '    '}{outcome.wait if outcome.wait is not None else '-'!s:.5} {pair[kind].name}"
                        )
    if asked:
        print(f"\nsmart-turn: {model_ms / asked:.0f} ms a call (features + model, one thread), {asked} calls")


if __name__ == "__main__":
    main()
