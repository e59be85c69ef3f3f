"""Small things a user notices: trimming that leaves room for the template, a reply-length
slider that fits the model, personas that say what they do."""

from __future__ import annotations

import gradio as gr

from assistant.conversation import PROMPT_MARGIN_TOKENS, Message, fit_to_context
from assistant.core import Assistant
from assistant.settings import Settings
from tests.fakes import FakeChatModel
from ui import settings_panel


def test_a_chat_at_the_limit_drops_one_more_old_turn():
    """The estimate runs a few tokens low (the template's own tokens): a history that fills
    the budget exactly is trimmed, so the real prompt still fits."""
    history = [Message("user" if i % 2 == 0 else "assistant", str(i)) for i in range(20)]
    budget = 20 * 50
    kept = fit_to_context(None, history, lambda m: 50, budget, block=0)
    assert len(kept) < 20 and kept[-1] is history[-1] and kept[0].role == "user"
    assert 50 * len(kept) <= budget - PROMPT_MARGIN_TOKENS
    # Well inside the budget nothing goes.
    assert len(fit_to_context(None, history[:10], lambda m: 50, budget, block=0)) == 10


def build_panel(context_length: int, cap: int = 4096, default: int = 512):
    settings = Settings(model="fake", max_new_tokens_cap=cap, default_max_new_tokens=default)
    assistant = Assistant(settings, FakeChatModel(context_length=context_length), None)
    with gr.Blocks():
        return settings_panel.build(assistant, settings)


def test_the_reply_length_slider_stays_inside_the_models_context():
    slider = build_panel(2048).options["max_new_tokens"]
    assert slider.maximum == 1536 < 2048 and slider.value == 512
    small = build_panel(512, default=512).options["max_new_tokens"]
    assert small.maximum == 256 and small.value == 256  # the default is brought down too
    assert build_panel(32768).options["max_new_tokens"].maximum == 4096  # the configured cap


def test_personas_say_what_they_do():
    persona = build_panel(2048).persona
    labels = dict((value, label) for label, value in persona.choices)
    assert labels["concise"] == "concise — Terse assistant"
    assert labels["describer"].startswith("describer — Describe images for people who cannot see")
    assert persona.value in labels


def test_the_no_model_banner_gives_the_exact_commands():
    from ui import render

    text = render.banner("chat model 'org/vlm' is not downloaded here", "org/vlm")
    assert '`make run ARGS="--model org/vlm"`' in text
    assert "`.venv/bin/hf download org/vlm`" in text and "`make tiny-model`" in text
    assert render.hf_cache() in text
    assert "⚠" not in text  # no emoji: a machine without an emoji font shows a box


def test_maths_delimiters_render_latex_but_never_take_prices_for_maths():
    from ui.render import LATEX_DELIMITERS

    lefts = {d["left"] for d in LATEX_DELIMITERS}
    assert {"$$", "\\(", "\\["} <= lefts
    assert "$" not in lefts  # "$5 or $10" would be read as the formula "5 or "
