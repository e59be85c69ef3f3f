"""Per-user limits on what makes the models work: requests a minute, tokens a day.

``--user-requests-per-minute N`` counts each chat reply, transcription and speech request of one
user over the last 60 s; ``--user-tokens-per-day N`` counts, per UTC day, the tokens a user's
replies made the model compute (prompt tokens not served from the prefix cache, plus the
generated ones). Listing models or loading the page counts for nothing. Past a limit the
request is refused with :class:`RateLimited` (HTTP 429 with ``Retry-After``; a toast in the
page), and other users are unaffected.

While a limit is set, the day's counts live in ``usage.sqlite3`` in the data directory, so they
survive a restart (``python -m assistant usage`` prints them); the minute's window is kept in
memory only.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from assistant.errors import AssistantError

log = logging.getLogger(__name__)
FILE = "usage.sqlite3"
WINDOW_S = 60.0


class RateLimited(AssistantError):
    """A user went past one of their limits; ``retry_after_s`` says when to try again."""

    http_status = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = max(1, retry_after_s)


@dataclass(frozen=True)
class DayUsage:
    user: str
    day: str  # YYYY-MM-DD, UTC
    requests: int
    tokens: int


def _today(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def _seconds_to_tomorrow(now: float) -> int:
    moment = datetime.fromtimestamp(now, UTC)
    tomorrow = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((tomorrow - moment).total_seconds()) + 1


def account(user: str) -> str:
    """Whose limits a caller spends: a /v1 caller's cache_salt (after NUL) is not a new user."""
    return user.split("\0", 1)[0]


class Quotas:
    def __init__(
        self,
        data_dir: Path | None,
        requests_per_minute: int = 0,
        tokens_per_day: int = 0,
        clock=time.time,
    ):
        self.requests_per_minute, self.tokens_per_day = requests_per_minute, tokens_per_day
        self._clock = clock
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._path = Path(data_dir) / FILE if data_dir is not None else None
        self._db: sqlite3.Connection | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.requests_per_minute or self.tokens_per_day)

    def admit(self, user: str) -> None:
        """Count one request of ``user`` (a chat reply, a transcription, speech), or refuse it.
        Nothing is counted while no limit is set."""
        if not self.enabled:
            return
        user = account(user)
        now = self._clock()
        with self._lock:
            if self.tokens_per_day:
                spent = self._day(user, _today(now)).tokens
                if spent >= self.tokens_per_day:
                    wait = _seconds_to_tomorrow(now)
                    raise RateLimited(
                        f"you have used your {self.tokens_per_day:,} tokens for today; "
                        f"try again in {_spell(wait)} (at midnight UTC)",
                        wait,
                    )
            if self.requests_per_minute:
                recent = self._recent[user]
                while recent and recent[0] <= now - WINDOW_S:
                    recent.popleft()
                if len(recent) >= self.requests_per_minute:
                    wait = int(recent[0] + WINDOW_S - now) + 1
                    raise RateLimited(
                        f"you have sent {self.requests_per_minute} requests in the last minute; "
                        f"try again in {_spell(wait)}",
                        wait,
                    )
                recent.append(now)
            self._add(user, _today(now), requests=1, tokens=0)

    def spend(self, user: str, tokens: int) -> None:
        """Tokens a finished reply made the model compute, for the day's count."""
        if tokens > 0 and self.enabled:
            with self._lock:
                self._add(account(user), _today(self._clock()), requests=0, tokens=tokens)

    def usage(self, days: int = 1) -> list[DayUsage]:
        """Each user's counts of the last ``days`` UTC days, newest day first."""
        since = _today(self._clock() - (days - 1) * 86400)
        with self._lock:
            db = self._open()
            if db is None:
                return []
            rows = db.execute(
                "SELECT user, day, requests, tokens FROM usage WHERE day >= ? ORDER BY day DESC, tokens DESC",
                (since,),
            ).fetchall()
        return [DayUsage(*row) for row in rows]

    # -- the day's counts, on disk ----------------------------------------------------------

    def _open(self) -> sqlite3.Connection | None:
        if self._db is None and self._path is not None:
            try:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self._path, check_same_thread=False, timeout=5)
                db.execute("PRAGMA journal_mode=WAL")  # a count per request: no fsync each time
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(
                    "CREATE TABLE IF NOT EXISTS usage (user TEXT NOT NULL, day TEXT NOT NULL,"
                    " requests INTEGER NOT NULL DEFAULT 0, tokens INTEGER NOT NULL DEFAULT 0,"
                    " PRIMARY KEY (user, day))"
                )
                db.commit()
                self._db = db
            except sqlite3.Error as exc:  # counting must never stop anyone from chatting
                log.warning("usage counts are not kept (%s: %s)", self._path, exc)
                self._path = None
        return self._db

    def _day(self, user: str, day: str) -> DayUsage:
        db = self._open()
        row = db.execute("SELECT requests, tokens FROM usage WHERE user = ? AND day = ?", (user, day)).fetchone() if db else None  # fmt: skip
        return DayUsage(user, day, *(row or (0, 0)))

    def _add(self, user: str, day: str, requests: int, tokens: int) -> None:
        db = self._open()
        if db is None:
            return
        try:
            db.execute(
                "INSERT INTO usage (user, day, requests, tokens) VALUES (?, ?, ?, ?) ON CONFLICT (user, day)"
                " DO UPDATE SET requests = requests + excluded.requests, tokens = tokens + excluded.tokens",
                (user, day, requests, tokens),
            )
            db.commit()
        except sqlite3.Error as exc:
            log.warning("could not count usage (%s)", exc)


def _spell(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{round(seconds / 60)} minutes"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
