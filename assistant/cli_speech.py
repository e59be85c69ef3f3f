"""The command line's voice: ``python -m assistant speak TEXT -o out.wav`` and ``chat --speak``.

The audio file's format comes from its name (.wav .mp3 .flac .opus .aac .pcm); it is written
as the speech is made, so a long text's first sentences are on disk before the last is said.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from assistant.errors import InvalidParams
from assistant.speech import FORMATS, encode

SUFFIXES = {"." + f: f for f in FORMATS} | {".ogg": "opus"}


class OutputError(InvalidParams):
    """A bad -o: an AssistantError, so the CLI prints it as its one ``error:`` line."""


def output_format(path: str | None) -> str:
    if not path:
        raise OutputError(
            "-o FILE is needed: where to write the speech (.wav, .mp3, .flac, .opus, .aac, .pcm)"
        )
    suffix = Path(path).suffix.lower()
    if suffix == ".m4a":
        raise OutputError("-o: .m4a needs a seekable MP4 container; use .aac (ADTS) instead")
    if suffix not in SUFFIXES:
        raise OutputError(f"-o {path}: the name must end in one of {', '.join(sorted(SUFFIXES))}")
    folder = Path(path).expanduser().parent
    if not folder.is_dir():
        raise OutputError(f"-o {path}: no such directory {folder}")
    return SUFFIXES[suffix]


def check_output(path: str | None) -> None:
    output_format(path)


def _write(chunks, path: str) -> float:
    """Write ``chunks`` into ``path`` (atomically: a temp file renamed at the end); seconds said."""
    fmt = output_format(path)
    said = 0.0

    def counted():
        nonlocal said
        for chunk in chunks:
            said += chunk.seconds
            yield chunk

    target = Path(path).expanduser()
    partial = target.with_name(f".{target.name}.part")
    try:
        with open(partial, "wb") as file:
            for data in encode(counted(), fmt):
                file.write(data)
        if fmt == "wav":  # the sizes are known now: a header any player reads
            _fix_wav_sizes(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return said


def _fix_wav_sizes(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as file:
        file.seek(4)
        file.write((size - 8).to_bytes(4, "little"))
        file.seek(40)
        file.write((size - 44).to_bytes(4, "little"))


def cmd_speak(args) -> int:
    from assistant.flags import settings_from_args
    from assistant.loaders import load_synthesizer

    text = sys.stdin.read() if args.text == "-" else args.text
    if not text.strip():
        raise InvalidParams("nothing to say: the text is empty")
    check_output(args.output)
    started = time.perf_counter()
    settings = settings_from_args(args)
    synthesizer = load_synthesizer(settings)
    loaded = time.perf_counter()
    seconds = _write(synthesizer.speak(text), args.output)
    if seconds == 0:
        raise InvalidParams("nothing to say: the text has no words to read (only code, symbols or emoji)")
    elapsed = time.perf_counter() - loaded
    if args.json:
        print(
            json.dumps(
                {
                    "output": args.output,
                    "seconds": round(seconds, 3),
                    "elapsed_s": round(elapsed, 3),
                    "load_s": round(loaded - started, 3),
                    "rtf": round(elapsed / seconds, 4),
                    "voice": synthesizer.voices[0].name,
                }
            )
        )
    else:
        print(f"wrote {seconds:.1f} s of speech to {args.output}", file=sys.stderr)
    return 0


def write_spoken(spoken, path: str) -> None:
    """The end of ``chat --speak``: the reply's speech, made while it streamed, into ``path``."""
    spoken.finish()
    if spoken.missing_language:
        print(
            f"(no voice is installed for the reply's language '{spoken.missing_language}': "
            f"add one with --tts-voice; nothing was written)",
            file=sys.stderr,
        )
        return
    seconds = _write(iter(spoken), path)
    print(f"(spoke {seconds:.1f} s into {path})", file=sys.stderr)
