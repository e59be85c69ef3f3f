"""Cut a reply that is still streaming into pieces a voice can read, as soon as each is complete.

    pieces = Speakable()
    for chunk in tokens:
        for text in pieces.feed(chunk):   # whole sentences (long ones cut at a comma; the
            speak(text)                   # first one ends sooner, see below)
    for text in pieces.flush():           # what is left once the reply has ended
        speak(text)

The input is the reply's Markdown. What a listener would not want read out is dropped or
rewritten: fenced code blocks and tables are skipped, headings and list items become pieces of
their own (their markers removed), ``**emphasis**``/``_emphasis_``/``~~strike~~`` and inline
code ticks are removed, ``[text](url)`` is read as its text, a bare URL as its host name, HTML
tags, emoji and control characters (a NUL would stop the voice) are dropped. A sentence ends at
``.``, ``!``, ``?`` or ``…`` followed by a space and a new sentence, not after an abbreviation
(``Dr.``, ``e.g.``, ``U.S.``), an initial (``J. R. Tolkien``) or inside a number (``3.14``); a
newline always ends a piece.

The first piece of a reply ends sooner, so that the voice can start: at a comma, semicolon, colon
or dash once it has FIRST_CLAUSE_WORDS words, else after FIRST_WORDS words (never after an
abbreviation or an initial, nor inside a link or inline code). Later pieces stay whole sentences,
which sound better.

Pure text processing (no model, no I/O), so it runs on the caller's thread at no cost.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable

LONG = 160  # a sentence longer than this is cut at a comma (or semicolon, colon, dash)
MIN_CUT = 40  # ...but never before this many characters
HARD = 280  # no comma either: cut at a space
# The first piece is said while the rest is still being written: it need not be a sentence.
FIRST_CLAUSE_WORDS = 4  # it ends at a clause mark once it has this many words...
FIRST_WORDS = 6  # ...or after this many words when no clause mark comes

ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "vs",
        "etc",
        "approx",
        "appr",
        "fig",
        "figs",
        "no",
        "nos",
        "vol",
        "vols",
        "ed",
        "eds",
        "inc",
        "ltd",
        "co",
        "corp",
        "dept",
        "est",
        "al",
        "cf",
        "ca",
        "min",
        "max",
        "sec",
        "hr",
        "hrs",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "mon",
        "tue",
        "tues",
        "wed",
        "thu",
        "thurs",
        "fri",
        "sat",
        "sun",
        "ave",
        "blvd",
        "rd",
        "gen",
        "gov",
        "sen",
        "rep",
        "lt",
        "col",
        "sgt",
        "capt",
        "cmdr",
        "adm",
        "p",
        "pp",
        "ch",
        "sec",
        "eq",
        "eqs",
        "ref",
        "refs",
        "op",
        "viz",
        "resp",
        "incl",
    ]
)

_MARKER = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+(?=\S)")  # a list item's bullet or number
_HEADING = re.compile(r"^\s*#{1,6}\s+(?=\S)")
_QUOTE = re.compile(r"^\s*(?:>\s*)+")
_FENCE = re.compile(r"^\s*(```|~~~)")
_RULE = re.compile(r"^\s*(?:[-*_]\s*){3,}$")
_TABLE = re.compile(r"^\s*\|")
# A line start that could still become any of the above: wait for more text.
_UNDECIDED = re.compile(r"^\s*(?:[-*+•_]{1,3}|\d{1,3}[.)]?|#{1,6}|>|`{1,2}|~{1,2})?\s*$")

_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
_URL = re.compile(r"\b(?:https?://|www\.)([^\s/<>)\]]+)[^\s<>)\]]*", re.IGNORECASE)
_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_EMPHASIS = re.compile(r"(\*{1,3}|~~)(?=\S)(.+?)(?<=\S)\1")
_UNDERSCORE = re.compile(r"(?<![\w])(_{1,3})(?=\S)(.+?)(?<=\S)\1(?![\w])")
_STRAY_MARKS = re.compile(r"(?<![\w])[*_~`#|]+|[*_~`#|]+(?![\w])")
_SPACES = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # NUL stops espeak mid-reply
_SPEAKABLE = re.compile(r"[^\W_]", re.UNICODE)  # a letter or digit: something to say

# A candidate end of sentence: the marks, any closing quotes/brackets/emphasis, then a space.
_END = re.compile(r"([.!?…]+|[。！？])[\"'”’)\]*_]*(?=\s)")
_CUT_AT = re.compile(r"[,;:](?=\s)|\s[-–—](?=\s)")
_WORD_END = re.compile(r"\S(?=\s)")  # the last character of a word that is complete


def _is_emoji(ch: str) -> bool:
    code = ord(ch)
    if 0x1F000 <= code <= 0x1FAFF or 0x2600 <= code <= 0x27BF or 0x1F900 <= code <= 0x1F9FF:
        return True
    if code in (0x200D, 0xFE0F, 0xFE0E, 0x20E3) or 0x1F3FB <= code <= 0x1F3FF:
        return True
    return unicodedata.category(ch) == "So"


def _host(match: re.Match) -> str:
    """A bare URL is read as its host name; the sentence's own punctuation after it stays."""
    url = match.group(0)
    tail = url[len(url.rstrip(".,;:!?")) :]
    return match.group(1).removeprefix("www.").rstrip(".,;:!?") + tail


def clean(text: str) -> str:
    """One line (or part of one) of Markdown as the words to say."""
    text = html.unescape(text)
    text = _CONTROL.sub(" ", text)
    text = _IMAGE.sub(lambda m: m.group(1), text)
    text = _LINK.sub(lambda m: m.group(1), text)
    text = _AUTOLINK.sub(lambda m: m.group(1), text)
    text = _URL.sub(_host, text)
    text = _TAG.sub(" ", text)
    for _ in range(2):  # ***both*** and nested emphasis
        text = _EMPHASIS.sub(lambda m: m.group(2), text)
        text = _UNDERSCORE.sub(lambda m: m.group(2), text)
    text = text.replace("`", "")
    text = _STRAY_MARKS.sub(" ", text)
    text = "".join(" " if _is_emoji(ch) else ch for ch in text)
    text = _SPACES.sub(" ", text).strip()
    text = re.sub(r"\s+([,.;:!?…])", r"\1", text)  # "word ." left by a dropped emoji or mark
    return text if _SPEAKABLE.search(text) else ""


def _word_before(text: str, end: int) -> str:
    start = end
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] in ".'’-"):
        start -= 1
    return text[start:end]


def sentence_end(text: str, start: int = 0) -> int | None:
    """Index just after the first complete sentence of ``text`` from ``start``, or None.

    A "." ends a sentence only when the next word is known and starts like a sentence (not in
    lower case), and the word before it is no abbreviation, initial or dotted acronym.
    """
    for match in _END.finditer(text, start):
        marks, after = match.group(1), match.end()
        rest = text[after:].lstrip()
        if not rest:
            if marks[0] in "!?…。！？" or len(marks) > 1:
                return after  # "!" and "?" need no next word, a space after them suffices
            return None  # "Dr. " at the end so far: the next word decides
        if marks in ("!", "?", "?!", "!?", "。", "！", "？") or marks.startswith(("!", "?")):
            return after
        nxt = rest[0]
        if nxt.islower():
            continue  # "e.g. the", "approx. ten": not a new sentence
        if marks == "." and _shortened(_word_before(text, match.start(1))):
            continue
        return after
    return None


def _abbreviated(text: str, end: int) -> bool:
    """The word that ends at ``end`` is an abbreviation, initial or dotted acronym (``Dr.``,
    ``J.``, ``U.S.``): the name or word after it belongs with it."""
    head = text[:end].rstrip("\"'”’)]*_")
    word = _word_before(head, len(head))
    return word.endswith(".") and _shortened(word, any_case=True)


def _shortened(word: str, any_case: bool = False) -> bool:
    """``word`` (its dot or not) is an abbreviation, dotted acronym or initial: Dr. / e.g. /
    U.S. / J. (an initial in capitals only, unless ``any_case``)."""
    bare = word.rstrip(".").lower()
    if not bare:
        return False
    if bare in ABBREVIATIONS or "." in bare:
        return True
    return len(bare) == 1 and bare.isalpha() and (any_case or word[:1].isupper())


def first_cut(text: str, before: int | None = None) -> int | None:
    """Where the first piece of a reply may end before its sentence does (before ``before``):
    at the first clause mark once FIRST_CLAUSE_WORDS words are said, or after FIRST_WORDS words,
    whichever comes first (so that streaming it in any chunks cuts it at the same place)."""
    limit = len(text) if before is None else before
    clauses = [(m.end(), FIRST_CLAUSE_WORDS) for m in _CUT_AT.finditer(text, 0, limit)]
    words = [(m.end(), FIRST_WORDS) for m in _WORD_END.finditer(text, 0, limit)]
    for end, needed in sorted(clauses + words):
        head = text[:end]
        if needed == FIRST_WORDS and _abbreviated(text, end):
            continue  # "Dr." / "J." / "U.S." go with the word after them
        # An HTML tag (its attributes have spaces) would be read out if cut in two.
        if _words(head) >= needed and _closed(head) and head.count("<") <= head.count(">"):
            return end
    return None


def _words(text: str) -> int:
    """Words the listener would hear (a URL is one, its host; marks and emoji are none)."""
    return len(clean(text).split())


def long_cut(text: str) -> int | None:
    """Where to cut a sentence that runs long without ending: after its last comma (or ;, :,
    dash) between MIN_CUT and LONG characters, else at a space once it passes HARD."""
    if len(text) < LONG:
        return None
    best = None
    for match in _CUT_AT.finditer(text, MIN_CUT, LONG + 40):
        best = match.end()
    if best is not None:
        return best
    if len(text) >= HARD:
        space = text.rfind(" ", MIN_CUT, HARD)
        return space if space > 0 else HARD
    return None


class Speakable:
    """Feed streamed Markdown; get back the pieces that are complete, in order."""

    def __init__(self) -> None:
        self._line = ""  # raw text of the line being written (after what was already cut)
        self._kind: str | None = None  # prose | item | heading | fence | table | rule, once known
        self._in_code = False
        self._started = False  # a piece was given out: the rest are whole sentences

    def feed(self, chunk: str) -> list[str]:
        out: list[str] = []
        self._line += chunk
        while "\n" in self._line:
            line, self._line = self._line.split("\n", 1)
            out.extend(self._end_line(line))
        out.extend(self._partial())
        return out

    def flush(self) -> list[str]:
        """The rest, once the reply has ended (an unclosed code block is still skipped)."""
        line, self._line = self._line, ""
        out = self._end_line(line) if line else []
        self._kind, self._in_code, self._started = None, False, False
        return out

    # -- lines ------------------------------------------------------------------------------

    def _classify(self, line: str) -> str | None:
        """What the line is, or None while its first characters leave it open."""
        if self._in_code:
            if _FENCE.match(line):
                return "fence"
            return None if re.match(r"^\s*(`{1,2}|~{1,2})?$", line) else "code"
        if _FENCE.match(line):
            return "fence"
        if _TABLE.match(line):
            return "table"
        if _UNDECIDED.match(line):
            return None
        if _RULE.match(line):
            return "rule"
        if _HEADING.match(line):
            return "heading"
        if _MARKER.match(line):
            return "item"
        return "prose"

    def _start(self, kind: str, line: str) -> str:
        """Note what the line is; its text without the bullet, number, hashes or quote marks."""
        self._kind = kind
        if kind in ("item", "heading"):
            line = _HEADING.sub("", _MARKER.sub("", line, count=1), count=1)
        if kind in ("prose", "item", "heading"):
            line = _QUOTE.sub("", line, count=1)
        return line

    def _end_line(self, line: str) -> list[str]:
        """A line is complete (``line``: what of it was not cut off yet); it ends a piece."""
        kind = self._kind
        if kind is None:
            kind = self._classify(line)
            if kind is None:
                kind = "rule" if _RULE.match(line) else "prose"
            line = self._start(kind, line)
        self._kind = None
        if kind == "fence":
            self._in_code = not self._in_code
            return []
        if kind in ("code", "table", "rule"):
            return []
        # A heading is one piece (and is here only once its line is complete, so it waits for
        # nothing), so it is not cut short even when it comes first.
        quick = not self._started and kind != "heading"
        pieces, _ = _sentences(line, final=True, quick=quick)
        self._started = self._started or bool(pieces)
        return pieces

    def _partial(self) -> list[str]:
        """Sentences already complete in the line still being written."""
        if self._kind is None:
            kind = self._classify(self._line)
            if kind is None:
                return []
            self._line = self._start(kind, self._line)
        if self._kind not in ("prose", "item"):
            return []  # a heading is one piece, said when its line ends; code is not said
        pieces, self._line = _sentences(self._line, final=False, quick=not self._started)
        self._started = self._started or bool(pieces)
        return pieces


def _sentences(text: str, final: bool, quick: bool = False) -> tuple[list[str], str]:
    """Cut complete sentences off ``text``: (the pieces, what stays unfinished). ``final``: the
    line has ended, so the rest is a piece too. ``quick``: the first piece is the reply's first,
    which may end before its sentence does (:func:`first_cut`)."""
    out: list[str] = []
    while True:
        end = _safe_end(text)
        if quick and not out:
            end = first_cut(text, end) or end
        if end is None:
            end = long_cut(text)
        if end is None:
            break
        piece, text = text[:end], text[end:].lstrip()
        said = clean(piece)
        if said:
            out.append(said)
    if final:
        said = clean(text)
        if said:
            out.append(said)
        text = ""
    return out, text


def _safe_end(text: str) -> int | None:
    """A sentence end that is not inside inline code, a link or emphasis still being written."""
    start = 0
    while True:
        end = sentence_end(text, start)
        if end is None:
            return None
        if _closed(text[:end]):
            return end
        start = end


def _closed(head: str) -> bool:
    """No inline code, link or bracket is left open at the end of ``head``."""
    return (
        head.count("`") % 2 == 0 and head.count("[") <= head.count("]") and head.count("(") <= head.count(")")
    )


def split(text: str) -> list[str]:
    """All the pieces of a whole text (what streaming it chunk by chunk would give)."""
    pieces = Speakable()
    return pieces.feed(text) + pieces.flush()


def streamed(chunks: Iterable[str]) -> list[str]:
    pieces = Speakable()
    out: list[str] = []
    for chunk in chunks:
        out.extend(pieces.feed(chunk))
    return out + pieces.flush()


# -- which language a reply is in ------------------------------------------------------------

_STOPWORDS = {
    "en": "the and is are of to in that it you for with this was have not be on what",
    "es": "el la los las es son de que y en un una por para con no lo se del al como",
    "fr": "le la les est sont de des que et en un une pour avec pas ne ce il je vous du",
    "de": "der die das ist sind und nicht ein eine zu mit den dem ich sie es auf für auch",
    "it": "il lo la gli le è sono di che e un una per con non del della sono anche",
    "pt": "o a os as é são de que e em um uma para com não do da no na também",
    "nl": "de het een is zijn en van dat niet met voor op ik je ook",
}
_WORDS = {lang: frozenset(words.split()) for lang, words in _STOPWORDS.items()}
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def guess_language(text: str, sure: bool = False) -> str | None:
    """ISO 639-1 code of a reply's language by its commonest short words (en, es, fr, de, it, pt,
    nl), or None when it is too short to tell or uses none of them (``sure``: or when two
    languages tie, however short the text). Cheap; meant for choosing a voice, not for
    linguistics."""
    words = [w.lower() for w in _WORD.findall(text)[:400]]
    if len(words) < 3:
        return None
    scores = {lang: sum(w in vocab for w in words) for lang, vocab in _WORDS.items()}
    best = max(scores, key=lambda lang: scores[lang])
    if scores[best] == 0:
        return None
    ranked = sorted(scores.values(), reverse=True)
    if (sure or len(words) >= 6) and ranked[0] == ranked[1]:
        return None
    return best
