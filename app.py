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

from assistant import flags
from assistant.environment import quiet
from assistant.settings import Settings, login

log = logging.getLogger("assistant.app")


def build_parser() -> argparse.ArgumentParser:
    """Every flag comes from the Settings declarations (assistant/settings.py)."""
    parser = argparse.ArgumentParser(
        description="Self-hosted multimodal assistant: chat with photos and voice in the browser, or over an OpenAI-compatible API.",
        epilog="Every flag can also be set with an environment variable: --model → ASSISTANT_MODEL, --api-key → ASSISTANT_API_KEY, and so on. Flags win over the environment.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    flags.add_settings_arguments(parser)
    return parser


def read_auth_file(path: Path | None) -> tuple[tuple[str, str], ...]:
    if path is None:
        return ()
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    try:
        return tuple(login(ln) for ln in lines if ln and not ln.startswith("#"))
    except ValueError as exc:
        raise SystemExit(f"error: --auth-file {exc}") from None


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = flags.settings_from_args(args)
    if settings.backend == "openai" and not settings.base_url:
        raise SystemExit("error: --backend openai needs --base-url (e.g. http://localhost:8000/v1)")
    if settings.asr_backend == "openai" and not settings.base_url:
        raise SystemExit("error: --asr-backend openai needs --base-url")
    return settings.replace(auth=settings.auth + read_auth_file(settings.auth_file))


PAGE_SCRIPT = Path(__file__).parent / "ui" / "static" / "page.js"
PAGE_HEAD = '<script src="/page.js" defer></script>'


def page_script():
    """The page's own script (address bar, keys, narrow screens): see ui/static/page.js."""
    from fastapi.responses import FileResponse

    return FileResponse(PAGE_SCRIPT, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


def build_server(assistant, settings: Settings):
    """One FastAPI app: the OpenAI-compatible routes under /v1 and the page at /."""
    import gradio as gr
    from fastapi import FastAPI

    import ui.voice
    import web
    from api import install_api
    from assistant.store import HistoryStore
    from ui import build_ui
    from ui.style import CSS
    from web.logins import Logins

    # The API serves its own docs (/v1/docs, /v1/openapi.json) behind its credentials.
    server = FastAPI(title="Multimodal assistant", docs_url=None, redoc_url=None, openapi_url=None)
    logins = Logins(settings.auth)  # one rate limit for the page's form and the API's Basic auth
    install_api(server, assistant, settings, logins=logins)
    store = HistoryStore(settings.data_dir)
    blocks = build_ui(assistant, settings, store)
    # Saved photos are served from where they lie (not copied to Gradio's cache), so that
    # web.files can tell whose they are.
    gr.set_static_paths([str(store.media_dir)])
    server.add_api_route("/page.js", page_script, include_in_schema=False)
    ui.voice.install(server, assistant, settings, blocks)  # /voice/* and /voice.js
    server = gr.mount_gradio_app(
        server,
        blocks,
        path="",
        auth=list(settings.auth) or None,
        max_file_size=settings.max_upload_bytes,  # each kind's own limit is checked by the engine
        allowed_paths=[str(store.media_dir)],
        show_error=False,  # only gr.Error messages (ours, written for users) reach the page
        css=CSS,
        head=PAGE_HEAD + ui.voice.HEAD,
        footer_links=["api", "gradio"],  # the page's own Settings is the only one
    )
    calm_queue(blocks)
    web.install(server, settings, store, logins, assistant.metrics.registry)
    return server, blocks


# Gradio's queue looks for new events every 1 ms and for progress every 10 ms, even when idle:
# 4% of a core here, and CPU taken from a model decoding on the same cores (in front of
# llama-server on 2 cores: 0.90 -> 0.77 ms of our CPU per streamed token). Every 5 ms adds at
# most 5 ms to an event's start; the page shows no progress bars.
QUEUE_POLL_S, PROGRESS_POLL_S = 0.005, 0.05


def calm_queue(blocks) -> None:
    queue = getattr(blocks, "_queue", None)  # private in Gradio: left alone if it changes
    if hasattr(queue, "sleep_when_free") and hasattr(queue, "progress_update_sleep_when_free"):
        queue.sleep_when_free = QUEUE_POLL_S
        queue.progress_update_sleep_when_free = PROGRESS_POLL_S


def main(argv: list[str] | None = None) -> int:
    quiet()
    parser = build_parser()
    flags.apply_environment(parser, os.environ)
    settings = settings_from_args(parser.parse_args(argv))
    from web import exposure_problem

    problem = exposure_problem(settings)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from assistant.request_ids import configure_logging

    configure_logging(settings.log_level, settings.log_format)

    import uvicorn

    from assistant.core import Assistant

    assistant = Assistant.load(settings)
    settings = assistant.settings  # hardware defaults resolved
    server, blocks = build_server(assistant, settings)
    if settings.share:  # a share link needs Gradio's own launcher: a second copy of the page
        log.warning("--share: the page is also published through a public Gradio link")
        blocks.launch(
            share=True,
            prevent_thread_lock=True,
            auth=list(settings.auth) or None,
            max_file_size=settings.max_upload_bytes,
        )
    log.info("serving on http://%s:%d (API under /v1)", settings.host, settings.port)
    uvicorn.run(
        server,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's loggers go through ours (the request id, --log-format)
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
