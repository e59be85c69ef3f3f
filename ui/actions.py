"""One turn on the page: starting it, answering it, and the history it writes as it goes.

Starting (send, regenerate, continue, edit a past message, undo, a version's arrows): each one
only rearranges the tab's history and marks a user message as pending; :func:`respond` then
answers it, streaming the engine's events into the chat (the page talks to the model here
only: ``assistant.reply``, and ``assistant.prepare`` for a draft's photos). Every problem the
engine reports becomes a toast; the failed turn is taken back and the typed words return to
the input box, so nothing is lost and the session goes on.

Text that is not valid Unicode (a lone UTF-16 surrogate, which a browser can send) is refused
when a turn starts, before it is shown: Gradio could not encode a chat holding it, and the
tab's event stream would end. The box (or the edited bubble) keeps what was typed.

The history is written as the turn goes: the user's message as soon as it is sent (a voice
message once transcribed), the reply every :data:`SAVE_EVERY_S` while it streams, and when it
ends, is stopped, or the tab goes away mid-reply. A reload therefore finds the turn. When
the history cannot be written (a full disk, a read-only database) the turn goes on unsaved,
and one toast per turn says so. :func:`history_update` is the history list every change ends
with (the sidebar's handlers use it too).
"""

from __future__ import annotations

import errno
import logging
import shutil
import time
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from assistant import limits
from assistant.conversation import (
    Message,
    answered,
    branch_off,
    for_regenerate,
    new_id,
    reachable,
    undo_last_turn,
)
from assistant.conversation import switch_version as switch_version_of
from assistant.core import Done, Queued, Token, Transcribed
from assistant.errors import AssistantError, ModelUnavailable
from assistant.store import StaleConversation, StoreError, plain_text
from ui import inputs, render
from ui.session import ChatSession, Pending, unless_busy

log = logging.getLogger(__name__)

FRAME_S = 1 / 25  # at most this often a streamed reply is re-sent to the browser
SAVE_EVERY_S = 1.0  # at most this often a streaming reply is written to the history
CHANGED_ELSEWHERE = "This chat was changed in another tab: it is shown as saved now. Try again."
UNSAVED = (
    "This conversation could not be saved to the history ({}): what is shown will be gone after a reload."
)


# -- starting a turn -------------------------------------------------------------------------------


@unless_busy(2)
def send(session: ChatSession, value):
    try:
        user = inputs.message(value)
        limits.check_unicode(user.text)
    except AssistantError as exc:
        session.error = str(exc)  # shown by report_error; the box keeps its value
        return gr.skip(), gr.skip()
    if user.is_empty():
        return gr.skip(), gr.skip()
    session.begin(Pending(user, previous=list(session.messages), restore=value, appends=True))
    return render.chat(session.messages, user, ""), busy_box(clear=True)


def has_reply(session: ChatSession) -> bool:
    """Whether the chat ends with a reply that Regenerate or Continue could work on."""
    return len(session.messages) >= 2 and session.messages[-1].role == "assistant"


def turn_buttons(session: ChatSession) -> tuple[gr.Button, gr.Button, gr.Button]:
    """Regenerate, Continue, Undo: greyed out while there is nothing for them to act on (an
    enabled button that does nothing reads as broken)."""
    reply, turn = has_reply(session), len(session.messages) >= 2
    return gr.Button(interactive=reply), gr.Button(interactive=reply), gr.Button(interactive=turn)


@unless_busy(2)
def regenerate(session: ChatSession):
    if not has_reply(session):
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
    if not has_reply(session):
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
    save(store, session)
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
        session.error = str(exc)  # shown by report_error; the bubble keeps the edit
        return gr.skip(), gr.skip()
    previous = list(session.messages)
    session.messages, user = render.edited(session.messages, index, text)
    # What the edit replaces (the old message and what followed) stays as a version.
    session.begin(Pending(user, previous=previous, replaced=branch_off(previous, index)))
    return render.chat(session.messages, user, ""), busy_box()


@unless_busy(4)
def undo(store, session: ChatSession):
    """Take back the last exchange; its words and photos return to the input box for another try."""
    if len(session.messages) < 2:  # (the button is greyed out then; another tab may differ)
        gr.Info("There is nothing to undo yet.")
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    session.messages, user = undo_last_turn(session.messages)
    # The photos are copied out first: undoing a chat's only turn deletes the chat and its files.
    photos = _keep_for_box(user.images) if user else []
    if not save(store, session):  # another tab changed this chat: shown as it is now
        return render.chat(session.messages), "", gr.skip(), history_update(store, session)
    box = gr.MultimodalTextbox(value={"text": user.words if user else "", "files": photos})
    return render.chat(session.messages), "", box, history_update(store, session)


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
        params, system_prompt = inputs.choices(assistant, *panel_values)
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


# -- answering it ----------------------------------------------------------------------------------


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
        log.exception("answering failed (request %s)", turn.request_id)
        session.error = render.unexpected(turn.request_id)
        yield _take_back(turn, session.error)
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
        self.request_id = ""  # the reply's id in the server log, once asked for

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
        stored = save_turn(
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
            save_turn(self.store, session, [], drop=drop, warn=not self.unsaved)
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
    params, system_prompt = inputs.choices(assistant, *panel_values)
    user = pending.user
    skip = gr.skip()
    turn.refresh()
    if assistant.chat_model is not None and not user.needs_transcript:
        turn.save(user, None)  # the question is kept from the moment it is sent
    # A chat saved for the first time shows in the history now (and the address gets its id).
    listed = history_update(store, session) if turn.saved else skip
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
    turn.request_id = reply.request_id
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
    yield render.chat(session.messages), line, idle_box(), history_update(store, session)


# -- the history it writes -------------------------------------------------------------------------


def history_update(store, session: ChatSession):
    """The history list: plain-text titles with when each chat was last used, newest first
    (only the chats matching the search box, when something is typed there)."""
    found = (
        store.search(session.query, session.owner)
        if session.query.strip()
        else store.conversations(session.owner)
    )
    now = time.time()
    choices = [(f"{plain_text(c.title)} · {render.when(c.updated_at, now)}", c.id) for c in found]
    return gr.Radio(choices=choices, value=session.conversation_id, info=no_match(session.query, found))


def no_match(query: str, found: Sequence) -> str:
    """The line under the list's name when a search finds nothing: an empty list alone looks
    broken. (Always a string: ``None`` would leave the last search's line standing.)"""
    query = " ".join(query.split())
    if not query or found:
        return ""
    shown = query if len(query) <= 40 else query[:39] + "…"
    return f"No chats match “{shown}”."


def save(store, session: ChatSession) -> bool:
    """Write the open conversation as the tab holds it (an emptied one is deleted); never
    stops the chat. Refused when another tab saved it since this one read it: the tab then
    shows what is stored (nothing anyone wrote is overwritten) and False is returned."""
    try:
        cid = session.conversation_id
        if (
            cid is not None
            and session.version is not None
            and store.version(cid, session.owner)
            not in (
                None,
                session.version,
            )
        ):
            found = store.load(cid, session.owner)
            if found is not None:
                session.show(found)
                gr.Warning(CHANGED_ELSEWHERE)
                return False
        if not session.messages:
            if cid is not None:
                store.delete(cid, session.owner)
            session.open(None, [])
            return True
        saved = store.write(
            cid, session.messages, session.owner, base_version=session.version, others=session.others
        )
        session.show(saved)
    except StaleConversation as stale:
        session.show(stale.current)
        gr.Warning(CHANGED_ELSEWHERE)
        return False
    except OSError as exc:  # e.g. a full disk: keep chatting (PermissionError is one too)
        log.error("could not save the conversation: %s", exc.__cause__ or exc)
        gr.Warning(UNSAVED.format(why_not_stored(exc)))
    return True


def save_turn(
    store,
    session: ChatSession,
    turn: list[Message],
    drop: Collection[str] = (),
    replaced: Sequence[Message] = (),
    warn: bool = True,
) -> list[Message] | None:
    """Save the tab's history followed by ``turn`` (the turn being answered, as far as it
    got), never overwriting what another tab saved meanwhile: when the store has moved on, the
    turn is put after what is stored now (and the tab's history becomes that). Messages whose
    ids are in ``drop`` (an earlier save of this turn) are left out. ``replaced`` is what a
    regenerate or an edit set aside: kept as versions. Returns the history as stored (None:
    not saved, and, with ``warn``, a toast says so)."""
    ids = {m.id for m in turn} | set(drop)
    try:
        for _ in range(5):
            messages = [*session.messages, *turn]
            if not messages:
                if session.conversation_id is not None:
                    store.delete(session.conversation_id, session.owner)
                session.open(None, [])
                return []
            try:
                saved = store.write(
                    session.conversation_id,
                    messages,
                    session.owner,
                    base_version=session.version if session.conversation_id else None,
                    others=[*session.others, *replaced],
                )
            except StaleConversation as stale:
                current = stale.current
                session.messages = [m for m in current.messages if m.id not in ids]
                session.others = [m for m in current.others if m.id not in ids]
                session.version = current.version
                continue
            session.conversation_id, session.version = saved.id, saved.version
            return saved.messages
        why = "another tab kept changing it"
    except OSError as exc:  # a full disk, a read-only database (StoreError): keep chatting
        log.error("could not save the conversation: %s", exc.__cause__ or exc)
        why = why_not_stored(exc)
    if warn:
        gr.Warning(UNSAVED.format(why))
    return None


def why_not_stored(exc: OSError) -> str:
    """A few words on why the history (or a file of it) could not be written: never the
    exception's own text, which may name server paths."""
    if isinstance(exc, StoreError):
        return exc.reason
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the server's disk is full"
    if exc.errno == errno.EROFS:
        return "the history folder is read-only"
    if isinstance(exc, PermissionError) and exc.errno is None:  # (HistoryStore: not this owner's)
        return "it belongs to another login"
    return "a file of it could not be stored"
