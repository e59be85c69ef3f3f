"""Pure functions from our data to what the page shows (chat bubbles, status lines)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from assistant.conversation import DocumentAttachment, Message, edit_user_message, version_counts
from assistant.core import Description, ReplyStats

MIC = "🎤"
TRANSCRIBING = f"{MIC} *transcribing…*"
THINKING = "…"
EMPTY_REPLY = "*(the model gave an empty reply)*"
UNEXPECTED = "Something went wrong while answering. The details are in the server log."


def unexpected(request_id: str = "") -> str:
    """UNEXPECTED, naming the turn's id in the server log (for the admin a user tells)."""
    return f"{UNEXPECTED[:-1]}, request {request_id}." if request_id else UNEXPECTED


PARAGRAPH = "\n\n"
# Maths as models write it: $$…$$ and \[…\] as a block, \(…\) inline (KaTeX, Gradio's own
# renderer). A single "$" is left out: the renderer pairs any two, so "$5 or $10" became maths.
LATEX_DELIMITERS: list[dict[str, str | bool]] = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "\\(", "right": "\\)", "display": False},
]


def spoken_text(message: Message) -> str:
    """The voice part of a user bubble: the transcript marked as such (it is what the model
    heard), or a note while the recording is still being transcribed."""
    if message.needs_transcript:
        return TRANSCRIBING
    return f"{MIC} {safe_markdown(message.transcript)}" if message.transcript else ""


def user_text(message: Message) -> str:
    """Typed words, then the spoken part, as a bubble shows them (see :func:`safe_markdown`)."""
    return PARAGRAPH.join(t for t in (safe_markdown(message.text.strip()), spoken_text(message)) if t)


def edited(messages: list[Message], index: int, shown: str) -> tuple[list[Message], Message]:
    """History before user message ``index`` and that message with the words edited in its bubble.

    The bubble showed :func:`user_text`, so the edit is read against exactly that: when the
    spoken part is still there unchanged, only the typed words changed and the transcript stays
    a transcript; when the transcript itself was corrected, the corrected words count as typed
    and the mark this module put before them goes.
    """
    message, shown = messages[index], unescape_shown(shown.strip())
    spoken = unescape_shown(spoken_text(message)) if message.transcript else ""
    if spoken and shown.endswith(spoken):
        return edit_user_message(messages, index, shown.removesuffix(spoken).strip(), message.transcript)
    typed = message.text.strip() + PARAGRAPH if message.text.strip() else ""
    if spoken and shown.startswith(typed + MIC + " "):
        shown = typed + shown[len(typed + MIC + " ") :]
    return edit_user_message(messages, index, shown)


def attachment_files(message: Message) -> list[dict]:
    """What a user bubble shows of its files: photos inline, clips as a playable video, documents
    as a chip with the file's name (the chat's own file views; paths only, nothing read here)."""
    shown: list[dict] = [{"path": str(p)} for p in message.images]
    shown += [{"path": str(p)} for p in message.videos if isinstance(p, (str, Path))]
    shown += [
        {"file": {"path": str(a.source), "orig_name": a.name or Path(str(a.source)).name}}
        for a in message.attachments
        if isinstance(a, DocumentAttachment) and isinstance(a.source, (str, Path))
    ]
    return shown


def bubble(message: Message) -> dict:
    if message.role != "user":
        return {"role": "assistant", "content": safe_markdown(message.text) or EMPTY_REPLY}
    text = user_text(message)
    content: list = attachment_files(message)  # photos, clips and documents shown, text below
    if text or not content:
        content.append(text)
    return {"role": "user", "content": content}


def chat(messages: list[Message], user: Message | None = None, reply: str | None = None) -> list[dict]:
    """The chatbot value: the answered history, then the turn in progress (if any)."""
    shown = [bubble(m) for m in messages]
    if user is not None:
        shown.append(bubble(user))
    if reply is not None:
        shown.append({"role": "assistant", "content": safe_markdown(reply) or THINKING})
    return shown


def versions(messages: list[Message], others: list[Message]) -> str:
    """For the page's "‹ 2/3 ›" arrows (ui/static/page.js): which shown messages have versions,
    as JSON ``{"count": messages shown, "at": {index: [which, how many]}}``."""
    counts = version_counts(messages, others)
    return json.dumps({"count": len(messages), "at": {str(i): list(c) for i, c in counts.items()}})


def when(timestamp: float, now: float | None = None) -> str:
    """A chat's last use as a person says it: the time today, 'yesterday', the weekday this
    week, else the date (server's local time)."""
    import datetime as dt

    then = dt.datetime.fromtimestamp(timestamp)
    today = dt.datetime.fromtimestamp(now if now is not None else time.time()).date()
    days = (today - then.date()).days
    if days <= 0:
        return then.strftime("%H:%M")
    if days == 1:
        return "yesterday"
    if days < 7:
        return then.strftime("%A")
    return then.strftime("%-d %b" if then.year == today.year else "%-d %b %Y")


def queued(position: int) -> str:
    ahead = "1 request" if position == 1 else f"{position} requests"
    return f"*Waiting for the model… {ahead} ahead of you.*"


def stats_line(stats: ReplyStats) -> str:
    """A small line about the last reply: TTFT, speed, length (and anything unusual)."""
    parts = [
        f"{stats.ttft_s:.2f} s to first token",
        f"{stats.tokens_per_s:.1f} tokens/s",
        f"{stats.tokens} tokens",
    ]
    if stats.cached_tokens:
        parts.append(f"{stats.cached_tokens} of {stats.prompt_tokens} prompt tokens cached")
    if stats.queued_s >= 0.5:
        parts.append(f"waited {stats.queued_s:.1f} s for the model")
    if stats.transcribe_s:
        parts.append(f"speech {stats.transcribe_s:.1f} s")
    if stats.sent:  # what of a clip or a document the model got
        parts.append(f"sent {stats.sent}")
    if stats.finish_reason == "cancelled":
        parts.append("stopped")
    elif stats.finish_reason == "length":
        parts.append("hit the length limit (Continue carries it on)")
    return " · ".join(parts)


def no_model(error: str | None) -> str:
    return f"**No chat model is loaded**, so I cannot answer yet.\n\n{error or ''}".strip()


EXAMPLE_MODEL = "HuggingFaceTB/SmolVLM-256M-Instruct"


def hf_cache() -> str:
    """Where downloaded models are kept (HF_HUB_CACHE / HF_HOME, else ~/.cache/huggingface/hub)."""
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:
        return "~/.cache/huggingface/hub"


def banner(error: str | None, model: str | None = None) -> str:
    """The first-run help: what is wrong, and the exact commands that fix it."""
    wanted = model if model and "/" in model and not model.startswith((".", "/", "~")) else EXAMPLE_MODEL
    return (
        f"### The chat model is not available\n{error or 'No chat model is loaded.'}\n\n"
        "**To fix it**, in the project folder:\n\n"
        f"- download a model on a machine with internet: `.venv/bin/hf download {wanted}` "
        f"(models are kept in `{hf_cache()}`; copy that folder to a machine without internet)\n"
        f'- then start with it: `make run ARGS="--model {wanted}"` '
        f"(or `.venv/bin/python app.py --model {wanted}`), or give a local folder: "
        '`make run ARGS="--model /path/to/model"`\n'
        '- only to try the page: `make tiny-model`, then `make run ARGS="--model .cache/tiny-smolvlm"` '
        "(a tiny random model: it answers gibberish)\n\n"
        "Voice transcription still works: recordings are transcribed and shown."
    )


def stand_in(notice: str, model: str | None = None) -> str:
    """The embedded model answers in place of the default one: say so, and how to get that one."""
    wanted = model if model and "/" in model and not model.startswith((".", "/", "~")) else EXAMPLE_MODEL
    return (
        f"### A small text-only model is answering\n{notice}\n\n"
        f"**For a model that sees photos**: download it on a machine with internet, "
        f"`.venv/bin/hf download {wanted}` (kept in `{hf_cache()}`; copy that folder here), "
        "then start again."
    )


def model_info(loaded: Description) -> str:
    info = loaded.chat
    if info is not None:
        dtype = f" · {info.dtype}" if info.dtype else ""
        chat_line = f"**Model:** `{info.name}` · {info.backend} · quantization **{info.quantization}**{dtype} · device **{info.device}** · context {info.context_length} tokens"
        if not info.vision:
            chat_line += " · reads text only (the text in photos and scans is read by OCR)"
    else:
        chat_line = f"**Model:** `{loaded.chat_model}` — not loaded"
    if loaded.speech_model is not None:
        asr_line = f"**Speech:** `{loaded.speech_model}` · device **{loaded.speech_device}**"
    else:
        asr_line = "**Speech:** not loaded"
    return f"{chat_line}\n\n{asr_line}"


# --------------------------------------------------------------------------- safe display

# Raw HTML a chat bubble may keep: these tags, bare (no attributes at all, so no style, no
# event handler, no URL). Every other '<' is shown as text. Code is left as written.
SAFE_TAGS = frozenset(
    (
        *("b", "i", "em", "strong", "u", "s", "del", "mark", "small", "sub", "sup", "kbd", "code"),
        *("pre", "br", "hr", "p", "ul", "ol", "li", "blockquote", "details", "summary"),
        *("h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td"),
    )
)
_FENCE_OPEN = re.compile(r"[ ]{0,3}(`{3,}|~{3,})")
_FENCE_CLOSE = re.compile(r"[ ]{0,3}(`{3,}|~{3,})[ \t]*\r?\n?$")
_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)\s*(/?)>")
_AUTOLINK = re.compile(r"<(?:https?://|mailto:)[^\s<>]*>", re.IGNORECASE)
# Images a bubble may load: our own file routes and inline data (the CSP allows no others).
_OWN_IMAGE = re.compile(r"!\[[^\]\n]*\]\(\s*<?(data:image/|/?gradio_api/file=)([^)\s>]*)", re.IGNORECASE)


def _blocks(text: str) -> list[tuple[bool, str]]:
    """(is fenced code, text) pieces; an unclosed fence (a reply still streaming) runs to the end."""
    pieces: list[tuple[bool, str]] = []
    prose: list[str] = []
    code: list[str] = []
    fence = ""
    for line in text.splitlines(keepends=True):
        if not fence:
            opened = _FENCE_OPEN.match(line)
            if opened and not (opened.group(1)[0] == "`" and "`" in line[opened.end() :]):
                pieces.append((False, "".join(prose)))
                prose, code, fence = [], [line], opened.group(1)
            else:
                prose.append(line)
            continue
        code.append(line)
        closed = _FENCE_CLOSE.match(line)
        if closed and closed.group(1)[0] == fence[0] and len(closed.group(1)) >= len(fence):
            pieces.append((True, "".join(code)))
            code, fence = [], ""
    pieces.append((True, "".join(code)) if fence else (False, "".join(prose)))
    return pieces


def _safe_html(text: str) -> str:
    out, i = [], 0
    while (j := text.find("<", i)) >= 0:
        out.append(text[i:j])
        kept = _TAG.match(text, j)
        if kept is None or kept.group(2).lower() not in SAFE_TAGS:
            kept = _AUTOLINK.match(text, j)
        if kept is not None:
            out.append(kept.group(0))
            i = kept.end()
        else:
            out.append("&lt;")  # shown as the character, never read as markup
            i = j + 1
    out.append(text[i:])
    return "".join(out)


def _safe_prose(text: str) -> str:
    out, i = [], 0
    for span in _SPAN.finditer(text):  # inline code is shown literally by the renderer
        out.append(_safe_html(text[i : span.start()]))
        out.append(span.group(0))
        i = span.end()
    out.append(_safe_html(text[i:]))
    shown = "".join(out)
    # A remote image becomes a link to it: nothing is fetched unless the reader clicks.
    return re.sub(r"!\[", lambda m: m.group(0) if _own_image(shown, m.start()) else "[", shown)


def _own_image(text: str, at: int) -> bool:
    found = _OWN_IMAGE.match(text, at)
    return found is not None and ".." not in found.group(2) and "\\" not in found.group(2)


def safe_markdown(text: str) -> str:
    """Markdown that cannot be turned against its reader (model output may be steered by a
    prompt hidden in a photo): raw HTML other than a few bare formatting tags is shown as text
    (no forms, inputs, inline styles, media, scripts or frames), and images other than our own
    files and data URLs become links. Code is kept as written (the renderer shows it literally)."""
    if "<" not in text and "![" not in text:
        return text
    return "".join(code if is_code else _safe_prose(code) for is_code, code in _blocks(text))


def unescape_shown(text: str) -> str:
    """A bubble's text as :func:`safe_markdown` showed it, back as typed (for editing it)."""
    return text.replace("&lt;", "<")
