"""Start a turn: send, regenerate, edit a past message, undo. Each one only rearranges the
tab's history and marks a user message as pending; ``respond`` then answers it."""

from __future__ import annotations

import re
from dataclasses import replace

import gradio as gr

from assistant.errors import AssistantError
from ui import inputs, render, sidebar
from ui.respond import busy_box
from ui.session import ChatSession, Pending

_MIC_MARK = re.compile(rf"(^|\n){re.escape(render.MIC)} ?")


def send(session: ChatSession, value):
    if session.busy:
        gr.Warning(sidebar.BUSY)
        return gr.skip(), gr.skip()
    try:
        text, images, audio = inputs.split(value)
    except AssistantError as exc:
        session.error = str(exc)  # shown by respond.report_error; the box keeps its value
        return gr.skip(), gr.skip()
    if not text.strip() and not images and audio is None:
        return gr.skip(), gr.skip()
    user = inputs.user_message(text, images)
    session.begin(Pending(user, audio, previous=list(session.messages), restore=value))
    return render.chat(session.messages, user, "", transcribing=audio is not None), busy_box(clear=True)


def regenerate(session: ChatSession):
    if session.busy:
        gr.Warning(sidebar.BUSY)
        return gr.skip(), gr.skip()
    if len(session.messages) < 2 or session.messages[-1].role != "assistant":
        gr.Info("There is no reply to regenerate yet.")
        return gr.skip(), gr.skip()
    previous = list(session.messages)
    user = session.messages[-2]
    session.messages = session.messages[:-2]
    session.begin(Pending(user, previous=previous))
    return render.chat(session.messages, user, ""), busy_box()


def edit(session: ChatSession, data: gr.EditData):
    """A user message was edited in place: answer it again, dropping what followed."""
    index = data.index[0] if isinstance(data.index, (tuple, list)) else data.index
    if session.busy or not 0 <= index < len(session.messages) or session.messages[index].role != "user":
        if session.busy:
            gr.Warning(sidebar.BUSY)
        return render.chat(session.messages), gr.skip()  # put the bubble back as it was
    text = _MIC_MARK.sub(r"\1", _edited_text(data.value)).strip()
    previous = list(session.messages)
    user = replace(session.messages[index], text=text, transcript=None)
    session.messages = session.messages[:index]
    session.begin(Pending(user, previous=previous))
    return render.chat(session.messages, user, ""), busy_box()


def undo(store, session: ChatSession):
    """Take back the last exchange; its words return to the input box for another try."""
    if session.busy:
        gr.Warning(sidebar.BUSY)
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    if len(session.messages) < 2:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    user = session.messages[-2]
    session.messages = session.messages[:-2]
    sidebar.save(store, session)
    box = gr.MultimodalTextbox(value={"text": user.words, "files": []})
    return render.chat(session.messages), "", box, sidebar.history_update(store, session)


def stop(session: ChatSession) -> None:
    session.stop()


def _edited_text(value) -> str:
    """The text of an edited bubble (Gradio may hand over a string or a list of parts)."""
    if isinstance(value, str):
        return value
    parts = value if isinstance(value, list) else [value]
    texts = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type") == "text":
            texts.append(part.get("text", ""))
    return "\n".join(texts)
