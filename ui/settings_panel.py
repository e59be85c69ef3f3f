"""The settings panel: persona / system prompt, the generation options, what is loaded.

The generation controls are made from :class:`GenerationParams`' declarations (every option
with a page label gets one), so a new option appears here without an edit to this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from assistant.options import knobs
from assistant.prompting import load_persona
from assistant.prompting import personas as persona_names
from ui import render

CUSTOM_HINT = "Leave empty to use the persona above."
PROMPT_ROOM_TOKENS = 512  # of the model's context, kept for the prompt when capping replies


@dataclass
class SettingsPanel:
    persona: gr.Dropdown
    custom_prompt: gr.Textbox
    options: dict[str, gr.components.Component]  # generation option name -> its control

    @property
    def inputs(self) -> list:
        """In the order :func:`ui.inputs.choices` takes them."""
        return [self.persona, self.custom_prompt, *self.options.values()]


DESCRIPTION_CHARS = 70


def persona_label(name: str, prompts_dir) -> str:
    """A persona's name and what it does: the first sentence of its prompt, shortened."""
    try:
        text = " ".join(load_persona(name, prompts_dir).split())
    except Exception:
        return name
    first = text.split(". ")[0].rstrip(".")
    for lead in ("You are a ", "You are an ", "You are ", "You "):
        if first.startswith(lead):
            first = first[len(lead) :]
            break
    first = first[:1].upper() + first[1:]
    if len(first) > DESCRIPTION_CHARS:
        first = first[: DESCRIPTION_CHARS - 1].rstrip() + "…"
    return f"{name} — {first}" if first else name


def reply_length_cap(assistant, settings) -> int:
    """The longest reply the slider offers: the configured cap, and room left for a prompt in
    the loaded model's context (a 4096-token reply cannot start on a 2048-token model)."""
    cap = settings.max_new_tokens_cap
    info = assistant.chat_model.info if assistant.chat_model is not None else None
    context = getattr(info, "context_length", None)
    if isinstance(context, int) and context > 0:
        cap = min(cap, max(context // 2, context - PROMPT_ROOM_TOKENS))
    return max(1, cap)


def _control(name: str, knob, defaults, cap: int) -> gr.components.Component:
    default = getattr(defaults, name)  # the server's and the model's defaults (Assistant.params)
    if name == "max_new_tokens":
        default = min(default, cap)
    if knob.control == "text":
        # A textbox, not gr.Number: a Number field shows (and sends) 0 when empty.
        return gr.Textbox(
            value="" if default is None else str(default),
            label=knob.label,
            placeholder="random",
            max_lines=1,
            info=knob.help[:1].upper() + knob.help[1:],
        )
    high = cap if name == "max_new_tokens" else knob.high
    return gr.Slider(knob.low, high, value=default, step=knob.step, label=knob.label, info=knob.help)


def build(assistant, settings) -> SettingsPanel:
    personas = persona_names(settings.prompts_dir)
    default_persona = (
        settings.system_prompt if settings.system_prompt in personas else (personas[0] if personas else None)
    )
    panel = SettingsPanel(
        persona=gr.Dropdown(
            [(persona_label(name, settings.prompts_dir), name) for name in personas],
            value=default_persona,
            label="Persona",
            info="How the assistant answers (system prompts from prompts/)",
        ),
        custom_prompt=gr.Textbox(
            value="" if settings.system_prompt in personas else settings.system_prompt,
            label="Custom system prompt",
            placeholder=CUSTOM_HINT,
            lines=3,
        ),
        options={
            name: _control(name, knob, assistant.params(), reply_length_cap(assistant, settings))
            for name, _, knob in knobs()
            if knob.label
        },
    )
    gr.Markdown(render.model_info(assistant.describe()), elem_classes="model-info")
    return panel
