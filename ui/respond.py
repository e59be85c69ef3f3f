"""Answer the turn a tab has pending: stream the engine's events into the chat.

The one place the page talks to the model (through ``assistant.reply`` / ``assistant.transcribe``).
Every problem the engine reports becomes a toast; the failed turn is taken back and the typed
words return to the input box, so nothing is lost and the session goes on.

The history is written as the turn goes: the user's message as soon as it is sent (a voice
message once transcribed), the reply every :data:`SAVE_EVERY_S` while it streams, and when it
ends, is stopped, or the tab goes away mid-reply. A reload therefore finds the turn. When
the history cannot be written (a full disk, a read-only database) the turn goes on unsaved,
and one toast per turn says so.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import gradio as gr

from assistant.conversation import Message, answered, reachable
from assistant.core import Done, Queued, Token, Transcribed
from assistant.errors import AssistantError, ModelUnavailable
from ui import inputs, render, settings_panel, sidebar
from ui.session import ChatSession, Pending

log = logging.getLogger(__name__)

FRAME_S = 1 / 25  # at most this often a streamed reply is re-sent to the browser
SAVE_EVERY_S = 1.0  # at most this often a streaming reply is written to the history


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
    turn = _Turn(store, session, pending)
    try:
        yield from _answer(assistant, turn, panel_values)
    except AssistantError as exc:
        session.error = str(exc)
        yield _take_back(turn, session.error)
    except Exception:
        log.exception("answering failed")
        session.error = render.UNEXPECTED
        yield _take_back(turn, render.UNEXPECTED)
    finally:
        session.busy = False


class _Turn:
    """The turn being answered, as far as it got, and its saving to the history."""

    def __init__(self, store, session: ChatSession, pending: Pending):
        self.store, self.session, self.pending = store, session, pending
        self.user = pending.user
        # Continue carries on an existing reply (same message, more words); else a new one.
        self.answer = pending.continues or Message.assistant("")
        self.answer_id, self.prefix = self.answer.id, self.answer.text
        self.saved = False  # something of this turn is in the store
        self.unsaved = False  # a save of this turn failed (and the toast said so, once)
        self.last_save = 0.0

    def refresh(self) -> None:
        """A new turn after the history: first take in what another tab saved to this chat."""
        session = self.session
        if not self.pending.appends or session.conversation_id is None:
            return
        try:
            version = self.store.version(session.conversation_id, session.owner)
        except OSError as exc:  # the history cannot be read: answer what the tab shows
            log.error("could not read the conversation: %s", exc.__cause__ or exc)
            return
        if version is None:  # deleted elsewhere: this turn starts it again
            session.version = None
        elif version != session.version:
            found = self.store.load(session.conversation_id, session.owner)
            if found is not None:
                session.show(found)
                self.pending.previous = list(found.messages)

    def save(self, user: Message, reply: str | None, force: bool = True) -> list[Message] | None:
        if not force and time.monotonic() - self.last_save < SAVE_EVERY_S:
            return None
        self.user = user = user.without_audio()  # recordings are not kept yet: the transcript is
        turn = [user] if reply is None else [user, self.reply(reply)]
        stored = sidebar.save_turn(
            self.store,
            self.session,
            turn,
            drop=(self.answer_id,),
            replaced=self.pending.replaced,
            warn=not self.unsaved,
        )
        self.saved, self.last_save = self.saved or stored is not None, time.monotonic()
        self.unsaved = self.unsaved or stored is None
        return stored

    def reply(self, text: str) -> Message:
        """The reply as far as it got: the words before a Continue, then the new ones."""
        return replace(self.answer, text=self.prefix + text)

    def take_back(self) -> None:
        """The attempt failed or was stopped before a word: the history as it was before."""
        session = self.session
        session.messages = list(self.pending.previous)
        if self.saved:
            # (Only a new turn's messages may be dropped from another tab's copy: a regenerate's
            # question and a Continue's reply are in the history as it was.)
            drop = (self.user.id, self.answer_id) if self.pending.appends else ()
            sidebar.save_turn(self.store, session, [], drop=drop, warn=not self.unsaved)
            session.messages = list(self.pending.previous)


def report_error(session: ChatSession) -> None:
    """Show the last turn's problem as an error toast.

    Raised from this output-less event rather than from ``respond`` itself: Gradio would
    otherwise also stamp a big "Error" badge over the chat.
    """
    message, session.error = session.error, None
    if message:
        raise gr.Error(message, print_exception=False)


def _take_back(turn: _Turn, error: str):
    session, pending = turn.session, turn.pending
    turn.take_back()
    box = (
        idle_box()
        if pending.restore is None
        else gr.MultimodalTextbox(
            value=inputs.restore_value(pending.restore, error), submit_btn=True, stop_btn=False
        )
    )
    return render.chat(session.messages), gr.skip(), box, gr.skip()


def _answer(assistant, turn: _Turn, panel_values):
    store, session, pending = turn.store, turn.session, turn.pending
    params, system_prompt = settings_panel.choices(assistant, *panel_values)
    user = pending.user
    skip = gr.skip()
    turn.refresh()
    if assistant.chat_model is not None and not user.needs_transcript:
        turn.save(user, None)  # the question is kept from the moment it is sent
    # A chat saved for the first time shows in the history now (and the address gets its id).
    listed = sidebar.history_update(store, session) if turn.saved else skip
    yield render.chat(session.messages, user, turn.prefix), "", skip, listed

    reply = assistant.reply(
        answered(session.messages),
        user,
        params,
        system_prompt=system_prompt,
        literal_system=True,
        cancel=session.cancel,
        prefix=turn.prefix,
        user=session.owner,
    )
    last_frame = 0.0
    with reply:  # leaving early (a closed tab, an error) frees the model at once
        try:
            for event in reply:
                if isinstance(event, Queued):
                    yield (
                        render.chat(
                            session.messages, reply.message, turn.prefix + render.queued(event.position)
                        ),
                        skip,
                        skip,
                        skip,
                    )
                    continue
                if isinstance(event, Transcribed) and assistant.chat_model is not None:
                    turn.save(reply.message, None)
                if isinstance(event, Token):
                    if session.listener is not None:
                        session.listener(event.text)
                    turn.save(reply.message, reply.text, force=False)
                    if time.monotonic() - last_frame < FRAME_S:
                        continue
                if isinstance(event, Done):
                    continue
                last_frame = time.monotonic()
                yield render.chat(session.messages, reply.message, turn.prefix + reply.text), skip, skip, skip
        except GeneratorExit:  # the tab went away mid-reply (a reload, a closed tab): keep what came
            if reply.text.strip():
                turn.save(reply.message, reply.text)
            raise
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
        turn.take_back()
        box = (
            idle_box()
            if pending.restore is None
            else gr.MultimodalTextbox(value=pending.restore, submit_btn=True, stop_btn=False)
        )
        yield render.chat(session.messages), "Stopped before the answer started.", box, skip
        return

    # Recordings are not kept in the history yet: the transcript is what was said.
    final = [reply.message.without_audio(), turn.reply(reply.text)]
    stored = turn.save(reply.message, reply.text)
    session.messages = stored if stored is not None else [*session.messages, *final]
    session.others = reachable(session.messages, [*session.others, *pending.replaced])
    line = render.stats_line(reply.stats) if reply.stats else "Stopped."
    yield render.chat(session.messages), line, idle_box(), sidebar.history_update(store, session)
