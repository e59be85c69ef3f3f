"""Reuse the keys/values of an earlier prompt: a follow-up question then costs only its new tokens.

An entry holds the exact token ids whose keys/values it has (the prompt and the reply but its
last token), where each image's tokens start in them with a hash of that image's pixels, and the
cache itself. A new prompt reuses the entry sharing the longest prefix with it, cut back to the
first image whose pixels differ: two different photos of the same size give identical token ids,
so the ids alone would silently reuse the wrong picture. Entries are evicted least recently used
under an entry count and a byte budget. Touched only from the model's one inference thread.

Entries belong to a user: a prompt reuses only its own user's entries, except for their
``shared`` leading tokens (the server's own system prompt, which every user's prompt starts
with), so neither the count of reused tokens nor the time to the first token can tell one user
anything about what another wrote (as vLLM's per-request ``cache_salt`` does).
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MIN_REUSE_TOKENS = 8  # below this, starting afresh costs about the same
MAX_ENTRIES = 8
CONTINUATION_SHARE = 0.5  # reusing at least this much of an entry continues it in place


def image_digest(image: Any) -> str:
    """Content hash of a normalised PIL image: mode, size and pixels."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{image.mode}:{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class ImageSpan:
    start: int  # first token of this image's features (everything before it cannot depend on it)
    end: int  # one past its last feature token
    digest: str


@dataclass
class Entry:
    ids: list[int]
    images: list[ImageSpan]
    kv: Any  # transformers DynamicCache
    nbytes: int
    owner: str = ""  # whose prompt this is
    shared: int = 0  # leading tokens that are the server's, not the owner's: anyone may reuse them
    last_used: float = field(default_factory=time.monotonic)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def reusable_length(entry: Entry, ids: Sequence[int], images: Sequence[ImageSpan]) -> int:
    """How many leading tokens of ``ids`` the entry's keys/values are valid for."""
    n = min(common_prefix(entry.ids, ids), len(ids) - 1)  # the last token must be run for its logits
    new = {(s.start, s.end): s.digest for s in images}
    for span in entry.images:
        if span.start >= n:
            break
        if span.end > n or new.get((span.start, span.end)) != span.digest:
            return span.start  # a different picture here (or only part of one): reuse up to it
    return n


def covers(big: Entry, small: Entry) -> bool:
    """Whether ``big`` holds every token of ``small``, with the same pictures."""
    n = len(small.ids)
    return (
        big.owner == small.owner
        and big.shared >= small.shared
        and len(big.ids) >= n
        and big.ids[:n] == small.ids
        and [s for s in big.images if s.start < n] == list(small.images)
    )


class PrefixCache:
    def __init__(self, budget_bytes: int, max_entries: int = MAX_ENTRIES, min_reuse: int = MIN_REUSE_TOKENS):
        self.budget_bytes = budget_bytes
        self.max_entries = max_entries
        self.min_reuse = min_reuse
        self._entries: list[Entry] = []

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def take(
        self, ids: Sequence[int], images: Sequence[ImageSpan], owner: str = "", shared: int = 0
    ) -> tuple[Any, int]:
        """Keys/values for the longest reusable prefix of ``ids``, cropped to it, and its length
        (None, 0 when no entry serves at least ``min_reuse`` tokens). ``owner``: whose prompt
        ``ids`` is; ``shared``: how many of its leading tokens are the server's own.

        A continuation of an entry (a follow-up, a regenerate) takes the entry itself out: the
        caller extends it and puts the result back. A short share of a long entry (another chat
        with the same system prompt, an edit far back) gets a cropped copy, so the longer
        conversation stays cached for its own next turn. Another user's entry serves only the
        part both prompts share with the server's (and always as a copy).
        """
        best, best_n = None, 0
        for entry in self._entries:
            n = reusable_length(entry, ids, images)
            if entry.owner != owner:
                n = min(n, entry.shared, shared)
            if n > best_n:
                best, best_n = entry, n
        if best is None or best_n < self.min_reuse:
            return None, 0
        if best.owner == owner and best_n >= len(best.ids) * CONTINUATION_SHARE:
            self._entries.remove(best)
            kv = best.kv
        else:
            best.last_used = time.monotonic()
            kv = copy.deepcopy(best.kv)
        kv.crop(best_n - kv.get_seq_length())  # transformers' crop takes the (negative) count to drop
        return kv, best_n

    def put(self, entry: Entry) -> None:
        if not self.enabled or entry.nbytes > self.budget_bytes:
            return
        # An entry that holds all of another serves every lookup at least as well: keep one.
        # (A read-ahead that gave way puts back a cropped copy while the original is still here.)
        holder = next((e for e in self._entries if covers(e, entry)), None)
        if holder is not None:
            holder.last_used = time.monotonic()
            self._entries.sort(key=lambda e: e.last_used)
            return
        self._entries = [e for e in self._entries if not covers(entry, e)]
        entry.last_used = time.monotonic()
        self._entries.append(entry)
        self._entries.sort(key=lambda e: e.last_used)
        while len(self._entries) > self.max_entries or self.nbytes > self.budget_bytes:
            self._entries.pop(0)  # the least recently used

    def clear(self) -> None:
        self._entries.clear()
