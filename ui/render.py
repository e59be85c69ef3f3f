"""Pure functions from our data to what the page shows (chat bubbles, status lines)."""

from __future__ import annotations

from assistant.store import StoredMessage

MIC = "🎤"
TRANSCRIBING = f"{MIC} *transcribing…*"
THINKING = "…"
EMPTY_REPLY = "*(the model gave an empty reply)*"


def user_text(message: StoredMessage, transcribing: bool = False) -> str:
    """Typed words, then the transcript marked as such (it is what the model heard)."""
    spoken = TRANSCRIBING if transcribing else (f"{MIC} {message.transcript}" if message.transcript else "")
    return "\n\n".join(t for t in (message.text.strip(), spoken) if t)


def bubble(message: StoredMessage, transcribing: bool = False) -> dict:
    if message.role != "user":
        return {"role": "assistant", "content": message.text or EMPTY_REPLY}
    text = user_text(message, transcribing)
    content: list = [{"path": p} for p in message.images]  # photos shown inline, text below
    if text or not content:
        content.append(text)
    return {"role": "user", "content": content}


def chat(messages: list[StoredMessage], user: StoredMessage | None = None, reply: str | None = None, transcribing: bool = False) -> list[dict]:
    """The chatbot value: the answered history, then the turn in progress (if any)."""
    shown = [bubble(m) for m in messages]
    if user is not None:
        shown.append(bubble(user, transcribing))
    if reply is not None:
        shown.append({"role": "assistant", "content": reply or THINKING})
    return shown


def queued(position: int) -> str:
    ahead = "1 request" if position == 1 else f"{position} requests"
    return f"⏳ *Waiting for the model… {ahead} ahead of you.*"


def stats_line(stats) -> str:
    """A small line about the last reply: TTFT, speed, length (and anything unusual)."""
    parts = [f"{stats.ttft_s:.2f} s to first token", f"{stats.tokens_per_s:.1f} tokens/s", f"{stats.tokens} tokens"]
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


def model_info(assistant, settings) -> str:
    model = assistant.chat_model
    if model is not None:
        info = model.info
        chat_line = f"**Model:** `{info.name}` · {info.backend} · quantization **{info.quantization}** · device **{info.device}** · context {info.context_length} tokens"
    else:
        chat_line = f"**Model:** `{settings.model}` — not loaded"
    asr = getattr(assistant.transcriber, "name", None) or settings.asr_model
    asr_device = getattr(assistant.transcriber, "device", settings.asr_device)
    asr_line = f"**Speech:** `{asr}` · device **{asr_device}**" if assistant.transcriber is not None else "**Speech:** not loaded"
    return f"{chat_line}\n\n{asr_line}"
