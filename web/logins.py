"""The users of ``--auth``: password checks in constant time, and a limit on wrong passwords.

One :class:`Logins` serves the page's login form and the API's HTTP Basic credentials alike, so
a guesser gains nothing by switching between them. Failures are counted per client address and
user name (at most :data:`MAX_FAILURES` in :data:`WINDOW_S`) and per client address over all
names (:data:`MAX_CLIENT_FAILURES`, against trying one password on many names); past either, the
client waits until its oldest failure leaves the window. A correct password clears that
client's count for that user. Nothing here knows Gradio or HTTP.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

MAX_FAILURES = 5  # per client and user name
MAX_CLIENT_FAILURES = 20  # per client, all user names together
WINDOW_S = 15 * 60.0
MAX_TRACKED = 10_000  # keys remembered at most (oldest forgotten first)
_ANY_USER = "\0any"


class TooManyAttempts(Exception):
    def __init__(self, retry_after_s: float):
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        minutes = math.ceil(self.retry_after_s / 60)
        wait = f"{self.retry_after_s} s" if self.retry_after_s < 120 else f"{minutes} minutes"
        super().__init__(f"too many failed logins from this address: try again in {wait}")


class Logins:
    def __init__(
        self,
        users: Iterable[tuple[str, str]],
        *,
        max_failures: int = MAX_FAILURES,
        max_client_failures: int = MAX_CLIENT_FAILURES,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.users = {user: password.encode() for user, password in users}
        self.max_failures, self.max_client_failures = max_failures, max_client_failures
        self.window_s, self.clock = window_s, clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.users)

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, client: str, user: str) -> float:
        """Seconds before ``client`` may try ``user`` again (0: now)."""
        now = self.clock()
        with self._lock:
            waits = [0.0]
            for key, limit in (
                ((client, user), self.max_failures),
                ((client, _ANY_USER), self.max_client_failures),
            ):
                times = self._recent(key, now)
                if len(times) >= limit:
                    waits.append(times[-limit] + self.window_s - now)
            return max(waits)

    def failed(self, client: str, user: str) -> None:
        now = self.clock()
        with self._lock:
            for key in ((client, user), (client, _ANY_USER)):
                self._failures.setdefault(key, deque(maxlen=max(self.max_failures, self.max_client_failures)))
                self._failures[key].append(now)
            while len(self._failures) > MAX_TRACKED:
                del self._failures[next(iter(self._failures))]

    def succeeded(self, client: str, user: str) -> None:
        with self._lock:
            self._failures.pop((client, user), None)

    def valid(self, user: str, password: str) -> bool:
        """Whether the password is right; the same work whether or not the user exists."""
        expected = self.users.get(user)
        same = hmac.compare_digest(password.encode(), expected if expected is not None else b"\0" * 32)
        return same and expected is not None

    def check(self, client: str, user: str, password: str) -> bool:
        """A login attempt: TooManyAttempts while the client must wait, else right or wrong."""
        wait = self.retry_after(client, user)
        if wait > 0:
            raise TooManyAttempts(wait)
        if self.valid(user, password):
            self.succeeded(client, user)
            return True
        self.failed(client, user)
        return False

    def check_basic(self, client: str, authorization: str) -> str | None:
        """The user of an ``Authorization: Basic …`` header with a right password, else None."""
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        if not sep:
            return None
        return user if self.check(client, user, password) else None
