"""Answer versions: regenerate and edit keep what they replace, "‹ 2/3 ›" switches between the
versions, the model reads only the branch shown, the store keeps the tree; Continue carries a
cut-off reply on. Page handlers over a scripted FakeChatModel, plus the tree functions."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from assistant.conversation import (
    Message,
    branch_off,
    reachable,
    switch_version,
    version_counts,
    versions_of,
)
from assistant.core import Assistant
from assistant.settings import Settings
from assistant.store import HistoryStore
from tests.fakes import FakeChatModel
from ui import actions, render
from ui.actions import respond
from ui.session import ChatSession

PANEL = ("default", "", 0.7, 0.95, 64, "")


@pytest.fixture
def env(tmp_path):
    settings = Settings(model="fake", data_dir=tmp_path / "data")
    model = FakeChatModel(chunks=["Hello"])
    return SimpleNamespace(
        assistant=Assistant(settings, model, None),
        model=model,
        store=HistoryStore(settings.data_dir),
        session=ChatSession(),
    )


def run(env):
    return list(respond(env.assistant, env.store, env.session, *PANEL))


def send(env, text, answer):
    env.model.chunks = [answer]
    actions.send(env.session, {"text": text, "files": []})
    run(env)


def texts(messages):
    return [m.text for m in messages]


def stored(env):
    found = env.store.load(env.session.conversation_id)
    return texts(found.messages), sorted(texts(found.others))


def switch(env, index, step):
    return actions.switch_version(env.store, env.session, f"{index}:{step}:1")


# -- the tree functions --------------------------------------------------------------------


def chain(*texts_):
    return [Message("user" if i % 2 == 0 else "assistant", t, created=i) for i, t in enumerate(texts_)]


def test_switching_walks_the_versions_and_follows_each_ones_newest_follow_up():
    old = chain("q1", "a1", "q2", "a2")
    # q1 edited: the old q1 and all that followed become a branch; the new one gets its answer.
    new = [Message("user", "q1 edited", created=10), Message("assistant", "b1", created=11)]
    others = branch_off(old, 0)
    assert [m.parent for m in others] == [None, old[0].id, old[1].id, old[2].id]
    assert version_counts(new, others) == {0: (2, 2)}
    assert texts(versions_of(new, others, 0)) == ["q1", "q1 edited"]

    shown, rest = switch_version(new, others, 0, -1)
    assert texts(shown) == ["q1", "a1", "q2", "a2"]  # the whole old branch comes back
    assert sorted(texts(rest)) == ["b1", "q1 edited"]
    assert version_counts(shown, rest) == {0: (1, 2)}
    assert switch_version(shown, rest, 0, -1) == (shown, rest)  # already the first

    back, rest = switch_version(shown, rest, 0, 1)
    assert texts(back) == ["q1 edited", "b1"] and len(rest) == 4


def test_versions_that_no_longer_hang_off_the_conversation_are_not_kept():
    q, a1 = chain("q", "a1")
    a2 = Message("assistant", "a2", created=5)
    others = branch_off([q, a1], 1)  # a1, a version of q's answer
    assert reachable([q, a2], others) == others
    assert reachable([], others) == []  # q was undone: its answers' versions go with it


# -- the page ------------------------------------------------------------------------------


def test_regenerate_keeps_the_old_reply_as_a_version_and_the_arrows_switch_back(env):
    send(env, "What is 2+2?", "Four.")
    env.model.chunks = ["It is 4."]
    actions.regenerate(env.session)
    run(env)
    assert texts(env.session.messages) == ["What is 2+2?", "It is 4."]
    assert json.loads(render.versions(env.session.messages, env.session.others)) == {
        "count": 2,
        "at": {"1": [2, 2]},
    }
    assert stored(env) == (["What is 2+2?", "It is 4."], ["Four."])

    chat, stats_line = switch(env, 1, -1)
    assert chat[-1]["content"] == "Four." and stats_line == ""  # the last reply's figures are not this one's
    assert stored(env) == (["What is 2+2?", "Four."], ["It is 4."])  # the choice is saved
    # A follow-up is answered from the branch shown: the model never sees the other version.
    send(env, "And 3+3?", "Six.")
    request = env.model.requests[-1].messages
    assert [m.text for m in request if m.role != "system"] == ["What is 2+2?", "Four.", "And 3+3?"]


def test_edit_keeps_the_old_branch_with_everything_that_followed_it(env):
    send(env, "first", "one")
    send(env, "second", "two")
    env.model.chunks = ["edited answer"]
    actions.edit(env.session, SimpleNamespace(index=0, value="FIRST, edited"))
    run(env)
    assert texts(env.session.messages) == ["FIRST, edited", "edited answer"]
    assert stored(env) == (["FIRST, edited", "edited answer"], ["first", "one", "second", "two"])

    reopened = HistoryStore(env.store.data_dir).load(env.session.conversation_id)
    assert reopened is not None
    tab = ChatSession()
    tab.show(reopened)  # another tab (or a reload) sees the same versions
    assert version_counts(tab.messages, tab.others) == {0: (2, 2)}
    shown, _ = switch_version(tab.messages, tab.others, 0, -1)
    assert texts(shown) == ["first", "one", "second", "two"]


def test_a_failed_regenerate_leaves_the_chat_as_it_was(env):
    send(env, "question", "answer")

    def broken(request):
        raise RuntimeError("the model broke")
        yield  # a generator, as a model's stream is

    env.model.stream = broken
    actions.regenerate(env.session)
    run(env)
    assert texts(env.session.messages) == ["question", "answer"]
    assert stored(env) == (["question", "answer"], [])


def test_undo_drops_the_turn_with_its_versions(env):
    send(env, "q1", "a1")
    send(env, "q2", "a2")
    env.model.chunks = ["a2 again"]
    actions.regenerate(env.session)
    run(env)
    actions.undo(env.store, env.session)
    assert stored(env) == (["q1", "a1"], [])


def test_continue_carries_the_reply_on_from_its_last_word(env):
    send(env, "Tell me a story", "Once upon a time")
    first = env.session.messages[-1]
    env.model.chunks = [" there was a fox."]
    actions.continue_reply(env.session)
    updates = run(env)
    assert texts(env.session.messages) == ["Tell me a story", "Once upon a time there was a fox."]
    assert env.session.messages[-1].id == first.id  # the same reply, longer: not a new version
    assert env.session.others == []
    # The model was asked to carry on the reply (its last message is that reply, unfinished).
    request = env.model.requests[-1]
    assert request.continues and request.messages[-1].text == "Once upon a time"
    assert "Once upon a time" in str(updates[0][0])  # shown from the first frame
    assert stored(env) == (["Tell me a story", "Once upon a time there was a fox."], [])


def test_continue_without_a_reply_says_so(env, monkeypatch):
    said = []
    monkeypatch.setattr(actions.gr, "Info", said.append)
    assert actions.continue_reply(env.session) == (actions.gr.skip(), actions.gr.skip())
    assert said and "no reply to continue" in said[0]
