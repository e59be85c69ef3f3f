"""One id per request or turn, in every log line about it, for an operator to follow one turn.

An HTTP request gets its id from :mod:`web.request_ids` (the caller's ``X-Request-Id`` when it
is a sane token, else a new one; sent back in the answer's ``X-Request-Id``); a turn that starts
without one (the page's turns run in Gradio's queue, not in their HTTP request) gets a new one
from the engine. The id travels to a remote chat server as ``X-Request-Id`` and is named in the
messages of unexpected errors, so a user's report leads to the server's log lines.

``--log-format json`` writes one JSON object per line (time, level, logger, message,
request_id, and the traceback of an error) for log collectors; ``text`` (the default) puts the
id in brackets.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from contextvars import ContextVar
from datetime import UTC, datetime

HEADER = "X-Request-Id"
# An HTTP request's id (set by web.request_ids), and a turn's own (set by the engine when it
# started outside any request). Two, so that a turn's id never passes to the next turn asked
# from the same thread: only a request's id is inherited.
_CURRENT: ContextVar[str | None] = ContextVar("request_id", default=None)
_TURN: ContextVar[str | None] = ContextVar("turn_id", default=None)
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def new() -> str:
    return "req-" + secrets.token_hex(8)


def current() -> str | None:
    """The id log lines name now: the HTTP request's, else the turn's."""
    return _CURRENT.get() or _TURN.get()


def of_request() -> str | None:
    """The HTTP request's id, which a turn started within it takes."""
    return _CURRENT.get()


def use(request_id: str) -> None:
    """Make ``request_id`` the HTTP request's id (for this task's context)."""
    _CURRENT.set(request_id)


def use_for_turn(turn_id: str) -> None:
    """Make ``turn_id`` the id of the turn being worked on in this context."""
    _TURN.set(turn_id)


def sane(value: str | None) -> str | None:
    """A caller's id if it is a short token (it is written into logs and headers), else None."""
    return value if value and _SANE.fullmatch(value) else None


class _WithId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current() or "-"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None)
            if getattr(record, "request_id", "-") != "-"
            else None,
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str, form: str = "text") -> None:
    """The root logger's one handler: text with the request id in brackets, or JSON lines."""
    handler = logging.StreamHandler()
    handler.addFilter(_WithId())
    if form == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
