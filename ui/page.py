"""Lay out the page and wire its events. Behaviour lives in the modules this one calls."""

from __future__ import annotations

from functools import partial

import gradio as gr

from ui import actions, endpoint, render, settings_panel, sidebar
from ui.respond import report_error, respond
from ui.session import ChatSession

# Replies queue in the engine (one generation at a time, first come first served, with a
# position shown to whoever waits). Gradio's own queue only caps how many wait there.
CONCURRENCY = 32
PLACEHOLDER = (
    "### Ask anything\nType, attach photos (drag & drop or paste), or record your voice with the 🎤."
)


def build_ui(assistant, settings, store) -> gr.Blocks:
    with gr.Blocks(title="Multimodal assistant", fill_height=True) as demo:
        session = gr.State(ChatSession())

        with gr.Sidebar(label="History", position="left", elem_id="history-sidebar"):
            new_btn = gr.Button("➕ New chat", variant="primary", size="sm")
            history = gr.Radio(
                choices=[], label="Past conversations", elem_classes="history", elem_id="history"
            )
            with gr.Accordion("Rename or delete this chat", open=False):
                title = gr.Textbox(label="Name", placeholder="A name for this chat", max_lines=1)
                with gr.Row():
                    rename_btn = gr.Button("Rename", size="sm")
                    delete_btn = gr.Button("Delete", size="sm", variant="stop")

        with gr.Sidebar(label="Settings", position="right", open=False, elem_id="settings"):
            gr.Markdown("### Settings")
            panel = settings_panel.build(assistant, settings)

        gr.Markdown(
            render.banner(assistant.chat_error),
            visible=assistant.chat_model is None,
            elem_classes="banner",
            elem_id="banner",
        )
        chatbot = gr.Chatbot(
            show_label=False,
            editable="user",
            buttons=["copy", "copy_all"],
            feedback_options=None,
            # Gradio 6.31's editor breaks (JS error) on a grouped bubble holding a photo; each
            # turn is one message anyway, so grouping changes nothing else.
            group_consecutive_messages=False,
            placeholder=PLACEHOLDER,
            scale=1,  # with fill_height: grows to the window, then scrolls inside
            elem_id="chat",
        )
        stats = gr.Markdown("", elem_classes="stats", elem_id="stats")
        box = gr.MultimodalTextbox(
            sources=["upload", "microphone"],
            file_count="multiple",
            file_types=["image", "audio"],
            placeholder="Message…  (Enter sends, Shift+Enter starts a new line)",
            show_label=False,
            autofocus=True,
            max_lines=12,
            submit_btn=True,
            stop_btn=False,
            elem_id="input",
        )
        with gr.Row(elem_classes="turn-actions"):
            regen_btn = gr.Button("🔄 Regenerate", size="sm")
            undo_btn = gr.Button("↩️ Undo last turn", size="sm")
            clear_btn = gr.Button("🧹 Clear", size="sm")

        endpoint.install(assistant, CONCURRENCY, store.media_dir)

        # -- wiring ----------------------------------------------------------------------
        answer = dict(
            fn=partial(respond, assistant, store),
            inputs=[session, *panel.inputs],
            outputs=[chatbot, stats, box, history],
            concurrency_limit=CONCURRENCY,
            show_progress="hidden",
            api_visibility="private",
        )
        # Quick handlers still go through the queue (toasts from queue=False events are
        # dropped), but nothing limits how many run at once.
        quick = dict(concurrency_limit=None, show_progress="hidden", api_visibility="private")
        for start in (
            box.submit(actions.send, [session, box], [chatbot, box], **quick),
            regen_btn.click(actions.regenerate, [session], [chatbot, box], **quick),
            chatbot.retry(actions.regenerate, [session], [chatbot, box], **quick),
            chatbot.edit(actions.edit, [session], [chatbot, box], **quick),
        ):
            start.success(**answer).then(report_error, [session], None, **quick)
        box.stop(actions.stop, [session], None, queue=False, api_visibility="private")  # at once

        undo = partial(actions.undo, store)
        for trigger in (undo_btn.click, chatbot.undo):
            trigger(undo, [session], [chatbot, stats, box, history], **quick)
        fresh = partial(sidebar.new_chat, store)
        for trigger in (new_btn.click, clear_btn.click, chatbot.clear):
            trigger(fresh, [session], [chatbot, stats, title, history], **quick)
        history.input(
            partial(sidebar.open_conversation, store),
            [session, history],
            [chatbot, stats, title, history],
            **quick,
        )
        for trigger in (rename_btn.click, title.submit):
            trigger(partial(sidebar.rename, store), [session, title], [history], **quick)
        delete_btn.click(partial(sidebar.delete, store), [session], [chatbot, stats, title, history], **quick)

        def on_load(tab: ChatSession, request: gr.Request):  # a closure: Gradio spots gr.Request here
            return sidebar.on_load(store, tab, request)

        demo.load(on_load, [session], [history], **quick)
    return demo
