"""The page's handlers called directly (no server, no browser) over a scripted FakeChatModel:
send, stream, stop, regenerate, edit, undo, errors, history, and the /chat helpers."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import gradio as gr
import pytest
from PIL import Image

from assistant.core import Assistant
from assistant.errors import InvalidParams
from assistant.settings import Settings
from assistant.speech import Transcript
from assistant.store import HistoryStore
from tests.fakes import FakeChatModel
from ui import actions, endpoint, render, sidebar
from ui.actions import report_error, respond
from ui.session import ChatSession, as_owner

PANEL = ("default", "", 0.7, 0.95, 64, "")  # persona, custom prompt, temperature, top-p, max tokens, seed


class FakeTranscriber:
    name, device = "fake-whisper", "cpu"

    def __init__(self, text="what is in the picture"):
        self.text = text
        self.calls = 0

    def transcribe(self, audio, language=None):
        self.calls += 1
        return Transcript(self.text, "en", 1.0, (), 1.0, 0.01)


@pytest.fixture
def env(tmp_path):
    settings = Settings(model="fake", data_dir=tmp_path / "data")
    model = FakeChatModel(chunks=["Hello", ", ", "world", "!"])
    assistant = Assistant(settings, model, FakeTranscriber())
    return SimpleNamespace(
        assistant=assistant,
        model=model,
        store=HistoryStore(settings.data_dir),
        session=ChatSession(),
        tmp=tmp_path,
    )


def photo(path, color=(10, 200, 10)):
    Image.new("RGB", (40, 30), color).save(path)
    return str(path)


def audio_file(tmp_path):
    """Any real audio container works: the transcriber is fake, kind_of sniffs the header."""
    import wave

    path = tmp_path / "voice.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(b"\x00\x01" * 16000)
    return str(path)


def run(env, panel=PANEL):
    """Drive respond to the end; return every update it yielded."""
    return list(respond(env.assistant, env.store, env.session, *panel))


def send(env, text="", files=()):
    actions.send(env.session, {"text": text, "files": list(files)})
    return run(env)


def test_send_streams_and_saves(env):
    chat, box = actions.send(env.session, {"text": "Hi there", "files": []})
    assert chat[-2] == {"role": "user", "content": ["Hi there"]} and chat[-1]["content"] == render.THINKING
    assert box.value == {"text": "", "files": []} and box.stop_btn is True  # cleared, Stop shown
    updates = run(env)
    final_chat, stats, final_box, history = updates[-1]
    assert final_chat[-1] == {"role": "assistant", "content": "Hello, world!"}
    assert "tokens/s" in stats and final_box.submit_btn is True
    assert [c.title for c in env.store.conversations()] == ["Hi there"]
    # The history shows plain-text titles with when each chat was used (issue 13: dates added).
    assert history.choices == [(f"Hi there · {render.when(time.time())}", env.session.conversation_id)]
    assert not env.session.busy


def test_images_are_shown_in_the_users_bubble_and_kept_in_the_store(env):
    image = photo(env.tmp / "leaf.png")
    send(env, "What plant?", [image])
    stored = env.store.load(env.session.conversation_id).messages[0]
    assert stored.images[0].startswith(str(env.store.media_dir))
    bubble = render.chat(env.session.messages)[0]
    assert bubble["content"][0] == {"path": stored.images[0]} and bubble["content"][-1] == "What plant?"
    assert len(env.model.requests[-1].messages[-1].images) == 1


def test_voice_message_shows_the_transcript_before_the_answer(env):
    updates = send(env, files=[audio_file(env.tmp)])
    assert updates[0][0][-2]["content"] == [render.TRANSCRIBING]
    assert "🎤 what is in the picture" in str(updates[-1][0][0]["content"])
    assert env.model.requests[-1].messages[-1].text == "what is in the picture"
    assert env.store.load(env.session.conversation_id).title == "what is in the picture"


def test_stop_keeps_the_partial_reply(env):
    env.model.chunks, env.model.delay_s = ["word "] * 200, 0.01
    actions.send(env.session, {"text": "Tell me a long story", "files": []})
    stream = respond(env.assistant, env.store, env.session, *PANEL)
    for chat, *_ in stream:
        if chat is not None and not isinstance(chat, dict) and chat[-1]["content"].startswith("word word"):
            actions.stop(env.session)
            break
    *_, (chat, stats, _, _) = list(stream)
    assert "stopped" in stats
    assert 0 < chat[-1]["content"].count("word") < 200
    assert env.session.messages[-1].text == chat[-1]["content"]


def test_stop_before_the_first_word_gives_the_text_back(env):
    env.model.delay_s = 0.05
    actions.send(env.session, {"text": "never mind", "files": []})
    actions.stop(env.session)
    chat, stats, box, _ = run(env)[-1]
    assert chat == [] and box.value == {"text": "never mind", "files": []}
    assert env.store.conversations() == []


def test_regenerate_edit_and_undo(env):
    send(env, "first")
    send(env, "second")
    env.model.chunks = ["Again"]
    actions.regenerate(env.session)
    run(env)
    assert [m.text for m in env.session.messages] == ["first", "Hello, world!", "second", "Again"]

    env.model.chunks = ["Edited answer"]
    actions.edit(env.session, SimpleNamespace(index=0, value="FIRST, edited"))
    run(env)
    assert [m.text for m in env.session.messages] == ["FIRST, edited", "Edited answer"]
    assert [m.text for m in env.store.load(env.session.conversation_id).messages] == [
        "FIRST, edited",
        "Edited answer",
    ]

    chat, _, box, _ = actions.undo(env.store, env.session)
    assert chat == [] and box.value == {"text": "FIRST, edited", "files": []}
    assert env.store.conversations() == []  # nothing left to keep


def test_bad_file_restores_the_text_and_reports_once(env):
    notes = env.tmp / "notes.jpg"
    notes.write_text("not a photo")
    good = photo(env.tmp / "good.png")
    send(env, "hi")
    actions.send(env.session, {"text": "read my notes", "files": [str(notes), good]})
    chat, _, box, _ = run(env)[-1]
    assert len(chat) == 2  # the failed turn was taken back, the earlier one stays
    assert box.value["text"] == "read my notes"
    assert [f["orig_name"] for f in box.value["files"]] == ["good.png"]  # the bad file is dropped
    with pytest.raises(gr.Error, match="notes.jpg is not a supported image"):
        report_error(env.session)
    report_error(env.session)  # reported once only
    send(env, "still here?")
    assert env.session.messages[-1].text == "Hello, world!"


def test_bad_settings_are_reported(env):
    actions.send(env.session, {"text": "hi", "files": []})
    list(respond(env.assistant, env.store, env.session, "default", "", 0.7, 0.95, 64, "lucky"))
    with pytest.raises(gr.Error, match="seed must be a whole number"):
        report_error(env.session)


def test_send_while_busy_is_refused_without_losing_the_text(env):
    actions.send(env.session, {"text": "first", "files": []})
    assert actions.send(env.session, {"text": "second", "files": []}) == (gr.skip(), gr.skip())
    run(env)
    assert [m.text for m in env.session.messages] == ["first", "Hello, world!"]


def test_without_a_chat_model_voice_is_still_transcribed(tmp_path):
    settings = Settings(model="missing/model", data_dir=tmp_path)
    assistant = Assistant(
        settings,
        None,
        FakeTranscriber("hello there"),
        chat_error="chat model 'missing/model' is not downloaded",
    )
    env = SimpleNamespace(
        assistant=assistant, store=HistoryStore(tmp_path), session=ChatSession(), tmp=tmp_path
    )
    chat = send(env, files=[audio_file(tmp_path)])[-1][0]
    assert "🎤 hello there" in str(chat[0]["content"])
    assert "No chat model is loaded" in chat[1]["content"] and "missing/model" in chat[1]["content"]
    assert env.store.conversations() == []


def test_sidebar_open_rename_delete(env):
    send(env, "alpha")
    first = env.session.conversation_id
    sidebar.new_chat(env.store, env.session)
    send(env, "beta")
    chat, _, title, _ = sidebar.open_conversation(env.store, env.session, first)
    assert title == "alpha" and chat[0]["content"] == ["alpha"]
    sidebar.rename(env.store, env.session, "Renamed")
    assert {c.title for c in env.store.conversations()} == {"Renamed", "beta"}
    chat, *_ = sidebar.delete(env.store, env.session)
    assert chat == [] and [c.title for c in env.store.conversations()] == ["beta"]


def test_sessions_do_not_share_state():
    import copy

    a = copy.deepcopy(ChatSession())
    b = copy.deepcopy(ChatSession())
    a.messages.append("x")
    assert b.messages == [] and a.cancel is not b.cancel


def test_endpoint_history_and_options(env, tmp_path):
    upload = photo(tmp_path / "up.png")
    messages = endpoint.to_messages(
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
            {"role": "user", "content": {"path": upload}},
        ],
        (tmp_path.resolve(),),
    )
    assert [(m.role, m.text, len(m.images)) for m in messages] == [
        ("user", "hi", 0),
        ("assistant", "hello", 0),
        ("user", "", 1),
    ]
    with pytest.raises(InvalidParams, match="uploaded"):
        endpoint.to_messages([{"role": "user", "content": {"path": "/etc/hostname"}}], (tmp_path.resolve(),))
    with pytest.raises(InvalidParams, match="role"):
        endpoint.to_messages([{"content": "no role"}], ())
    params, system = endpoint.generation_options(
        env.assistant, {"temperature": 0, "seed": 3, "system_prompt": "Be brief."}
    )
    assert (params.temperature, params.seed, system) == (0, 3, "Be brief.")
    with pytest.raises(InvalidParams, match="unknown option 'tempreature'"):
        endpoint.generation_options(env.assistant, {"tempreature": 1})


def test_concurrent_sessions_stream_their_own_replies(env, tmp_path):
    env.model.delay_s = 0.01
    sessions = {name: ChatSession() for name in ("ann", "bob")}
    results = {}

    def chat(name):
        s = sessions[name]
        actions.send(s, {"text": f"I am {name}", "files": []})
        list(respond(env.assistant, env.store, s, *PANEL))
        results[name] = [m.text for m in s.messages]

    threads = [threading.Thread(target=chat, args=(n,)) for n in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {n: [f"I am {n}", "Hello, world!"] for n in sessions}
    assert env.model.max_active == 1  # one generation at a time


def test_logged_in_users_each_get_their_own_history(env):
    send(env, "my secret")
    alice = ChatSession()
    as_owner(lambda tab: None)(SimpleNamespace(username="alice"), alice)  # as every history handler
    assert alice.owner == "alice"
    assert sidebar.history_update(env.store, alice).choices == []  # not the local user's chats
    assert sidebar.open_conversation(env.store, alice, env.session.conversation_id)[0] == gr.skip()


def test_editing_a_voice_message_keeps_or_replaces_the_transcript(env):
    send(env, "Please answer:", [audio_file(env.tmp)])
    shown = render.user_text(env.session.messages[0])
    assert shown == "Please answer:\n\n🎤 what is in the picture"

    actions.edit(env.session, SimpleNamespace(index=0, value=shown.replace("Please answer:", "Briefly:")))
    run(env)
    edited = env.session.messages[0]
    assert (edited.text, edited.transcript) == ("Briefly:", "what is in the picture")  # still a transcript
    assert env.model.requests[-1].messages[-1].text == "Briefly:\n\nwhat is in the picture"

    shown = render.user_text(edited)
    actions.edit(env.session, SimpleNamespace(index=0, value=shown.replace("picture", "photo")))
    run(env)
    corrected = env.session.messages[0]
    assert (corrected.text, corrected.transcript) == (
        "Briefly:\n\nwhat is in the photo",
        None,
    )  # now typed, no 🎤
    assert "🎤" not in env.model.requests[-1].messages[-1].text


def test_undo_of_the_only_turn_gives_the_photo_back_with_the_text(env):
    send(env, "What plant?", [photo(env.tmp / "leaf.png")])
    assert env.store.conversations()
    chat, _, box, _ = actions.undo(env.store, env.session)
    assert chat == [] and env.store.conversations() == []  # the chat and its saved photo are gone
    assert box.value["text"] == "What plant?" and len(box.value["files"]) == 1
    kept = box.value["files"][0]
    kept = kept["path"] if isinstance(kept, dict) else kept
    assert Image.open(kept).size == (40, 30)


def two_tabs(env):
    """A second tab open on the first tab's chat."""
    send(env, "From TAB ONE")
    other = ChatSession()
    sidebar.open_conversation(env.store, other, env.session.conversation_id)
    return other


def test_two_tabs_on_one_chat_keep_both_turns(env):
    other = two_tabs(env)
    send(env, "one again")
    actions.send(other, {"text": "From TAB TWO", "files": []})
    updates = list(respond(env.assistant, env.store, other, *PANEL))
    stored = [m.text for m in env.store.load(env.session.conversation_id).messages]
    assert stored == [
        "From TAB ONE",
        "Hello, world!",
        "one again",
        "Hello, world!",
        "From TAB TWO",
        "Hello, world!",
    ]
    assert "one again" in str(updates[0][0])  # tab two shows tab one's turn as soon as it acts
    # The model answering tab two saw tab one's turn too.
    assert [m.text for m in env.model.requests[-1].messages if m.role == "user"][-2:] == [
        "one again",
        "From TAB TWO",
    ]


def test_a_tab_answering_slowly_and_a_second_tab_both_keep_their_turns(env):
    other = two_tabs(env)
    env.model.chunks, env.model.delay_s = ["word "] * 30, 0.02
    actions.send(env.session, {"text": "slow one", "files": []})
    slow = threading.Thread(target=lambda: list(respond(env.assistant, env.store, env.session, *PANEL)))
    slow.start()
    cid = env.session.conversation_id
    deadline = time.monotonic() + 5
    while [m.text for m in env.store.load(cid).messages][-1] != "slow one" and time.monotonic() < deadline:
        time.sleep(0.01)  # tab one's question is saved and its reply is on its way
    actions.send(other, {"text": "From TAB TWO", "files": []})
    list(respond(env.assistant, env.store, other, *PANEL))  # waits for the model, then answers
    slow.join(10)
    stored = [m.text for m in env.store.load(cid).messages]
    assert stored[:2] == ["From TAB ONE", "Hello, world!"]
    assert stored[2] == "slow one" and stored[3].count("word") == 30
    assert stored[4] == "From TAB TWO" and stored[5].count("word") == 30 and len(stored) == 6


def test_undo_in_a_stale_tab_is_refused_and_shows_the_chat_as_saved(env):
    other = two_tabs(env)
    send(env, "one again")
    chat, *_ = actions.undo(env.store, other)
    assert len(chat) == 4  # tab one's turn appeared in tab two; nothing was undone
    assert len(env.store.load(env.session.conversation_id).messages) == 4


def test_the_question_is_saved_when_sent_and_the_reply_as_it_streams(env):
    env.model.chunks, env.model.delay_s = ["word "] * 200, 0.01
    actions.send(env.session, {"text": "Tell me a long story", "files": []})
    stream = respond(env.assistant, env.store, env.session, *PANEL)
    next(stream)
    saved = env.store.load(env.session.conversation_id).messages
    assert [m.text for m in saved] == ["Tell me a long story"]
    for chat, *_ in stream:
        if isinstance(chat, list) and chat[-1]["content"].count("word") > 20:
            break
    stream.close()  # the tab went away mid-reply
    saved = env.store.load(env.session.conversation_id).messages
    assert saved[0].text == "Tell me a long story" and saved[1].text.count("word") > 20


def test_a_reload_reopens_the_chat_the_address_or_the_browser_names_for_its_owner_only(env):
    from ui import prefs

    send(env, "kept chat")
    cid = env.session.conversation_id
    slider = gr.Slider(1, 2048, value=512)
    restore = prefs.restorer(env.store, {"max_new_tokens": slider})
    local = SimpleNamespace(username=None, query_params={"chat": cid})
    chat, _, title, history, box, tokens = restore(
        local, ChatSession(), {}, {"local": "draft"}, {"local": {"max_new_tokens": 300}}
    )
    assert chat[0]["content"] == ["kept chat"] and title == "kept chat" and history.value == cid
    assert box.value["text"] == "draft" and tokens == 300
    # The browser's memory works without the address; a value the control refuses is skipped.
    chat, *_, tokens = restore(
        SimpleNamespace(username=None, query_params={}),
        ChatSession(),
        {"local": cid},
        {},
        {"local": {"max_new_tokens": 9999}},
    )
    assert chat[0]["content"] == ["kept chat"] and tokens == gr.skip()
    # Another login asking for this chat by its address gets nothing of it.
    mallory = ChatSession()
    with pytest.warns(UserWarning, match="not in your history"):
        chat, *_ = restore(
            SimpleNamespace(username="mallory", query_params={"chat": cid}),
            mallory,
            {"local": cid},
            {"local": "draft"},
            {},
        )
    assert chat == gr.skip() and mallory.conversation_id is None and mallory.messages == []


def test_the_history_shows_dates_and_plain_titles_and_can_be_searched(env):
    import time as clock

    send(env, "**Plan** a trip to `Lisbon`")
    trip = env.session.conversation_id
    sidebar.new_chat(env.store, env.session)
    send(env, "What is a llama?")
    labels = dict((cid, label) for label, cid in sidebar.history_update(env.store, env.session).choices)
    assert labels[trip].startswith("Plan a trip to Lisbon · ")
    now = clock.mktime((2026, 12, 1, 12, 0, 0, 0, 0, -1))
    assert render.when(now - 3600, now) == "11:00" and render.when(now - 86400, now) == "yesterday"
    assert render.when(now - 3 * 86400, now) == "Saturday" and render.when(now - 40 * 86400, now) == "22 Oct"
    found = sidebar.search(env.store, env.session, "lisb")
    assert [cid for _, cid in found.choices] == [trip]
    assert len(sidebar.search(env.store, env.session, "").choices) == 2


def test_export_then_import_gives_the_same_chat_with_its_photo(env):
    send(env, "What plant?", [photo(env.tmp / "leaf.png")])
    files = sidebar.export_chat(env.store, env.session).value
    paths = [f["path"] if isinstance(f, dict) else f for f in files]
    markdown, exported = sorted(paths, key=lambda p: p.endswith(".json"))
    assert "data:image/png;base64," in open(markdown).read()
    bob = ChatSession()
    bob.owner = "bob"
    chat, _, title, history = sidebar.import_chat(env.store, bob, exported)
    assert title == "What plant?" and bob.conversation_id != env.session.conversation_id
    assert chat[0]["content"][-1] == "What plant?" and chat[1]["content"] == "Hello, world!"
    assert Image.open(bob.messages[0].images[0]).size == (40, 30)
    assert [c.id for c in env.store.conversations("bob")] == [bob.conversation_id]
    with pytest.warns(UserWarning, match="Could not import"):
        assert sidebar.import_chat(env.store, bob, markdown)[0] == gr.skip()


def test_an_unexpected_failure_names_the_request_to_look_up_in_the_log(env, caplog):
    def broken(request):
        raise RuntimeError("a bug")

    env.model.stream = broken
    send(env, "hi")
    with caplog.at_level("ERROR", logger="ui.actions"):
        run(env)
    logged = [r for r in caplog.records if r.getMessage().startswith("answering failed (request req-")]
    assert len(logged) == 1
    request = logged[0].getMessage().split("(request ")[1].rstrip(")")
    assert env.session.error == render.unexpected(request) and request in env.session.error
