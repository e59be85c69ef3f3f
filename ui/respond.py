"""Answer the turn a tab has pending: stream the engine's events into the chat.

The one place the page talks to the model (through ``assistant.reply`` / ``assistant.transcribe``).
Every problem the engine reports becomes a toast; the failed turn is taken back and the typed
words return to the input box, so nothing is lost and the session goes on.
"""

from __future__ import annotations

import logging
import time

import gradio as gr

from assistant.conversation import Message
from assistant.core import Done, Queued, Token
from assistant.errors import AssistantError, ModelUnavailable
from ui import inputs, render, settings_panel, sidebar
from ui.session import ChatSession, Pending

log = logging.getLogger(__name__)

FRAME_S = 1 / 25  # at most this often a streamed reply is re-sent to the browser


def idle_box():
    """The input box back to normal: send button shown, stop button hidden."""
    return gr.MultimodalTextbox(submit_btn=True, stop_btn=False)


def busy_box(clear: bool = False):
    """Send button swapped for Stop while answering; ``clear`` empties the box (it was sent)."""
    if clear:
        return gr.MultimodalTextbox(value=None, submit_btn=False, stop_btn=True)
    return gr.MultimodalTextbox(submit_btn=False, stop_btn=True)


def respond(assistant, store, session: ChatSession, *panel_values):
    """Generator of (chat, stats line, input box, history list) updates."""
    pending, session.pending = session.pending, None
    if pending is None:  # nothing to answer (e.g. a send refused while busy)
        yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return
    try:
        yield from _answer(assistant, store, session, pending, panel_values)
    except AssistantError as exc:
        session.error = str(exc)
        yield _take_back(session, pending, session.error)
    except Exception:
        log.exception("answering failed")
        session.error = render.UNEXPECTED
        yield _take_back(session, pending, render.UNEXPECTED)
    finally:
        session.busy = False


def report_error(session: ChatSession) -> None:
    """Show the last turn's problem as an error toast.

    Raised from this output-less event rather than from ``respond`` itself: Gradio would
    otherwise also stamp a big "Error" badge over the chat.
    """
    message, session.error = session.error, None
    if message:
        raise gr.Error(message, print_exception=False)


def _take_back(session: ChatSession, pending: Pending, error: str):
    session.messages = list(pending.previous)
    box = (
        idle_box()
        if pending.restore is None
        else gr.MultimodalTextbox(
            value=inputs.restore_value(pending.restore, error), submit_btn=True, stop_btn=False
        )
    )
    return render.chat(session.messages), gr.skip(), box, gr.skip()


def _answer(assistant, store, session: ChatSession, pending: Pending, panel_values):
    params, system_prompt = settings_panel.choices(assistant, *panel_values)
    user = pending.user
    skip = gr.skip()
    yield render.chat(session.messages, user, ""), "", skip, skip

    reply = assistant.reply(
        session.messages,
        user,
        params,
        system_prompt=system_prompt,
        literal_system=True,
        cancel=session.cancel,
    )
    last_frame = 0.0
    with reply:  # leaving early (a closed tab, an error) frees the model at once
        try:
            for event in reply:
                if isinstance(event, Queued):
                    yield (
                        render.chat(session.messages, reply.message, render.queued(event.position)),
                        skip,
                        skip,
                        skip,
                    )
                    continue
                if isinstance(event, Token) and time.monotonic() - last_frame < FRAME_S:
                    continue
                if isinstance(event, Done):
                    continue
                last_frame = time.monotonic()
                yield render.chat(session.messages, reply.message, reply.text), skip, skip, skip
        except ModelUnavailable as exc:
            if assistant.chat_model is not None:
                raise
            # No chat model: still show what was said (the recording is transcribed), then explain.
            yield (
                render.chat(session.messages, reply.message, render.no_model(str(exc))),
                "",
                idle_box(),
                skip,
            )
            session.messages = list(pending.previous)
            return

    if session.stopped and not reply.text.strip():  # stopped before the answer started: give the turn back
        session.messages = list(pending.previous)
        box = (
            idle_box()
            if pending.restore is None
            else gr.MultimodalTextbox(value=pending.restore, submit_btn=True, stop_btn=False)
        )
        yield render.chat(session.messages), "Stopped before the answer started.", box, skip
        return

    # Recordings are not kept in the history yet: the transcript is what was said.
    session.messages = [*session.messages, reply.message.without_audio(), Message.assistant(reply.text)]
    sidebar.save(store, session)
    line = render.stats_line(reply.stats) if reply.stats else "Stopped."
    yield render.chat(session.messages), line, idle_box(), sidebar.history_update(store, session)
