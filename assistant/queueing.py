"""A first-come, first-served turn queue: one generation at a time per loaded model.

``threading.Lock`` makes no ordering promise; people waiting for a busy model expect to be
served in the order they arrived, and to see how many are ahead of them.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque


class TurnQueue:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: deque[int] = deque()
        self._tickets = itertools.count()
        self._holder: int | None = None
        self._photos: dict[int, frozenset[str]] = {}  # what each waiting turn brings (image digests)

    def enter(self, photos: frozenset[str] = frozenset()) -> int:
        """Take a ticket; the caller must later ``leave`` it (also when it never got its turn).
        ``photos``: digests of the images the turn brings (see ``someone_else_waits``)."""
        with self._cond:
            ticket = next(self._tickets)
            self._waiting.append(ticket)
            if photos:
                self._photos[ticket] = photos
            return ticket

    def someone_else_waits(self, photos: frozenset[str]) -> bool:
        """Whether a turn waits that does not bring all of ``photos``: a photo read ahead gives
        way to it, but not to the message it is being read for."""
        with self._cond:
            return any(not photos <= self._photos.get(t, frozenset()) for t in self._waiting)

    def wait(self, ticket: int, timeout: float | None = None) -> bool:
        """Block until it is ``ticket``'s turn (True) or ``timeout`` passes (False)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._holder is None and self._waiting[0] == ticket, timeout)
            if ok:
                self._waiting.popleft()
                self._holder = ticket
            return ok

    def position(self, ticket: int) -> int:
        """How many generations run or wait ahead of ``ticket`` (0 = it is running)."""
        with self._cond:
            if self._holder == ticket:
                return 0
            ahead = self._waiting.index(ticket) if ticket in self._waiting else 0
            return ahead + (self._holder is not None)

    def leave(self, ticket: int) -> None:
        with self._cond:
            self._photos.pop(ticket, None)
            if self._holder == ticket:
                self._holder = None
            elif ticket in self._waiting:
                self._waiting.remove(ticket)
            self._cond.notify_all()

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._holder is not None or bool(self._waiting)
