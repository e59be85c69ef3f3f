"""Pure functions from our data to what the page shows (chat bubbles, status lines)."""

from __future__ import annotations

from assistant.conversation import Message, edit_user_message
from assistant.core import Description, ReplyStats

MIC = "🎤"
TRANSCRIBING = f"{MIC} *transcribing…*"
THINKING = "…"
EMPTY_REPLY = "*(the model gave an empty reply)*"
UNEXPECTED = "Something went wrong while answering. The details are in the server log."
PARAGRAPH = "\n\n"


def spoken_text(message: Message) -> str:
    """The voice part of a user bubble: the transcript marked as such (it is what the model
    heard), or a note while the recording is still being transcribed."""
    if message.needs_transcript:
        return TRANSCRIBING
    return f"{MIC} {message.transcript}" if message.transcript else ""


def user_text(message: Message) -> str:
    """Typed words, then the spoken part."""
    return PARAGRAPH.join(t for t in (message.text.strip(), spoken_text(message)) if t)


def edited(messages: list[Message], index: int, shown: str) -> tuple[list[Message], Message]:
    """History before user message ``index`` and that message with the words edited in its bubble.

    The bubble showed :func:`user_text`, so the edit is read against exactly that: when the
    spoken part is still there unchanged, only the typed words changed and the transcript stays
    a transcript; when the transcript itself was corrected, the corrected words count as typed
    and the mark this module put before them goes.
    """
    message, shown = messages[index], shown.strip()
    spoken = spoken_text(message) if message.transcript else ""
    if spoken and shown.endswith(spoken):
        return edit_user_message(messages, index, shown.removesuffix(spoken).strip(), message.transcript)
    typed = message.text.strip() + PARAGRAPH if message.text.strip() else ""
    if spoken and shown.startswith(typed + MIC + " "):
        shown = typed + shown[len(typed + MIC + " ") :]
    return edit_user_message(messages, index, shown)


def bubble(message: Message) -> dict:
    if message.role != "user":
        return {"role": "assistant", "content": message.text or EMPTY_REPLY}
    text = user_text(message)
    content: list = [{"path": str(p)} for p in message.images]  # photos shown inline, text below
    if text or not content:
        content.append(text)
    return {"role": "user", "content": content}


def chat(messages: list[Message], user: Message | None = None, reply: str | None = None) -> list[dict]:
    """The chatbot value: the answered history, then the turn in progress (if any)."""
    shown = [bubble(m) for m in messages]
    if user is not None:
        shown.append(bubble(user))
    if reply is not None:
        shown.append({"role": "assistant", "content": reply or THINKING})
    return shown


def queued(position: int) -> str:
    ahead = "1 request" if position == 1 else f"{position} requests"
    return f"⏳ *Waiting for the model… {ahead} ahead of you.*"


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
    if stats.finish_reason == "cancelled":
        parts.append("stopped")
    elif stats.finish_reason == "length":
        parts.append("hit the length limit")
    return " · ".join(parts)


def no_model(error: str | None) -> str:
    return f"⚠️ **No chat model is loaded**, so I cannot answer yet.\n\n{error or ''}".strip()


def banner(error: str | None) -> str:
    return (
        f"### ⚠️ The chat model is not available\n{error or 'No chat model is loaded.'}\n\n"
        "Voice transcription still works: recordings are transcribed and shown."
    )


def model_info(loaded: Description) -> str:
    info = loaded.chat
    if info is not None:
        dtype = f" · {info.dtype}" if info.dtype else ""
        chat_line = f"**Model:** `{info.name}` · {info.backend} · quantization **{info.quantization}**{dtype} · device **{info.device}** · context {info.context_length} tokens"
    else:
        chat_line = f"**Model:** `{loaded.chat_model}` — not loaded"
    if loaded.speech_model is not None:
        asr_line = f"**Speech:** `{loaded.speech_model}` · device **{loaded.speech_device}**"
    else:
        asr_line = "**Speech:** not loaded"
    return f"{chat_line}\n\n{asr_line}"
