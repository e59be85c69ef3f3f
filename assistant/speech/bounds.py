"""How fast and how much speech: the speed range, the seconds a text will take, the caps.

The work of speech is bounded by what the voice will say, not by characters: the English voice
reads an Arabic letter by its name, so 57 Arabic characters are 34 s of audio, and one ONNX run
holds ~27 MB per second of the audio it makes (a 62-s run peaked at +1.7 GB). So the seconds are
estimated before anything is made (:func:`speech_seconds`; a Piper voice counts phonemes, see
:meth:`~assistant.speech.voices.PiperSynthesizer.seconds_of`), one run makes at most
``MAX_RUN_PHONEMES`` (~12 s, +0.3 GB at its peak), the memory is handed back after a long
synthesis (:func:`give_back_memory`), and a :class:`~assistant.speech.spoken.SpokenReply` stops
at ``MAX_SPOKEN_S`` of audio.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from assistant.errors import InvalidParams
from assistant.speech import speakable
from assistant.speech.types import SpeechChunk

log = logging.getLogger(__name__)

MIN_SPEED, MAX_SPEED = 0.25, 4.0  # OpenAI's range for ``speed``
CHARS_PER_SECOND = 12.0  # a remote voice: the estimate goes by the characters it is sent
MAX_SPOKEN_S = 30 * 60.0  # a SpokenReply stops making audio after this much
LONG_SPEECH_S = 60.0  # after this much audio, its memory is handed back (give_back_memory)


def speech_seconds(
    synthesizer: Any, text: str, voice: str | None = None, speed: float | None = None
) -> float:
    """About how many seconds of audio ``text`` is (a little more rather than less), without
    synthesizing it; by the characters to be said where the synthesizer cannot tell better."""
    estimate = getattr(synthesizer, "seconds_of", None)
    if estimate is not None:
        return float(estimate(text, voice=voice, speed=speed))
    return sum(len(p) for p in speakable.split(text)) / CHARS_PER_SECOND / check_speed(speed)


def bounded(chunks: Iterable[SpeechChunk], max_seconds: float) -> Iterator[SpeechChunk]:
    """``chunks`` until they hold ``max_seconds`` of audio (then the source is closed)."""
    made = 0.0
    source = iter(chunks)
    try:
        for chunk in source:
            yield chunk
            made += chunk.seconds
            if made >= max_seconds:
                log.warning("speech stopped after %.0f s of audio (the most one request makes)", made)
                return
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def give_back_memory(synthesizer: Any = None) -> None:
    """After a long synthesis: the voice's memory (see ``PiperSynthesizer.release_memory``) and
    the heap's free pages (glibc) back to the OS."""
    release = getattr(synthesizer, "release_memory", None)
    if release is not None:
        release()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def check_speed(speed: float | None) -> float:
    if speed is None:
        return 1.0
    if not isinstance(speed, (int, float)) or not MIN_SPEED <= float(speed) <= MAX_SPEED:
        raise InvalidParams.for_param(
            "speed", f"must be between {MIN_SPEED:g} and {MAX_SPEED:g}, got {speed!r}"
        )
    return float(speed)
