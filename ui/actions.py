"""Start a turn: send, regenerate, edit a past message, undo. Each one only rearranges the
tab's history and marks a user message as pending; ``respond`` then answers it."""

from __future__ import annotations

import gradio as gr

from assistant.conversation import for_regenerate, undo_last_turn
from assistant.errors import AssistantError
from ui import inputs, render, sidebar
from ui.respond import busy_box
from ui.session import ChatSession, Pending, unless_busy


@unless_busy(2)
def send(session: ChatSession, value):
    try:
        user = inputs.message(value)
    except AssistantError as exc:
        session.error = str(exc)  # shown by respond.report_error; the box keeps its value
        return gr.skip(), gr.skip()
    if user.is_empty():
        return gr.skip(), gr.skip()
    session.begin(Pending(user, previous=list(session.messages), restore=value))
    return render.chat(session.messages, user, ""), busy_box(clear=True)


@unless_busy(2)
def regenerate(session: ChatSession):
    if len(session.messages) < 2 or session.messages[-1].role != "assistant":
        gr.Info("There is no reply to regenerate yet.")
        return gr.skip(), gr.skip()
    previous = list(session.messages)
    session.messages, user = for_regenerate(session.messages)
    session.begin(Pending(user, previous=previous))
    return render.chat(session.messages, user, ""), busy_box()


@unless_busy(2, restore=lambda session: (render.chat(session.messages), gr.skip()))  # the bubble as it was
def edit(session: ChatSession, data: gr.EditData):
    """A user message was edited in place: answer it again, dropping what followed."""
    index = data.index[0] if isinstance(data.index, (tuple, list)) else data.index
    if not 0 <= index < len(session.messages) or session.messages[index].role != "user":
        return render.chat(session.messages), gr.skip()
    previous = list(session.messages)
    session.messages, user = render.edited(session.messages, index, _edited_text(data.value))
    session.begin(Pending(user, previous=previous))
    return render.chat(session.messages, user, ""), busy_box()


@unless_busy(4)
def undo(store, session: ChatSession):
    """Take back the last exchange; its words return to the input box for another try."""
    if len(session.messages) < 2:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    session.messages, user = undo_last_turn(session.messages)
    sidebar.save(store, session)
    box = gr.MultimodalTextbox(value={"text": user.words if user else "", "files": []})
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
