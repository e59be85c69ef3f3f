"""Entry point: parse flags (each has an ASSISTANT_* environment twin), load the models once,
mount the web page and the OpenAI-compatible API on one server, and serve.

    python app.py --help
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from assistant.settings import BACKENDS, DEVICES, MB, QUANTIZATIONS, Settings

log = logging.getLogger("assistant.app")
ENV_PREFIX = "ASSISTANT_"
TRUE = {"1", "true", "yes", "on"}


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def build_parser() -> argparse.ArgumentParser:
    defaults = Settings()
    p = argparse.ArgumentParser(
        description="Self-hosted multimodal assistant: chat with photos and voice in the browser, or over an OpenAI-compatible API.",
        epilog="Every flag can also be set with an environment variable: --model → ASSISTANT_MODEL, --api-key → ASSISTANT_API_KEY, and so on. Flags win over the environment.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    server = p.add_argument_group("server")
    server.add_argument("--host", default=defaults.host, help="address to bind; use 0.0.0.0 to serve your network (then set --auth)")
    server.add_argument("--port", type=int, default=defaults.port, help="port of the page and the API")
    server.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    server.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD", help="require a login for the page (repeatable)")
    server.add_argument("--auth-file", help="file with one USER:PASSWORD per line")
    server.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 API routes")
    server.add_argument("--data-dir", default=str(defaults.data_dir), help="where chat history and uploaded images are kept")
    server.add_argument("--max-file-size-mb", type=float, default=defaults.max_image_bytes / MB, help="largest upload accepted")
    server.add_argument("--allow-remote-images", action="store_true", help="let API clients pass https:// image URLs (public addresses only)")

    chat = p.add_argument_group("chat model")
    chat.add_argument("--model", help="hub id or local directory (default: Qwen2.5-VL-3B-Instruct on GPU, SmolVLM-256M-Instruct on CPU)")
    chat.add_argument("--quantization", default=defaults.quantization, choices=QUANTIZATIONS, help="auto = nf4 on GPU, none on CPU")
    chat.add_argument("--device", default=defaults.device, choices=DEVICES, help="where the chat model runs; auto = cuda when a GPU is visible")
    chat.add_argument("--backend", default=defaults.backend, choices=BACKENDS, help="'openai' sends chat to an OpenAI-compatible server (e.g. vLLM)")
    chat.add_argument("--base-url", help="the remote server, e.g. http://gpu-box:8000/v1 (with --backend openai)")
    chat.add_argument("--remote-model", help="model name on the remote server (default: its first model)")
    chat.add_argument("--remote-api-key", help="API key for the remote server")
    chat.add_argument("--system-prompt", default=defaults.system_prompt, help="default persona name (from prompts/) or free text")
    chat.add_argument("--max-new-tokens", type=int, default=defaults.default_max_new_tokens, help="default reply length")
    chat.add_argument("--max-new-tokens-cap", type=int, default=defaults.max_new_tokens_cap, help="largest reply length a user may ask for")
    chat.add_argument("--image-max-side", type=int, default=defaults.image_max_side, help="images are downscaled to this longest side")
    chat.add_argument("--max-images-in-context", type=int, default=defaults.max_images_in_context, help="older images are dropped beyond this")

    speech = p.add_argument_group("speech")
    speech.add_argument("--asr-model", default=defaults.asr_model, help="'embedded' (Whisper base shipped with the app), a faster-whisper size, hub id or local dir")
    speech.add_argument("--asr-backend", default=defaults.asr_backend, choices=("local", "openai"), help="'openai' sends audio to the remote server's /v1/audio/transcriptions")
    speech.add_argument("--asr-device", default=defaults.asr_device, choices=DEVICES, help="where Whisper runs")
    speech.add_argument("--asr-compute-type", default=defaults.asr_compute_type, help="auto = int8 on CPU, float16 on GPU")
    speech.add_argument("--asr-beam-size", type=int, default=defaults.asr_beam_size, help="1 = greedy decoding, about 1.5x faster on CPU")
    speech.add_argument("--language", help="speech language code, e.g. en (default: detect)")
    speech.add_argument("--max-audio-seconds", type=float, default=defaults.max_audio_seconds, help="longer recordings are refused")

    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="server log detail")
    return p


def apply_environment(parser: argparse.ArgumentParser, environ: dict) -> None:
    """Make ASSISTANT_* variables the defaults of their flags."""
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = environ.get(env_name(action.option_strings[-1]))
        if value is None:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            action.default = value.strip().lower() in TRUE
        elif isinstance(action, argparse._AppendAction):
            action.default = [v for v in value.split(",") if v]
        else:
            action.default = action.type(value) if action.type else value


def parse_auth(pairs: list[str], auth_file: str | None) -> tuple[tuple[str, str], ...]:
    lines = list(pairs)
    if auth_file:
        lines += [ln.strip() for ln in Path(auth_file).read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
    users = []
    for line in lines:
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise SystemExit(f"error: --auth expects USER:PASSWORD, got {line!r}")
        users.append((user, password))
    return tuple(users)


def settings_from_args(args: argparse.Namespace) -> Settings:
    if args.backend == "openai" and not args.base_url:
        raise SystemExit("error: --backend openai needs --base-url (e.g. http://localhost:8000/v1)")
    if args.asr_backend == "openai" and not args.base_url:
        raise SystemExit("error: --asr-backend openai needs --base-url")
    return Settings(
        model=args.model,
        quantization=args.quantization,
        device=args.device,
        backend=args.backend,
        base_url=args.base_url,
        remote_model=args.remote_model,
        remote_api_key=args.remote_api_key,
        asr_model=args.asr_model,
        asr_backend=args.asr_backend,
        asr_device=args.asr_device,
        asr_compute_type=args.asr_compute_type,
        asr_beam_size=args.asr_beam_size,
        language=args.language,
        max_audio_seconds=args.max_audio_seconds,
        max_image_bytes=int(args.max_file_size_mb * MB),
        image_max_side=args.image_max_side,
        max_images_in_context=args.max_images_in_context,
        system_prompt=args.system_prompt,
        default_max_new_tokens=args.max_new_tokens,
        max_new_tokens_cap=args.max_new_tokens_cap,
        host=args.host,
        port=args.port,
        share=args.share,
        auth=parse_auth(args.auth, args.auth_file),
        api_key=args.api_key,
        allow_remote_images=args.allow_remote_images,
        data_dir=Path(args.data_dir).expanduser(),
    )


def build_server(assistant, settings: Settings):
    """One FastAPI app: the OpenAI-compatible routes under /v1 and the page at /."""
    import gradio as gr
    from fastapi import FastAPI

    from api import install_api
    from assistant.store import HistoryStore
    from ui import build_ui
    from ui.style import CSS

    server = FastAPI(title="Multimodal assistant", docs_url="/v1/docs", openapi_url="/v1/openapi.json")
    install_api(server, assistant, settings)
    store = HistoryStore(settings.data_dir)
    blocks = build_ui(assistant, settings, store)
    server = gr.mount_gradio_app(
        server,
        blocks,
        path="",
        auth=list(settings.auth) or None,
        max_file_size=settings.max_image_bytes,
        allowed_paths=[str(store.media_dir)],
        show_error=True,
        css=CSS,
    )
    return server, blocks


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    parser = build_parser()
    apply_environment(parser, os.environ)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_from_args(args)

    import uvicorn

    from assistant.core import Assistant

    assistant = Assistant.load(settings)
    settings = assistant.settings  # hardware defaults resolved
    server, blocks = build_server(assistant, settings)
    if settings.share:  # a share link needs Gradio's own launcher: a second copy of the page
        log.warning("--share: the page is also published through a public Gradio link")
        blocks.launch(share=True, prevent_thread_lock=True, auth=list(settings.auth) or None, max_file_size=settings.max_image_bytes)
    log.info("serving on http://%s:%d (API under /v1)", settings.host, settings.port)
    uvicorn.run(server, host=settings.host, port=settings.port, log_level=args.log_level.lower(), timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
