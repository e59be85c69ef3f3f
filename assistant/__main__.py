"""Command line: ``python -m assistant transcribe …``, ``chat …`` and ``speak …``.

Contract (other code and checks depend on it): replies stream to stdout; with ``--json`` the
last stdout line is one JSON object; any bad input or unavailable model prints one line
``error: …`` on stderr and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

EXIT_BAD_INPUT = 2


class CliError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2, like every other bad input
        raise CliError(message)


def build_parser() -> Parser:
    from assistant.flags import add_generation_arguments, add_settings_arguments

    parser = Parser(
        prog="python -m assistant",
        description="Multimodal assistant engine: speech to text and vision-language chat.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    t = sub.add_parser("transcribe", help="transcribe an audio file")
    t.add_argument("audio", help="audio file: wav, mp3, ogg/opus, webm/opus, m4a, flac…")
    add_settings_arguments(t, groups=("speech",), cli_only=True)
    t.add_argument("--json", action="store_true", help="print one JSON object")

    c = sub.add_parser("chat", help="ask the vision-language model, streaming the reply")
    c.add_argument("text", nargs="?", default="", help="your message")
    add_settings_arguments(c, cli_only=True)
    c.add_argument("--image", action="append", default=[], help="an image file (repeatable)")
    c.add_argument("--audio", help="a voice message: its transcript is used as (part of) your words")
    c.add_argument(
        "--video",
        action="append",
        default=[],
        help="a video clip (mp4, webm, mov, mkv; repeatable): its frames and what is said in it",
    )
    c.add_argument(
        "--file",
        action="append",
        default=[],
        help="a document (PDF, text, Markdown; repeatable): its text and pictures of its pages",
    )
    add_generation_arguments(c)
    c.add_argument(
        "--json", action="store_true", help="end with one JSON line: reply, tokens, ttft_s, tokens_per_s…"
    )
    c.add_argument(
        "--speak", action="store_true", help="also read the reply aloud into -o FILE as it streams"
    )
    c.add_argument(
        "-o", "--output", help="with --speak: the audio file (.wav, .mp3, .flac, .opus, .aac, .pcm)"
    )

    s = sub.add_parser("speak", help="read text aloud into an audio file")
    s.add_argument("text", help="what to say (Markdown is read as a person would; '-' reads stdin)")
    s.add_argument("-o", "--output", required=True, help="audio file: .wav, .mp3, .flac, .opus, .aac or .pcm")
    add_settings_arguments(s, groups=("voice",), cli_only=True)
    s.add_argument("--json", action="store_true", help="print one JSON object: seconds, elapsed_s, rtf…")

    u = sub.add_parser("usage", help="each user's requests and tokens, counted while a per-user limit is set")
    u.add_argument("--data-dir", help="the app's --data-dir (default: the app's default)")
    u.add_argument("--days", type=int, default=1, help="UTC days to show, today included (default 1)")
    u.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def cmd_usage(args) -> int:
    from pathlib import Path

    from assistant.quotas import FILE, Quotas
    from assistant.settings import Settings

    folder = Path(args.data_dir).expanduser() if args.data_dir else Settings().data_dir
    if args.days < 1:
        raise CliError("--days must be 1 or more")
    if not (folder / FILE).is_file():
        raise CliError(
            f"no usage counted in {folder}: start the app with --user-requests-per-minute or --user-tokens-per-day"
        )
    rows = Quotas(folder).usage(args.days)
    if args.json:
        for row in rows:
            print(
                json.dumps({"user": row.user, "day": row.day, "requests": row.requests, "tokens": row.tokens})
            )
        return 0
    width = max([len("user"), *(len(r.user) for r in rows)])
    print(f"{'day':10}  {'user':{width}}  {'requests':>8}  {'tokens':>10}")
    for row in rows:
        print(f"{row.day:10}  {row.user:{width}}  {row.requests:>8}  {row.tokens:>10}")
    return 0


def quiet_libraries() -> None:
    """Library warnings and progress bars on stderr would break the one-line error contract."""
    import logging
    import warnings

    from assistant.environment import QUIET, quiet

    # TORCH_LOGS=-all: torch's own log handlers (not the root logger's) print import-time
    # warnings, e.g. torchao's deprecation notes when it is installed.
    quiet(
        {
            **QUIET,
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "TRANSFORMERS_VERBOSITY": "error",
            "TORCH_LOGS": "-all",
        }
    )
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.CRITICAL)
    logging.getLogger().setLevel(logging.CRITICAL)


def cmd_transcribe(args) -> int:
    from assistant.flags import settings_from_args
    from assistant.loaders import load_transcriber

    if not os.path.isfile(args.audio):
        raise CliError(f"no such file: {args.audio}")
    started = time.perf_counter()
    settings = settings_from_args(args)
    transcript = load_transcriber(settings).transcribe(args.audio, language=settings.language)
    if args.json:
        print(
            json.dumps(
                {
                    "text": transcript.text,
                    "language": transcript.language,
                    "duration_s": round(transcript.duration_s, 3),
                    "elapsed_s": round(time.perf_counter() - started, 3),
                },
                ensure_ascii=False,
            )
        )
    elif transcript.is_empty:
        print("(no speech detected)", file=sys.stderr)
    else:
        print(transcript.text)
    return 0


def _hears(args) -> bool:
    """Whether speech recognition is needed: a voice message, or a clip (its sound track)."""
    return args.audio is not None or bool(args.video)


def cmd_chat(args) -> int:
    from assistant.conversation import Message
    from assistant.core import Assistant, Token, Transcribed
    from assistant.flags import settings_from_args
    from assistant.options import knobs

    for path in [*args.image, *([args.audio] if args.audio else []), *args.video, *args.file]:
        if not os.path.isfile(path):
            raise CliError(f"no such file: {path}")
    if args.speak:
        from assistant.cli_speech import check_output

        check_output(args.output)
    assistant = Assistant.load(
        settings_from_args(args), load_asr=_hears(args), require_chat=True, load_tts=args.speak
    )
    spoken = assistant.speak_stream() if args.speak else None
    params = assistant.params(**{name: getattr(args, name) for name, _, knob in knobs() if knob.cli})
    message = Message.user(args.text, args.image, args.audio, videos=args.video, documents=args.file)
    with assistant.reply([], message, params) as reply:
        for event in reply:
            if isinstance(event, Transcribed) and not args.json:
                print(f"(heard: {event.transcript.text})", file=sys.stderr)
            elif isinstance(event, Token):
                sys.stdout.write(event.text)
                sys.stdout.flush()
                if spoken is not None:
                    spoken.feed(event.text)
    print()
    if spoken is not None:
        from assistant.cli_speech import write_spoken

        write_spoken(spoken, args.output)
    if args.json and reply.stats is not None:
        stats = reply.stats
        result: dict[str, object] = {"transcript": reply.transcript.text} if reply.transcript else {}
        result.update(
            reply=reply.text,
            tokens=stats.tokens,
            ttft_s=round(stats.ttft_s, 4),
            tokens_per_s=round(stats.tokens_per_s, 2),
            prompt_tokens=stats.prompt_tokens,
            cached_tokens=stats.cached_tokens,
            sent=stats.sent,
            finish_reason=stats.finish_reason,
            model=assistant.require_chat().info.name,
        )
        print(json.dumps(result, ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    from assistant.errors import AssistantError

    try:
        args = build_parser().parse_args(argv)
        quiet_libraries()
        if args.command == "speak":
            from assistant.cli_speech import cmd_speak

            return cmd_speak(args)
        if args.command == "usage":
            return cmd_usage(args)
        return cmd_transcribe(args) if args.command == "transcribe" else cmd_chat(args)
    except (CliError, AssistantError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
