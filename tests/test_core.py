"""The orchestrator with a fake model: events, params, history, queueing, cancel, stop strings."""

import threading
import time

import pytest
from PIL import Image

from assistant.conversation import (
    Message,
    edit_user_message,
    fit_to_context,
    for_regenerate,
    limit_images,
    undo_last_turn,
)
from assistant.core import Assistant, Done, Queued, StopFilter, Token, TurnQueue
from assistant.errors import InvalidParams, ModelUnavailable
from assistant.options import GenerationParams
from assistant.settings import Settings
from tests.fakes import FakeChatModel


def make_assistant(model=None, **settings):
    return Assistant(Settings(**settings), model or FakeChatModel())


def collect(events):
    return list(events)


def test_reply_streams_tokens_then_done_with_stats():
    assistant = make_assistant()
    events = collect(assistant.reply([], Message.user("hi")))
    tokens = [e.text for e in events if isinstance(e, Token)]
    done = events[-1]
    assert tokens == ["Hello", ", ", "world", "!"]
    assert isinstance(done, Done) and done.text == "Hello, world!"
    assert done.stats.tokens == 4
    assert done.stats.ttft_s >= 0 and done.stats.prompt_tokens > 0
    assert done.stats.finish_reason == "stop"


def test_system_prompt_default_persona_and_free_text():
    model = FakeChatModel()
    assistant = make_assistant(model)
    collect(assistant.reply([], Message.user("hi")))
    assert model.requests[-1].messages[0].role == "system"
    assert "helpful" in model.requests[-1].messages[0].text
    collect(assistant.reply([], Message.user("hi"), system_prompt="concise"))
    assert "terse" in model.requests[-1].messages[0].text
    collect(assistant.reply([], Message.user("hi"), system_prompt="Talk like a pirate."))
    assert model.requests[-1].messages[0].text == "Talk like a pirate."
    collect(assistant.reply([], Message.user("hi"), system_prompt=""))
    assert model.requests[-1].messages[0].role == "user"
    with pytest.raises(InvalidParams, match="unknown system prompt"):
        collect(assistant.reply([], Message.user("hi"), system_prompt="no-such-persona"))
    collect(assistant.reply([], Message.user("hi"), system_prompt="../prompts/default"))
    assert model.requests[-1].messages[0].text == "../prompts/default"  # text, never a path


def test_empty_turn_rejected():
    with pytest.raises(InvalidParams, match="empty"):
        collect(make_assistant().reply([], Message.user("   ")))


def test_missing_model_explains_itself():
    assistant = Assistant(Settings(), None, None, chat_error="chat model 'x' is not downloaded")
    with pytest.raises(ModelUnavailable, match="not downloaded"):
        collect(assistant.reply([], Message.user("hi")))


@pytest.mark.parametrize(
    "field,value",
    [
        ("temperature", -0.1),
        ("temperature", 2.5),
        ("temperature", float("nan")),
        ("top_p", 0),
        ("top_p", 1.5),
        ("max_new_tokens", 0),
        ("max_new_tokens", 10**6),
        ("seed", -1),
        ("seed", "x"),
        ("max_new_tokens", 1.5),
    ],
)
def test_params_out_of_range_name_the_field(field, value):
    with pytest.raises(InvalidParams, match=field):
        make_assistant().params(**{field: value})


def test_params_defaults_and_bounds():
    assistant = make_assistant(default_max_new_tokens=77)
    assert assistant.params().max_new_tokens == 77
    assert assistant.params(temperature=0, top_p=1, seed=3).temperature == 0
    assert assistant.params(temperature=2.0).temperature == 2.0


def test_images_in_two_turns_reach_the_model(tmp_path):
    model = FakeChatModel()
    assistant = make_assistant(model)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (64, 48), "red").save(a)
    Image.new("RGB", (48, 64), "blue").save(b)
    history = [Message.user("first", (str(a),)), Message("assistant", "a red one")]
    collect(assistant.reply(history, Message.user("and this?", images=(str(b),))))
    sent = model.requests[-1].messages
    images = [img for m in sent for img in m.images]
    assert [img.getpixel((0, 0)) for img in images] == [(255, 0, 0), (0, 0, 255)]
    assert [m.role for m in sent] == ["system", "user", "assistant", "user"]


def test_image_cap_keeps_newest():
    msgs = [Message.user(str(i), ("a", "b")) for i in range(3)]
    kept = limit_images(msgs, 3)
    assert [len(m.images) for m in kept] == [0, 1, 2]
    assert [m.text for m in kept] == ["0", "1", "2"]
    assert all(not m.images for m in limit_images(msgs, 0))


def test_context_trim_keeps_system_and_newest_turns():
    system = Message("system", "sys")
    history = [Message("user" if i % 2 == 0 else "assistant", f"m{i} " * 10) for i in range(10)]
    kept = fit_to_context(system, history, lambda m: 10, budget=45)
    assert kept[0] is system
    assert kept[-1] is history[-1]
    assert kept[1].role == "user"  # never begins with an orphan assistant reply
    assert len(kept) - 1 <= 4


def test_long_history_is_trimmed_to_model_context():
    model = FakeChatModel(context_length=200)
    assistant = make_assistant(model, default_max_new_tokens=50)
    history = []
    for i in range(40):
        history += [Message("user", f"question {i} " * 3), Message("assistant", f"answer {i}")]
    collect(assistant.reply(history, Message.user("last question")))
    sent = model.requests[-1].messages
    assert sent[0].role == "system" and sent[-1].text == "last question"
    assert sum(model.count_tokens(m) for m in sent) <= 200 - 50
    assert len(sent) < len(history)


def test_a_long_reply_asked_for_keeps_the_history_and_takes_the_room_left():
    # "Max new tokens" near the context (1536 of 2048 on the page) must not drop most of the
    # chat to reserve it: at most a quarter of the context is kept free for the reply.
    model = FakeChatModel(context_length=400)
    assistant = make_assistant(model)
    history = []
    for i in range(40):
        history += [Message("user", f"question {i} " * 3), Message("assistant", f"answer {i}")]
    collect(assistant.reply(history, Message.user("last question"), assistant.params(max_new_tokens=350)))
    used = sum(model.count_tokens(m) for m in model.requests[-1].messages)
    assert 400 - 350 < used <= 400 - 100


def test_stop_filter_holds_back_partial_matches():
    f = StopFilter(["STOP"])
    out = f.feed("abc ST") + f.feed("O") + f.feed("P tail")
    assert out == "abc " and f.stopped
    g = StopFilter(["STOP"])
    assert g.feed("ST") == "" and g.feed("ar") == "STar" and not g.stopped


def test_stop_sequence_ends_reply_and_frees_model():
    model = FakeChatModel(chunks=["one ", "two ", "th", "ree ", "four"])
    assistant = make_assistant(model)
    events = collect(assistant.reply([], Message.user("count"), assistant.params(stop=["three"])))
    assert events[-1].text == "one two "
    assert events[-1].stats.finish_reason == "stop"
    assert model.requests[-1].cancel.is_set()
    assert not assistant.queue.busy


def test_closing_the_stream_cancels_and_frees_the_model():
    model = FakeChatModel(chunks=["x"] * 100, delay_s=0.01)
    assistant = make_assistant(model)
    stream = assistant.reply([], Message.user("go"))
    for event in stream:
        if isinstance(event, Token):
            break
    stream.close()
    assert model.requests[-1].cancel.is_set()
    assert not assistant.queue.busy and model.active == 0


def test_cancel_event_stops_generation():
    model = FakeChatModel(chunks=["x"] * 100, delay_s=0.01)
    assistant = make_assistant(model)
    cancel = threading.Event()
    seen = 0
    for event in assistant.reply([], Message.user("go"), cancel=cancel):
        if isinstance(event, Token):
            seen += 1
            if seen == 3:
                cancel.set()
        last = event
    assert isinstance(last, Done) and last.stats.finish_reason == "cancelled"
    assert last.stats.tokens <= 4


def test_concurrent_callers_run_one_at_a_time_in_arrival_order():
    model = FakeChatModel(chunks=["a", "b", "c"], delay_s=0.05)
    assistant = make_assistant(model)
    finished, queued_seen = [], []

    def user(i):
        for event in assistant.reply([], Message.user(f"user {i}")):
            if isinstance(event, Queued):
                queued_seen.append(i)
        finished.append(i)

    threads = []
    for i in range(4):
        t = threading.Thread(target=user, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(0.03)  # arrive in order
    for t in threads:
        t.join(10)
    assert finished == [0, 1, 2, 3]
    assert model.max_active == 1
    assert set(queued_seen) >= {2, 3}
    assert [r.messages[-1].text for r in model.requests] == [f"user {i}" for i in range(4)]


def test_turn_queue_positions_and_leaving_early():
    q = TurnQueue()
    a, b, c = q.enter(), q.enter(), q.enter()
    assert q.wait(a, 0.1)
    assert q.position(a) == 0 and q.position(b) == 1 and q.position(c) == 2
    q.leave(b)  # gave up while waiting
    assert q.position(c) == 1
    assert not q.wait(c, 0.05)
    q.leave(a)
    assert q.wait(c, 0.1)
    q.leave(c)
    assert not q.busy


def test_a_read_ahead_gives_way_to_other_turns_but_not_to_its_own_message():
    q = TurnQueue()
    reading = q.enter()
    assert q.wait(reading, 0.1)
    photos = frozenset({"photo-digest"})
    assert not q.someone_else_waits(photos)  # nobody waits
    own = q.enter(photos | {"another"})  # the message the photo is read for (and one more photo)
    assert not q.someone_else_waits(photos)
    other = q.enter()  # another user's turn
    assert q.someone_else_waits(photos)
    q.leave(other)
    assert not q.someone_else_waits(photos)
    q.leave(own)
    q.leave(reading)
    assert not q.busy


class SlowReader(FakeChatModel):
    """A model whose reading ahead takes ``read_s`` unless it is asked to give way."""

    def __init__(self, read_s: float):
        super().__init__()
        self.read_s = read_s
        self.gave_way: list[bool] = []

    def warm(self, request, give_way=None):
        deadline = time.monotonic() + self.read_s
        while time.monotonic() < deadline:
            if give_way is not None and give_way():
                self.gave_way.append(True)
                return
            time.sleep(0.005)  # a layer
        self.gave_way.append(False)


@pytest.mark.parametrize("whose", ["another user's", "its own"])
def test_a_read_ahead_stops_for_another_turn_and_finishes_for_its_own(whose, tmp_path):
    model = SlowReader(read_s=2.0)
    assistant = Assistant(Settings(model="fake", data_dir=tmp_path), model, None)
    photo = Image.new("RGB", (64, 48), "orange")
    reading = assistant.prepare([], Message.user("", [photo]))
    assert reading is not None
    time.sleep(0.2)  # the read-ahead has the model now
    sent = Message.user("What is this?", [photo]) if whose == "its own" else Message.user("Hi there")
    reply = assistant.reply([], sent, GenerationParams(max_new_tokens=2)).wait()
    reading.join(5)
    assert reply.text == "Hello, "
    # Its own message waits for the reading it will reuse; anyone else's stops it.
    assert model.gave_way == ([False] if whose == "its own" else [True])


def test_conversation_history_ops():
    conv = [
        Message("user", "q1"),
        Message("assistant", "a1"),
        Message("user", "q2"),
        Message("assistant", "a2"),
    ]
    history, user = for_regenerate(conv)
    assert user.text == "q2" and [m.text for m in history] == ["q1", "a1"]
    history, edited = edit_user_message(conv, 0, "q1 edited")
    assert edited.text == "q1 edited" and history == []
    with pytest.raises(ValueError):
        edit_user_message(conv, 1, "x")
    conv, user = undo_last_turn(conv)
    assert user.text == "q2"
    assert [m.text for m in conv] == ["q1", "a1"]


def test_generation_params_validated_type():
    with pytest.raises(InvalidParams, match="stop"):
        GenerationParams.within(4096, stop=("",))


def test_trimming_cuts_in_blocks_so_the_prompt_start_stays_put():
    """Once the history no longer fits, it is cut in blocks: the next turns keep the same first
    message (so the prefix cache keeps serving them) instead of it moving every turn."""

    def start_changes(block: float) -> int:
        history, starts = [], []
        for turn in range(40):
            history += [Message("user", f"question {turn}"), Message("assistant", f"answer {turn}")]
            kept = fit_to_context(None, history, lambda m: 10, budget=400, block=block)
            assert 10 * len(kept) <= 400 and kept[-1] is history[-1] and kept[0].role == "user"
            starts.append(kept[0].text)
        return sum(1 for a, b in zip(starts, starts[1:]) if a != b)

    assert start_changes(block=0) >= 19  # message by message: the start moves every turn
    assert start_changes(block=0.25) <= 5  # in blocks: every fifth turn or so
