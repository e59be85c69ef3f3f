"""Documents: PDFs (pages rendered with PDFium, the text layer read) and plain text / Markdown.

:func:`load_document` validates a file and reads its text; :func:`render_pages` draws chosen
pages as photos within a pixel budget. Which pages a model sees is :func:`pages_to_show`: the
first few and the ones the question names ("page 7", "pages 3-5"). Every problem — too big,
too many pages, a page larger than any paper, a password, damage, an HTML page named ``.pdf`` —
is a :class:`MediaError` naming the file and saying what is wrong.

PDFs are parsed by pypdfium2 (PDFium's Python binding; Apache-2.0 / BSD-3-Clause) in worker
processes (:mod:`assistant.media.pdf_worker`), never in this one: PDFium is not thread-safe, and a
small PDF can hold page content that inflates to gigabytes of drawing operators. Each worker
has a memory cap and each document a CPU-time limit; two documents are read in parallel, and
a bomb only costs the worker it landed on. No torch here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from assistant.errors import MediaError
from assistant.media import pdf_worker
from assistant.media.source import SNIFF_BYTES, label_for, looks_like, read_bytes
from assistant.settings import (
    DOCUMENT_PAGE_IMAGES,
    IMAGE_MAX_SIDE,
    MAX_DOCUMENT_BYTES,
    MAX_DOCUMENT_PAGES,
    MAX_PAGE_INCHES,
)

DOCUMENT_HINT = "Send a PDF, a plain-text or a Markdown file."
POINTS_PER_INCH = pdf_worker.POINTS_PER_INCH
# Pixels rendered for one document at most (pages beyond it are given as text only).
RENDER_BUDGET_PIXELS = 40_000_000
_PAGE_WORDS = re.compile(r"\b(?:pages?|p\.|pp\.)\s*(\d{1,5})(?:\s*(?:-|–|to|and|&)\s*(\d{1,5}))?", re.I)


class NamedData(bytes):
    """A file's bytes with the name it was sent under (an API client's ``filename``)."""

    name: str

    def __new__(cls, data: bytes, name: str) -> NamedData:
        made = super().__new__(cls, data)
        made.name = name
        return made


@dataclass(frozen=True)
class Page:
    number: int  # 1-based, as people count
    text: str  # the text layer ("" for a scanned page)
    width_pt: float = 0.0
    height_pt: float = 0.0


@dataclass(frozen=True)
class Document:
    name: str
    kind: str  # "pdf" | "text"
    pages: tuple[Page, ...]  # a text file is one page
    source: Any = field(default=b"", repr=False)  # path or bytes, for rendering

    @property
    def page_count(self) -> int:
        return len(self.pages)

    @property
    def text(self) -> str:
        return "\n\n".join(p.text for p in self.pages if p.text)

    @property
    def has_text(self) -> bool:
        return any(p.text.strip() for p in self.pages)


def _text_file(data: bytes, label: str) -> Document:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MediaError(f"{label} is not UTF-8 text. {DOCUMENT_HINT}") from None
    if "\x00" in text:
        raise MediaError(f"{label} is not a text file (it holds binary data). {DOCUMENT_HINT}")
    if not text.strip():
        raise MediaError(f"{label} is empty (no text in it)")
    return Document(label, "text", (Page(1, text.strip()),), data)


def load_document(
    source,
    *,
    max_bytes: int | None = MAX_DOCUMENT_BYTES,
    max_pages: int | None = MAX_DOCUMENT_PAGES,
    max_page_inches: float | None = MAX_PAGE_INCHES,
    name: str | None = None,
) -> Document:
    """A validated document with the text of every page (PDF) or the whole text (text files)."""
    label = label_for(source, name or getattr(source, "name", None), "document")
    data = read_bytes(source, max_bytes, label)
    seen = looks_like(data[:SNIFF_BYTES])
    if seen == "text":
        return _text_file(data, label)
    if seen != "PDF":
        if b"%PDF-" in data[:1024]:  # junk before the header: PDFium (and readers) allow it
            seen = "PDF"
        else:
            looks = f"looks like {seen.removesuffix(' image')}" if seen else "unrecognised content"
            raise MediaError(f"{label} is not a PDF or a text file ({looks}). {DOCUMENT_HINT}")
    sizes_and_texts = pdf_worker.POOL.read(data, label, max_pages, max_page_inches)
    pages = tuple(Page(i + 1, text, w, h) for i, (w, h, text) in enumerate(sizes_and_texts))
    return Document(label, "pdf", pages, source if not isinstance(source, bytes) else data)


def pages_named(question: str, page_count: int) -> list[int]:
    """The pages a question asks about ("page 7", "pages 3-5", "p. 2"), within the document."""
    wanted: list[int] = []
    for m in _PAGE_WORDS.finditer(question or ""):
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) else first
        if last < first or last - first > 50:
            last = first
        wanted.extend(n for n in range(first, last + 1) if 1 <= n <= page_count and n not in wanted)
    return wanted


def pages_to_show(document: Document, question: str, count: int = DOCUMENT_PAGE_IMAGES) -> list[int]:
    """Page numbers rendered for the model: the ones the question names, then the first ones,
    ``count`` in all (named pages first, so asking for page 40 of 90 shows page 40)."""
    if document.kind != "pdf" or count <= 0:
        return []
    chosen = pages_named(question, document.page_count)[:count]
    for n in range(1, document.page_count + 1):
        if len(chosen) >= count:
            break
        if n not in chosen:
            chosen.append(n)
    return sorted(chosen)


def render_pages(
    document: Document,
    numbers: Iterable[int],
    *,
    max_side: int = IMAGE_MAX_SIDE,
    budget_pixels: int = RENDER_BUDGET_PIXELS,
) -> list[tuple[int, Image.Image]]:
    """(page number, RGB photo) for each of ``numbers``, longest side ``max_side``, drawn with
    forms and annotations, on white. Pages past the pixel budget are left out."""
    if document.kind != "pdf":
        return []
    data = document.source
    if not isinstance(data, (bytes, bytearray)):
        data = read_bytes(data, None, document.name)
    wanted = []
    for n in numbers:
        page_info = document.pages[n - 1]
        longest = max(page_info.width_pt, page_info.height_pt, 1.0)
        scale = max_side / longest
        wanted.append((n, scale, round(page_info.width_pt * scale) * round(page_info.height_pt * scale)))
    if not wanted:
        return []
    return pdf_worker.POOL.render(bytes(data), document.name, wanted, budget_pixels)


def for_model(
    document: Document,
    shown: list[int],
    max_chars: int,
    read: dict[int, str] | None = None,
    pictures: bool = True,
) -> str:
    """The text a model reads about a document: what it is, which pages it sees as pictures,
    then the text of the pages (each marked), cut at ``max_chars`` with a note saying so.
    ``read``: the text OCR found on pages without a text layer; ``pictures``: False for a model
    that cannot see them."""
    read = read or {}
    if document.kind == "text":
        body = document.text
        head = f"[document {document.name}]"
        if len(body) > max_chars:
            body = (
                body[:max_chars]
                + f"\n[… the rest of {document.name} ({len(document.text) - max_chars:,} characters) does not fit]"
            )
        return f"{head}\n{body}"
    pictured = f"; pages shown as pictures: {', '.join(map(str, shown))}" if shown and pictures else ""
    no_text = ""
    if not document.has_text:
        no_text = "; it has no text layer (a scan)" + (": read the pictures" if pictures and not read else "")
    head = f"[document {document.name}: PDF, {document.page_count} page{'s' * (document.page_count != 1)}{pictured}{no_text}]"
    parts, used = [head], 0
    for page in document.pages:
        text = page.text or read.get(page.number, "")
        if not text:
            continue
        how = "" if page.text else " (text read by OCR)"
        block = f"--- page {page.number}{how} ---\n{text}"
        if used + len(block) > max_chars:
            room = max_chars - used
            if room > 200:
                parts.append(block[:room] + " …")
            rest = [
                p.number for p in document.pages if p.number > page.number and (p.text or p.number in read)
            ]
            parts.append(
                f"[text of page {page.number}{' onwards' if rest else ''} left out: it does not fit]"
            )
            break
        parts.append(block)
        used += len(block)
    return "\n".join(parts)
