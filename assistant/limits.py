"""Bounds on the text of one request, checked before any tokenizing.

A tokenizer's cost grows with the text, and the context check used to come after it: a 50 MB
message was tokenized in full (minutes, gigabytes) only to be refused. A text of ``n``
characters needs at least ``n / c`` tokens, where ``c`` is the longest vocabulary entry of the
model's tokenizer (every token stands for at most that many characters), so text longer than
``context × c`` characters can never fit and is refused at once, from its length alone.
History messages that cannot fit are dropped here, exactly as the context fitting would drop
them after tokenizing them.

Text that is not valid Unicode (a lone UTF-16 surrogate such as ``\\ud800``, which JSON allows)
is refused here too: no tokenizer, database or JSON encoder downstream can take it.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from typing import Any

from assistant.conversation import Message
from assistant.errors import InvalidParams

# Models whose tokenizer we cannot read (a remote server's, a test fake): a bound no common
# vocabulary exceeds, so nothing that fits is refused.
FALLBACK_CHARS_PER_TOKEN = 256
# Unicode normalisation (NFC/NFKC, which some tokenizers apply first) composes at most three
# code points into one (Hangul jamo), so the text a vocabulary sees may be up to 3x shorter.
NORMALIZER_FACTOR = 3
_SURROGATE = re.compile("[\ud800-\udfff]")
_bounds: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def max_chars_per_token(model: Any) -> int:
    """Characters one token can stand for, at most, for this model (cached per model)."""
    try:
        return _bounds[model]
    except (KeyError, TypeError):
        pass
    bound = FALLBACK_CHARS_PER_TOKEN
    tokenizer = getattr(model, "tokenizer", None)
    try:
        vocab = tokenizer.get_vocab() if tokenizer is not None else None
        if vocab:
            # A byte-level BPE entry has one character per byte, a SentencePiece piece is its
            # text with '▁' for the space, a byte-fallback '<0x41>' is longer than its one
            # character: in each case no shorter than the text it decodes to.
            bound = max(len(token) for token in vocab)
            backend = getattr(tokenizer, "backend_tokenizer", None)
            if backend is None or getattr(backend, "normalizer", None) is not None:
                bound *= NORMALIZER_FACTOR
    except Exception:  # an unusual tokenizer: keep the generous bound
        bound = FALLBACK_CHARS_PER_TOKEN
    try:
        _bounds[model] = bound
    except TypeError:  # not weak-referenceable: compute again next time (cheap enough)
        pass
    return bound


def _least_tokens(text: str, per_token: int) -> int:
    return -(-len(text) // per_token)


def has_lone_surrogate(text: str) -> bool:
    """The one check for text that is not valid Unicode (the API's fields, the page, imports)."""
    return bool(text) and _SURROGATE.search(text) is not None


def without_lone_surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (for what is kept, not refused)."""
    return _SURROGATE.sub("\ufffd", text)


def check_unicode(*texts: str) -> None:
    for text in texts:
        if has_lone_surrogate(text):
            raise InvalidParams(
                "the text contains an invalid character (a lone surrogate such as \\ud800): send valid Unicode text"
            )


def reply_reserve(context_length: int, max_new_tokens: int) -> int:
    """Tokens kept free for the reply when a conversation is fitted to the context: the reply's
    length asked for, but at most a quarter of the context. The asked length is a ceiling, not
    a claim: a long chat keeps its history and the reply gets the room left (it ends with
    finish reason "length" if it needed more), where reserving all of it would drop most of the
    chat, or refuse a Continue, on a small model."""
    return min(max_new_tokens, max(context_length // 4, 1))


def within_context(
    model: Any,
    history: Sequence[Message],
    message: Message,
    system_text: str,
    max_new_tokens: int,
) -> list[Message]:
    """``history`` without the messages that cannot fit beside ``message`` (whole turns from the
    oldest end, as the context fitting does); InvalidParams when ``message`` itself cannot fit.

    Only lengths are looked at, so this costs nothing whatever the size of the text. ``model``
    may be None (no chat model loaded: nothing to fit, only the Unicode check applies).
    """
    if model is None:
        check_unicode(system_text, message.words, *(m.words for m in history))
        return list(history)
    context = model.info.context_length
    reserve = reply_reserve(context, max_new_tokens)
    budget = context - reserve
    per_token = max_chars_per_token(model)
    used = _least_tokens(system_text, per_token)
    if used > budget:
        raise InvalidParams(
            f"the system prompt is too long for the model: {len(system_text):,} characters cannot fit "
            f"in its {context:,}-token context; send a shorter one"
        )
    used += _least_tokens(message.words, per_token)
    if used > budget:
        raise InvalidParams(
            f"the message is too long for the model: {len(message.words):,} characters cannot fit in "
            f"its {context:,}-token context ({reserve:,} of them kept for the reply); "
            "send a shorter text or attach less"
        )
    kept: list[Message] = []
    for old in reversed(history):
        used += _least_tokens(old.words, per_token)
        if used > budget:
            break
        kept.append(old)
    kept.reverse()
    check_unicode(system_text, message.words, *(m.words for m in kept))
    return kept
