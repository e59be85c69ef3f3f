"""The settings panel: persona / system prompt, sampling knobs, and what is loaded (read-only)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from assistant import prompts
from assistant.errors import InvalidParams
from assistant.models.base import GenerationParams
from ui import render

CUSTOM_HINT = "Leave empty to use the persona above."


@dataclass
class SettingsPanel:
    persona: gr.Dropdown
    custom_prompt: gr.Textbox
    temperature: gr.Slider
    top_p: gr.Slider
    max_new_tokens: gr.Slider
    seed: gr.Textbox

    @property
    def inputs(self) -> list:
        """In the order :func:`choices` takes them."""
        return [self.persona, self.custom_prompt, self.temperature, self.top_p, self.max_new_tokens, self.seed]


def build(assistant, settings) -> SettingsPanel:
    defaults = GenerationParams()
    personas = prompts.available(settings.prompts_dir)
    default_persona = settings.system_prompt if settings.system_prompt in personas else (personas[0] if personas else None)
    panel = SettingsPanel(
        persona=gr.Dropdown(personas, value=default_persona, label="Persona", info="System prompts from prompts/"),
        custom_prompt=gr.Textbox(
            value="" if settings.system_prompt in personas else settings.system_prompt,
            label="Custom system prompt",
            placeholder=CUSTOM_HINT,
            lines=3,
        ),
        temperature=gr.Slider(0, 2, value=defaults.temperature, step=0.05, label="Temperature", info="0 = always the most likely word"),
        top_p=gr.Slider(0.05, 1, value=defaults.top_p, step=0.05, label="Top-p"),
        max_new_tokens=gr.Slider(1, settings.max_new_tokens_cap, value=settings.default_max_new_tokens, step=1, label="Max new tokens"),
        # A textbox, not gr.Number: a Number field shows (and sends) 0 when empty.
        seed=gr.Textbox(value="", label="Seed", placeholder="random", max_lines=1, info="A whole number makes replies repeatable"),
    )
    gr.Markdown(render.model_info(assistant, settings), elem_classes="model-info")
    return panel


def choices(assistant, persona, custom_prompt, temperature, top_p, max_new_tokens, seed):
    """(GenerationParams, system prompt text) from the panel's values; InvalidParams when out of range."""
    params = assistant.params(
        temperature=float(temperature),
        top_p=float(top_p),
        max_new_tokens=int(max_new_tokens),
        seed=_seed(seed),
    )
    # The custom text wins and is taken literally (even one word); else the persona's text.
    custom = (custom_prompt or "").strip()
    system_prompt = custom or (assistant.system_prompt(persona) if persona else "")
    return params, system_prompt


def _seed(text) -> int | None:
    text = str(text if text is not None else "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidParams(f"the seed must be a whole number (or empty for random), got {text!r}") from None
