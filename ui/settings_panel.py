"""The settings panel: persona / system prompt, the generation options, what is loaded.

The generation controls are made from :class:`GenerationParams`' declarations (every option
with a page label gets one), so a new option appears here without an edit to this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from assistant import prompts
from assistant.errors import InvalidParams
from assistant.models.base import GenerationParams, knobs, value_type
from ui import render

CUSTOM_HINT = "Leave empty to use the persona above."


@dataclass
class SettingsPanel:
    persona: gr.Dropdown
    custom_prompt: gr.Textbox
    options: dict[str, gr.components.Component]  # generation option name -> its control

    @property
    def inputs(self) -> list:
        """In the order :func:`choices` takes them."""
        return [self.persona, self.custom_prompt, *self.options.values()]


def _control(name: str, field, knob, settings) -> gr.components.Component:
    default = settings.default_max_new_tokens if name == "max_new_tokens" else field.default
    if knob.control == "text":
        # A textbox, not gr.Number: a Number field shows (and sends) 0 when empty.
        return gr.Textbox(
            value="" if default is None else str(default),
            label=knob.label,
            placeholder="random",
            max_lines=1,
            info=knob.help[:1].upper() + knob.help[1:],
        )
    high = settings.max_new_tokens_cap if name == "max_new_tokens" else knob.high
    return gr.Slider(knob.low, high, value=default, step=knob.step, label=knob.label, info=knob.help)


def build(assistant, settings) -> SettingsPanel:
    personas = prompts.available(settings.prompts_dir)
    default_persona = (
        settings.system_prompt if settings.system_prompt in personas else (personas[0] if personas else None)
    )
    panel = SettingsPanel(
        persona=gr.Dropdown(
            personas, value=default_persona, label="Persona", info="System prompts from prompts/"
        ),
        custom_prompt=gr.Textbox(
            value="" if settings.system_prompt in personas else settings.system_prompt,
            label="Custom system prompt",
            placeholder=CUSTOM_HINT,
            lines=3,
        ),
        options={name: _control(name, field, knob, settings) for name, field, knob in knobs() if knob.label},
    )
    gr.Markdown(render.model_info(assistant.describe()), elem_classes="model-info")
    return panel


def choices(assistant, persona, custom_prompt, *values) -> tuple[GenerationParams, str]:
    """(GenerationParams, system prompt text) from the panel's values; InvalidParams when out of range."""
    shown = [(name, field, knob) for name, field, knob in knobs() if knob.label]
    params = assistant.params(
        **{name: _read(name, field, knob, value) for (name, field, knob), value in zip(shown, values)}
    )
    # The custom text wins and is taken literally (even one word); else the persona's text.
    custom = (custom_prompt or "").strip()
    system_prompt = custom or (assistant.system_prompt(persona) if persona else "")
    return params, system_prompt


def _read(name: str, field, knob, value):
    """A control's value as the option's type (sliders send floats; a text box sends text)."""
    whole = value_type(field) is int
    if knob.control == "text":
        text = str(value if value is not None else "").strip()
        if not text:
            return None
        try:
            return int(text) if whole else float(text)
        except ValueError:
            kind = "whole number" if whole else "number"
            raise InvalidParams(
                f"the {name} must be a {kind} (or empty for random), got {text!r}", param=name
            ) from None
    return int(value) if whole else float(value)
