"""Start a turn: send, regenerate, edit a past message, undo. Each one only rearranges the
tab's history and marks a user message as pending; ``respond`` then answers it.

Text that is not valid Unicode (a lone UTF-16 surrogate, which a browser can send) is refused
here, before it is shown: Gradio could not encode a chat holding it, and the tab's event
stream would end. The box (or the edited bubble) keeps what was typed."""

from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from assistant import limits
from assistant.conversation import answered, branch_off, for_regenerate, new_id, undo_last_turn
from assistant.conversation import switch_version as switch_version_of
from assistant.errors import AssistantError
from ui import inputs, render, settings_panel, sidebar
from ui.respond import busy_box
from ui.session import ChatSession, Pending, unless_busy


@unless_busy(2)
def send(session: ChatSession, value):
    try:
        user = inputs.message(value)
        limits.check_unicode(user.text)
    except AssistantError as exc:
        session.error = str(exc)  # shown by respond.report_error; the box keeps its value
        return gr.skip(), gr.skip()
    if user.is_empty():
        return gr.skip(), gr.skip()
    session.begin(Pending(user, previous=list(session.messages), restore=value, appends=True))
    return render.chat(session.messages, user, ""), busy_box(clear=True)


@unless_busy(2)
def regenerate(session: ChatSession):
    if len(session.messages) < 2 or session.messages[-1].role != "assistant":
        gr.Info("There is no reply to regenerate yet.")
        return gr.skip(), gr.skip()
    previous = list(session.messages)
    session.messages, user = for_regenerate(session.messages)
    # The old reply stays as a version: "‹ 1/2 ›" brings it back.
    session.begin(Pending(user, previous=previous, replaced=branch_off(previous, len(session.messages) + 1)))
    return render.chat(session.messages, user, ""), busy_box()


@unless_busy(2)
def continue_reply(session: ChatSession):
    """Carry on the last reply from where it stopped (it hit the length limit, or was stopped)."""
    if len(session.messages) < 2 or session.messages[-1].role != "assistant":
        gr.Info("There is no reply to continue yet.")
        return gr.skip(), gr.skip()
    previous = list(session.messages)
    reply = previous[-1]
    session.messages, user = for_regenerate(session.messages)
    session.begin(Pending(user, previous=previous, continues=reply))
    return render.chat(session.messages, user, reply.text), busy_box()


@unless_busy(1)
def switch_version(store, session: ChatSession, pick: str):
    """Show another version of a message: ``pick`` is "INDEX:STEP[:NONCE]" (from the page's
    ‹ › arrows; the nonce makes pressing the same arrow twice a change). Returns the chat and
    the stats line, emptied: it described a reply that may no longer be shown."""
    try:
        index, step = (int(part) for part in (pick or "").split(":")[:2])
    except ValueError:
        return gr.skip(), gr.skip()
    if not 0 <= index < len(session.messages) or step not in (-1, 1):
        return gr.skip(), gr.skip()
    session.messages, session.others = switch_version_of(session.messages, session.others, index, step)
    sidebar.save(store, session)
    return render.chat(session.messages), ""


@unless_busy(2, restore=lambda session: (render.chat(session.messages), gr.skip()))  # the bubble as it was
def edit(session: ChatSession, data: gr.EditData):
    """A user message was edited in place: answer it again, dropping what followed."""
    index = data.index[0] if isinstance(data.index, (tuple, list)) else data.index
    if not 0 <= index < len(session.messages) or session.messages[index].role != "user":
        return render.chat(session.messages), gr.skip()
    text = _edited_text(data.value)
    try:
        limits.check_unicode(text)
    except AssistantError as exc:
        session.error = str(exc)  # shown by respond.report_error; the bubble keeps the edit
        return gr.skip(), gr.skip()
    previous = list(session.messages)
    session.messages, user = render.edited(session.messages, index, text)
    # What the edit replaces (the old message and what followed) stays as a version.
    session.begin(Pending(user, previous=previous, replaced=branch_off(previous, index)))
    return render.chat(session.messages, user, ""), busy_box()


@unless_busy(4)
def undo(store, session: ChatSession):
    """Take back the last exchange; its words and photos return to the input box for another try."""
    if len(session.messages) < 2:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    session.messages, user = undo_last_turn(session.messages)
    # The photos are copied out first: undoing a chat's only turn deletes the chat and its files.
    photos = _keep_for_box(user.images) if user else []
    if not sidebar.save(store, session):  # another tab changed this chat: shown as it is now
        return render.chat(session.messages), "", gr.skip(), sidebar.history_update(store, session)
    box = gr.MultimodalTextbox(value={"text": user.words if user else "", "files": photos})
    return render.chat(session.messages), "", box, sidebar.history_update(store, session)


def _keep_for_box(images) -> list[str]:
    """Copies of saved photos in the upload folder, where the input box may hold them."""
    folder = Path(get_upload_folder()) / ("undo-" + new_id())
    kept = []
    for image in images:
        source = Path(str(image))
        if not source.is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / source.name
        shutil.copyfile(source, target)
        kept.append(str(target))
    return kept


def read_ahead(assistant, session: ChatSession, value, *panel_values) -> None:
    """A photo was attached to the message being written: let the model read it now, while the
    words are typed (the answer then starts sooner). Quietly nothing when it cannot."""
    if session.busy:
        return
    try:
        draft = inputs.message(value)
        params, system_prompt = settings_panel.choices(assistant, *panel_values)
    except AssistantError:
        return  # sending it will say what is wrong
    photos = tuple(str(p) for p in draft.images)
    if not photos or photos == session.read_ahead:
        return
    session.read_ahead = photos
    assistant.prepare(
        answered(session.messages),
        draft,
        params,
        system_prompt=system_prompt,
        literal_system=True,
        user=session.owner,
    )


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
