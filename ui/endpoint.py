"""The ``/chat`` API endpoint, shaped like ``gr.ChatInterface(multimodal=True)``'s.

``predict({"text": …, "files": […]}, history, api_name="/chat")`` returns the reply;
``submit(…)`` streams it (each update is the whole reply so far). Audio files are
transcribed and used as the user's words. Stateless: the caller sends the history.
"""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from assistant.conversation import Message
from assistant.core import Token
from assistant.errors import AssistantError, InvalidParams
from assistant.options import knobs
from ui import inputs, render
from ui.session import owner_of

log = logging.getLogger(__name__)


def install(assistant, concurrency_limit: int | None, media_dir: Path) -> None:
    # Hidden components give the endpoint ChatInterface's message input: Gradio uploads the
    # client's files and checks every path in it.
    readable = (Path(get_upload_folder()).resolve(), Path(media_dir).resolve())
    message = gr.MultimodalTextbox(file_count="multiple", visible=False, label="message")
    history = gr.JSON(value=[], visible=False, label="history")
    options = gr.JSON(value={}, visible=False, label="options")
    reply = gr.Textbox(visible=False, label="reply")
    trigger = gr.Button(visible=False)

    def chat(request: gr.Request, message: dict, history: list, options: dict | None = None):
        """Answer ``message`` ({"text", "files"}) after ``history`` (messages format)."""
        try:
            params, system_prompt = generation_options(assistant, options)
            # A client that goes away closes this generator, and with it the reply, which
            # frees the model at once.
            with assistant.reply(
                to_messages(history, readable),
                inputs.message(message),
                params,
                system_prompt=system_prompt,
                user=owner_of(request),
            ) as reply:
                yielded = False
                for event in reply:
                    if isinstance(event, Token):
                        yielded = True
                        yield reply.text
            if not yielded:
                yield reply.text
        except AssistantError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception:
            log.exception("/chat failed")
            raise gr.Error(render.UNEXPECTED, print_exception=False) from None

    trigger.click(
        chat,
        [message, history, options],
        reply,
        api_name="chat",
        concurrency_limit=concurrency_limit,
        show_progress="hidden",
    )


# The page's generation settings (declared once, in GenerationParams), plus the persona.
OPTION_KEYS = (*(name for name, _, knob in knobs() if knob.label), "system_prompt")


def generation_options(assistant, options):
    """(GenerationParams, system prompt or None) from the optional third argument."""
    options = options or {}
    if not isinstance(options, dict):
        raise InvalidParams('options must be an object such as {"temperature": 0}')
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise InvalidParams(f"unknown option {unknown[0]!r}: use {', '.join(OPTION_KEYS)}")
    system_prompt = options.get("system_prompt")
    params = assistant.params(**{k: v for k, v in options.items() if k != "system_prompt"})
    return params, system_prompt


def to_messages(history, readable_dirs: tuple[Path, ...]) -> list[Message]:
    """Messages-format history → engine messages (text parts joined, files checked, then as
    :func:`ui.inputs.to_message` takes a message sent before)."""
    if not isinstance(history, list):
        raise InvalidParams("history must be a list of {'role', 'content'} messages")
    messages = []
    for item in history:
        if not isinstance(item, dict) or item.get("role") not in ("user", "assistant", "system"):
            raise InvalidParams("each history message needs a role (user or assistant) and a content")
        if item["role"] == "system":
            continue  # the persona comes from the server's settings
        content = item.get("content")
        texts: list[str] = []
        files: list[str] = []
        for part in content if isinstance(content, list) else [content]:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif isinstance(part, dict) and (part.get("path") or part.get("file")):
                files.append(_uploaded(inputs.file_path(part), readable_dirs))
            elif part is not None:
                raise InvalidParams(f"history content not understood: {str(part)[:80]!r}")
        words = "\n".join(t for t in texts if t)
        messages.append(inputs.to_message(words, files, item["role"], sent_before=True))
    return messages


def _uploaded(path: str, readable_dirs: tuple[Path, ...]) -> str:
    """Only files uploaded to this server (or saved chats' images) may be read."""
    resolved = Path(path).resolve()
    if not any(resolved.is_relative_to(d) for d in readable_dirs):
        raise InvalidParams(
            "files in the history must be uploaded with the request (gradio_client.handle_file)"
        )
    return str(resolved)
