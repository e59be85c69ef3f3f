"""The prefix KV cache: a follow-up reuses the keys/values of what the model has already read.

Fast part: the lookup rules on plain data (longest prefix, cut back at a different picture,
eviction, copy-or-take). Slow part: four tiny architectures whose processors differ (tiles,
Qwen's patch rows and 3D positions, one row per image, Gemma's sliding window), each answering
with reuse exactly as a fresh model does — same greedy tokens, first-step logits within 1e-4 —
over follow-ups, regenerate, an edit, a swapped picture of the same size, a new picture later,
and two interleaved conversations with different aspect ratios.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from assistant.conversation import ImageAttachment, Message
from assistant.models.base import ChatRequest, Usage
from assistant.models.prefix_cache import Entry, ImageSpan, PrefixCache, image_digest, reusable_length
from assistant.options import GenerationParams
from tools.random_models import ARCHITECTURES, build

LOGIT_TOLERANCE = 1e-4


class FakeKV:
    """Stands for a DynamicCache: only its length and crop matter to the cache's rules."""

    def __init__(self, length: int):
        self.length = length

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, tokens_to_remove: int) -> None:
        assert tokens_to_remove <= 0, "transformers' crop takes a negative count"
        self.length += tokens_to_remove


def entry(ids, images=(), nbytes=100) -> Entry:
    return Entry(list(ids), list(images), FakeKV(len(ids)), nbytes)


# --------------------------------------------------------------------------- the rules


def test_longest_prefix_wins_and_the_last_token_is_always_computed():
    cache = PrefixCache(10_000, min_reuse=2)
    cache.put(entry(range(10)))
    cache.put(entry([0, 1, 2, 9, 9]))
    kv, n = cache.take(list(range(10)), [])
    assert n == 9 and kv.get_seq_length() == 9  # the prompt's last token still needs its logits


def test_a_different_picture_of_the_same_size_cuts_the_reuse_at_its_first_token():
    red = ImageSpan(3, 7, "red")
    ids = [1, 2, 3, 50, 50, 50, 50, 4, 5, 6]
    assert reusable_length(entry(ids + [7], [red]), ids, [ImageSpan(3, 7, "red")]) == len(ids) - 1
    assert reusable_length(entry(ids + [7], [red]), ids, [ImageSpan(3, 7, "blue")]) == 3
    # only part of an image matched (a smaller one): never reuse half a picture
    assert (
        reusable_length(entry([1, 2, 3, 50, 50, 9], [ImageSpan(3, 5, "x")]), [1, 2, 3, 50, 50, 50, 1], [])
        == 3
    )


def test_too_short_a_match_starts_fresh():
    cache = PrefixCache(10_000, min_reuse=4)
    cache.put(entry([1, 2, 3, 4, 5]))
    assert cache.take([1, 2, 9, 9, 9], []) == (None, 0)
    assert len(cache) == 1


def test_a_continuation_takes_the_entry_a_short_share_copies_it():
    cache = PrefixCache(10_000, min_reuse=2)
    long = entry(range(100))
    cache.put(long)
    kv, n = cache.take([*range(10), 7, 7], [])  # e.g. another chat with the same system prompt
    assert n == 10 and kv is not long.kv and len(cache) == 1 and long.kv.get_seq_length() == 100
    kv, n = cache.take([*range(100), 5], [])  # the follow-up of the long chat
    assert n == 100 and kv is long.kv and len(cache) == 0


def test_least_recently_used_entries_go_first_under_count_and_bytes():
    cache = PrefixCache(1_000, max_entries=3, min_reuse=1)
    for i in range(4):
        cache.put(entry([i, i, i], nbytes=100))
    assert len(cache) == 3 and cache.take([0, 0, 0, 0], []) == (None, 0)  # the oldest was evicted
    cache.put(entry([9] * 5, nbytes=900))
    assert cache.nbytes <= 1_000
    cache.put(entry([8] * 5, nbytes=2_000))  # larger than the whole budget: not kept
    assert cache.take([8] * 6, []) == (None, 0)
    assert not PrefixCache(0).enabled


def test_an_entry_another_holds_all_of_is_kept_once():
    cache = PrefixCache(10_000, min_reuse=1)
    red = ImageSpan(2, 5, "red")
    cache.put(entry(range(20), [red]))
    cache.put(entry(range(12), [red]))  # a cropped copy of it (a read-ahead that gave way)
    assert len(cache) == 1 and len(cache._entries[0].ids) == 20
    cache.put(entry(range(30), [red]))  # it, extended: the shorter one goes
    assert len(cache) == 1 and len(cache._entries[0].ids) == 30
    cache.put(entry(range(12), [ImageSpan(2, 5, "blue")]))  # same ids, another picture: both stay
    cache.put(entry([0, 1, 7, 7]))  # a different prompt
    assert len(cache) == 3


def test_image_digest_sees_pixels_not_just_size():
    a, b = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    assert image_digest(a) != image_digest(b) and image_digest(a) == image_digest(a.copy())


# --------------------------------------------------------------------------- tiny real models


def noise(seed: int, size: tuple[int, int]) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def user(text, *images) -> Message:
    return Message("user", text, tuple(ImageAttachment(i) for i in images))


@pytest.fixture(scope="module", params=ARCHITECTURES)
def pair(request, tmp_path_factory):
    """The same weights twice: one model reusing its cache, one always starting afresh (float32,
    so the comparison sees the cache and not bf16 rounding)."""
    from assistant.models.local import LocalChatModel

    path = str(build(request.param, tmp_path_factory.getbasetemp() / f"tiny-{request.param}"))
    reuse = LocalChatModel.load(path, image_max_side=128, dtype="float32")
    fresh = LocalChatModel.load(path, image_max_side=128, dtype="float32", prefix_cache_bytes=0)
    reuse.record_first_logits = fresh.record_first_logits = True
    return request.param, reuse, fresh


def answer(model, messages, n=6) -> tuple[str, Usage]:
    request = ChatRequest(messages, GenerationParams(max_new_tokens=n, min_new_tokens=n, temperature=0))
    items = list(model.stream(request))
    return "".join(i for i in items if isinstance(i, str)), items[-1]


def same_answer(pair, messages) -> int:
    """Both models answer; assert they agree; return how many prompt tokens were reused."""
    arch, reuse, fresh = pair
    text, usage = answer(reuse, messages)
    expected, _ = answer(fresh, messages)
    difference = float((reuse.first_logits - fresh.first_logits).abs().max())
    assert text == expected, f"{arch}: reuse changed the reply"
    assert difference < LOGIT_TOLERANCE, f"{arch}: first-step logits differ by {difference:.2e}"
    return usage.cached_tokens


@pytest.mark.slow
def test_reuse_answers_as_a_fresh_model_does(pair):
    arch, reuse, _ = pair
    a, b, c = noise(1, (96, 64)), noise(2, (96, 64)), noise(3, (64, 128))
    first = [user("What is this?", a)]
    assert same_answer(pair, first) == 0
    reply, _ = answer(reuse, first)
    history = [*first, Message("assistant", reply)]

    follow_up = [*history, user("Tell me more.")]
    assert same_answer(pair, follow_up) > 0  # the photo is not read again
    assert (
        same_answer(pair, follow_up) >= len(reuse.prepare_inputs(follow_up)["input_ids"][0]) - 1
    )  # regenerate
    assert (
        same_answer(pair, [user("What is this?", b), *history[1:], user("Tell me more.")]) >= 0
    )  # swapped photo
    assert same_answer(pair, [*history, user("And this one?", c)]) > 0  # a new photo in a later turn
    assert (
        same_answer(pair, [user("Hello", c), Message("assistant", "Hi."), user("And?")]) >= 0
    )  # another chat
    assert same_answer(pair, follow_up) > 0  # back to the first chat: still cached
    assert same_answer(pair, [user("WHAT is this?", a), *history[1:], user("Tell me more.")]) >= 0  # an edit


@pytest.mark.slow
def test_a_cancelled_reply_leaves_a_cache_that_is_still_right(pair):
    arch, reuse, _ = pair
    photo = noise(4, (96, 64))
    request = ChatRequest(
        [user("Describe it", photo)], GenerationParams(max_new_tokens=40, min_new_tokens=40, temperature=0)
    )
    for item in reuse.stream(request):
        if isinstance(item, str):
            request.cancel.set()  # stop after the first words
    assert same_answer(pair, [user("Describe it", photo), Message("assistant", "It"), user("Go on")]) >= 0


@pytest.mark.slow
def test_gemma_reuse_across_its_sliding_window(tmp_path_factory):
    """Gemma 3's sliding-window layers: the config-less cache keeps every token, so a long chat
    that crosses the window is cropped and reused correctly."""
    from assistant.models.local import LocalChatModel

    path = str(build("gemma3", tmp_path_factory.getbasetemp() / "tiny-gemma3"))
    reuse = LocalChatModel.load(path, image_max_side=64, dtype="float32")
    fresh = LocalChatModel.load(path, image_max_side=64, dtype="float32", prefix_cache_bytes=0)
    reuse.record_first_logits = fresh.record_first_logits = True
    window = reuse.model.config.get_text_config().sliding_window
    long_text = " ".join(f"word{i}" for i in range(window))
    history = [user(long_text, noise(5, (64, 48))), Message("assistant", "ok")]
    assert len(reuse.prepare_inputs(history)["input_ids"][0]) > window
    answer(reuse, [*history[:1]])
    assert same_answer(("gemma3", reuse, fresh), [*history, user("Summarise.")]) > window


@pytest.mark.slow
def test_out_of_memory_with_a_cache_clears_it_and_retries_once_without(pair, monkeypatch):
    arch, reuse, fresh = pair
    photo = noise(6, (96, 64))
    first = [user("What is this?", photo)]
    reply, _ = answer(reuse, first)
    follow_up = [*first, Message("assistant", reply), user("More?")]
    real_generate = reuse.model.generate
    calls = []

    class OutOfMemoryError(RuntimeError):  # what torch raises on CUDA, by name
        pass

    def generate(*args, **kwargs):
        calls.append(kwargs["past_key_values"].get_seq_length())
        if len(calls) == 1:
            raise OutOfMemoryError("CUDA out of memory")
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(reuse.model, "generate", generate)
    text, usage = answer(reuse, follow_up)
    assert calls[0] > 0 and calls[1] == 0  # first with the cache, then afresh
    assert usage.cached_tokens == 0 and text == answer(fresh, follow_up)[0]


@pytest.mark.slow
def test_continue_carries_on_the_unfinished_reply_and_reuses_what_was_read(pair):
    """Continue: the prompt is the question's, then the reply so far with no end of turn after
    it; what the model read for the reply is not read again, and the answer is a fresh model's."""
    arch, reuse, _ = pair
    first = [user("Describe it.", noise(4, (96, 64)))]
    part, _ = answer(reuse, first, n=4)
    unfinished = [*first, Message("assistant", part)]
    question = reuse.prepare_inputs(first)["input_ids"][0].tolist()  # ends with the reply's header
    ids = reuse.prepare_inputs(unfinished)["input_ids"][0].tolist()
    closed = reuse.prepare_inputs([*unfinished, user("x")])["input_ids"][0].tolist()
    assert ids[: len(question)] == question and len(ids) > len(question), arch
    assert closed[: len(ids)] == ids and len(closed) > len(ids) + 2, arch  # no end of turn yet
    assert same_answer(pair, unfinished) >= len(question), arch


@pytest.mark.slow
@pytest.mark.parametrize("where", ["vision tower", "language model"])
def test_a_read_ahead_that_gives_way_stops_at_once_and_leaves_the_cache_whole(pair, where):
    """A photo read ahead stops between two layers when someone else's turn waits: in the vision
    tower, or in the language model after some of its layers have stored the new tokens. The
    chat's cache it was extending is put back as it was: the next turn reuses it and answers as
    a fresh model does."""
    from torch import nn

    arch, reuse, _ = pair
    reuse.prefix_cache.clear()  # only this chat: what is reused can then only come from it
    first = [user("What is this?", noise(8, (96, 64)))]
    reply, _ = answer(reuse, first)
    history = [*first, Message("assistant", reply)]
    held = len(reuse.prepare_inputs(history)["input_ids"][0]) // 2  # surely cached
    lists = [(n, m) for n, m in reuse.model.named_modules() if isinstance(m, nn.ModuleList)]
    vision = sum(len(m) for n, m in lists if "vis" in n)
    stop_at = 2 if where == "vision tower" else vision + 2  # the second text layer
    polls = []

    def give_way() -> bool:
        polls.append(1)
        return len(polls) >= stop_at

    later = noise(9 if where == "vision tower" else 10, (96, 64))  # never seen before
    reuse.warm(ChatRequest([*history, user("", later)]), give_way=give_way)
    assert len(polls) == stop_at, f"{arch}: went on after giving way ({len(polls)} polls)"
    assert not any(layer._forward_pre_hooks for _, m in lists for layer in m), "hooks outlived the read-ahead"
    asked = [*history, user("And this one?", later)]
    cached = same_answer(pair, asked)
    assert held <= cached < len(reuse.prepare_inputs(history)["input_ids"][0]) + 2, (arch, cached)


@pytest.mark.slow
def test_a_photo_attached_while_typing_is_read_before_the_message_is_sent(pair, tmp_path):
    """Assistant.prepare reads a draft's photos ahead; the sent message then reuses that reading
    (the photo's tokens come from the cache) and gets the reply a fresh model gives."""
    from assistant.core import Assistant
    from assistant.settings import Settings

    arch, reuse, fresh = pair
    photo = tmp_path / "draft.png"
    noise(7, (96, 64)).save(photo)
    assistant = Assistant(Settings(model="tiny", data_dir=tmp_path / "data"), reuse, None)
    reuse.prefix_cache.clear()
    reading = assistant.prepare([], Message.user("", [str(photo)]), system_prompt="", literal_system=True)
    assert reading is not None
    reading.join(timeout=120)
    params = GenerationParams(max_new_tokens=6, min_new_tokens=6, temperature=0)
    sent = Message.user("What is this?", [str(photo)])
    reply = assistant.reply([], sent, params, system_prompt="", literal_system=True).wait()
    expected = Assistant(Settings(model="tiny", data_dir=tmp_path / "d2"), fresh, None).reply(
        [], sent, params, system_prompt="", literal_system=True
    )
    assert reply.text == expected.wait().text, arch
    assert reply.stats.cached_tokens >= reuse.image_tokens // 2, (arch, reply.stats.cached_tokens)
    # Text alone (no photo) is not read ahead: nothing slow to save.
    assert assistant.prepare([], Message.user("just words")) is None
