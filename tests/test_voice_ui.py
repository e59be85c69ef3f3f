"""The page's voice, server side (ui/voice.py), without a browser: the hidden state, which
update holds the reply, the per-tab hub, and the wrapper that feeds a streaming reply to speech."""

from __future__ import annotations

import json
import threading

import anyio

from ui.session import ChatSession
from ui.voice import VoiceHub, speaking, voice_state

TAB = "tab-0123456789"


class Spoken:
    def __init__(self, language=None):
        self.language, self.fed, self.finished, self.cancelled = language, [], False, False

    def feed(self, text):
        self.fed.append(text)

    def finish(self):
        self.finished = True

    def cancel(self):
        self.cancelled = True


class FakeAssistant:
    synthesizer = object()

    def __init__(self):
        self.spoken: list[Spoken] = []

    def speak_stream(self, language=None, listener_timeout_s=None):
        self.spoken.append(Spoken(language))
        return self.spoken[-1]


def chat(text):
    return ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": text}], "", None, None)


def test_voice_state_takes_only_what_it_understands():
    good = voice_state(json.dumps({"tab": TAB, "read": True, "language": "es"}))
    assert good == {"tab": TAB, "read": True, "language": "es"}
    assert voice_state("") == {}
    assert voice_state("not json") == {}
    assert voice_state(json.dumps({"tab": "x", "read": True})) == {}  # too short a key
    assert voice_state(json.dumps({"tab": "../../etc", "read": True})) == {}
    odd = voice_state(json.dumps({"tab": TAB, "read": "yes", "language": "<script>"}))
    assert odd == {"tab": TAB, "read": False, "language": None}


def test_the_hub_serves_each_tab_its_own_newest_reply():
    async def main():
        hub = VoiceHub()
        first, second = Spoken(), Spoken()
        one = hub.start("ann", TAB, first)
        assert await hub.wait("ann", TAB, 0, timeout=0.1) == (one, first)
        assert await hub.wait("bob", TAB, 0, timeout=0.05) is None  # another user, same key: nothing
        assert await hub.wait("ann", TAB, one, timeout=0.05) is None  # nothing newer yet
        assert hub.waiting() == 0
        # the page's handler starts the next reply on a worker thread: the waiter is woken at once
        starter = threading.Timer(0.2, lambda: hub.start("ann", TAB, second))
        starter.start()
        got = await hub.wait("ann", TAB, one, timeout=5)
        starter.join()
        assert got is not None and got[1] is second and got[0] > one
        assert first.cancelled  # a new reply silences the one before
        hub.stop("ann", TAB)
        assert second.cancelled

    anyio.run(main)


def test_waiting_for_a_reply_holds_no_thread():
    async def main():
        hub = VoiceHub()
        threads = threading.active_count()
        async with anyio.create_task_group() as group:
            for i in range(100):
                group.start_soon(hub.wait, "bob", f"tab-{i:010d}", 0, 30.0)
            await anyio.sleep(0.2)
            assert hub.waiting() == 100
            assert threading.active_count() == threads  # the old hub parked one thread each
            group.cancel_scope.cancel()
        assert hub.waiting() == 0

    anyio.run(main)


def run_wrapped(updates, state, stopped=False, error=None, continues=None):
    hub, assistant = VoiceHub(), FakeAssistant()
    tab = ChatSession()
    if continues is not None:
        from assistant.conversation import Message
        from ui.session import Pending

        tab.pending = Pending(Message.user("go on"), continues=Message("assistant", continues))

    def handler(request, tab_, *panel):  # the page's answer: it tells the listener each token
        for token in updates:
            if tab_.listener is not None:
                tab_.listener(token)
            yield chat(token)
        tab_.stopped, tab_.error = stopped, error

    out = list(speaking(hub, assistant, handler)(None, json.dumps(state), tab, "panel"))
    return out, assistant


def test_the_wrapper_feeds_the_reply_as_it_grows_and_finishes_it():
    updates = ["The capital", " of France is Paris.", " Yes."]
    out, assistant = run_wrapped(updates, {"tab": TAB, "read": True, "language": "fr"})
    assert out == [chat(t) for t in updates]  # the page sees exactly what it saw before
    (spoken,) = assistant.spoken
    assert "".join(spoken.fed) == "The capital of France is Paris. Yes."
    assert spoken.fed[0] == "The capital" and spoken.language == "fr"
    assert spoken.finished and not spoken.cancelled


def test_a_stopped_reply_is_not_finished_but_cancelled():
    _, assistant = run_wrapped(["Once upon a time"], {"tab": TAB, "read": True}, stopped=True)
    assert assistant.spoken[0].cancelled and not assistant.spoken[0].finished


def test_nothing_is_spoken_unless_the_tab_asks():
    out, assistant = run_wrapped(["Hello."], {"tab": TAB, "read": False})
    assert out == [chat("Hello.")] and assistant.spoken == []
    _, assistant = run_wrapped(["Hello."], {})
    assert assistant.spoken == []


def test_continue_reads_only_what_it_adds():
    # (the engine streams only what a Continue adds after the reply's "Once upon a time")
    _, assistant = run_wrapped(
        [" there was a cat.", " It"], {"tab": TAB, "read": True}, continues="Once upon a time"
    )
    assert "".join(assistant.spoken[0].fed) == " there was a cat. It"
