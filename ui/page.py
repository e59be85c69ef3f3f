"""Lay out the page and wire its events. Behaviour lives in the modules this one calls."""

from __future__ import annotations

from functools import partial
from typing import Any

import gradio as gr

from ui import actions, endpoint, prefs, render, settings_panel, sidebar, voice
from ui.actions import report_error, respond
from ui.session import ChatSession, as_owner

# Replies queue in the engine (one generation at a time, first come first served, with a
# position shown to whoever waits). Gradio's own queue only caps how many wait there.
CONCURRENCY = 32
UPLOAD_SWEEP = (3600, 24 * 3600)  # (every, older than) seconds
PLACEHOLDER = (
    "### Ask anything\nType, attach photos, video clips or documents (PDF, text; drag & drop or paste), "
    "or record your voice with the microphone button."
)


def build_ui(assistant, settings, store) -> gr.Blocks:
    # delete_cache: uploads older than a day are swept every hour (saved chats keep their own copies).
    with gr.Blocks(title="Multimodal assistant", fill_height=True, delete_cache=UPLOAD_SWEEP) as demo:
        session = gr.State(ChatSession())
        # This browser's token (what the server remembers for it: ui/prefs.py) and, only to be
        # moved to the server, the copies browsers kept themselves before.
        browser, chat_kept, draft_kept, settings_kept = prefs.states(store.data_dir)
        # The open chat's id, for page.js to put in the address bar (?chat=ID).
        chat_id = gr.Textbox(visible="hidden", elem_id="chat-id", show_label=False)
        # Replies read aloud, dictation, voice mode: ui/voice.py and ui/static/voice.js.
        demo.voice_hub = voice.VoiceHub()
        voice_state, voice_send = voice.controls()
        # Answer versions: which messages have them (for page.js's "‹ 2/3 ›" arrows), and the
        # arrow pressed ("INDEX:STEP", written by page.js).
        versions = gr.Textbox(visible="hidden", elem_id="versions", show_label=False)
        version_pick = gr.Textbox(visible="hidden", elem_id="version-pick", show_label=False)

        with gr.Sidebar(label="History", position="left", elem_id="history-sidebar"):
            new_btn = gr.Button("New chat", variant="primary", size="sm", elem_id="new-chat")
            find = gr.Textbox(
                placeholder="Search chats", show_label=False, max_lines=1, elem_id="search", container=False
            )
            history = gr.Radio(
                choices=[], label="Past conversations", elem_classes="history", elem_id="history"
            )
            with gr.Accordion("This chat: rename, export, delete", open=False):
                title = gr.Textbox(label="Name", placeholder="A name for this chat", max_lines=1)
                with gr.Row():
                    rename_btn = gr.Button("Rename", size="sm")
                    delete_btn = gr.Button("Delete…", size="sm", variant="stop", elem_id="delete")
                with gr.Row():
                    export_btn = gr.Button("Export", size="sm", elem_id="export")
                    import_btn = gr.UploadButton(
                        "Import…", file_types=[".json"], file_count="single", size="sm", elem_id="import"
                    )
                exports = gr.File(
                    label="Markdown and JSON (photos included)",
                    file_count="multiple",
                    interactive=False,
                    visible=False,
                    elem_id="exports",
                )
                with gr.Row(visible=False, elem_id="confirm-delete") as confirm_row:
                    gr.Markdown("Delete this chat for good?")
                    confirm_btn = gr.Button("Delete", size="sm", variant="stop", elem_id="delete-confirmed")
                    cancel_btn = gr.Button("Keep it", size="sm", elem_id="delete-cancelled")

        with gr.Sidebar(label="Settings", position="right", open=False, elem_id="settings"):
            gr.Markdown("### Settings")  # the page's only "Settings" (Gradio's footer panel is off)
            panel = settings_panel.build(assistant, settings)

        gr.Markdown(
            render.banner(assistant.chat_error, settings.model),
            visible=assistant.chat_model is None,
            elem_classes="banner",
            elem_id="banner",
        )
        gr.Markdown(
            render.stand_in(assistant.chat_notice or "", settings.model),
            visible=assistant.chat_notice is not None,
            elem_classes="banner",
            elem_id="stand-in",
        )
        copy_chat_btn = gr.Button("Copy conversation", size="sm", elem_id="copy-chat", render=False)
        copied = gr.Textbox(visible="hidden", elem_id="copied", show_label=False)
        chatbot = gr.Chatbot(
            show_label=False,
            editable="user",
            # Gradio's own "copy all" pastes each photo's long server address: ours copies the
            # chat as Markdown with "[photo]" marks.
            buttons=["copy", copy_chat_btn],
            feedback_options=None,
            # Gradio 6.31's editor breaks (JS error) on a grouped bubble holding a photo; each
            # turn is one message anyway, so grouping changes nothing else.
            group_consecutive_messages=False,
            # Gradio's own sanitizer stays on, custom tags go too; ui.render.safe_markdown has
            # already reduced what a bubble holds to a safe subset.
            sanitize_html=True,
            allow_tags=False,
            latex_delimiters=render.LATEX_DELIMITERS,
            placeholder=PLACEHOLDER,
            scale=1,  # with fill_height: grows to the window, then scrolls inside
            elem_id="chat",
        )
        stats = gr.Markdown("", elem_classes="stats", elem_id="stats")
        box = gr.MultimodalTextbox(
            sources=["upload", "microphone"],
            file_count="multiple",
            file_types=["image", "audio", "video", ".pdf", ".txt", ".md"],  # routed by content
            placeholder="Message…  (Enter sends, Shift+Enter starts a new line)",
            show_label=False,
            autofocus=True,
            max_lines=12,
            submit_btn=True,
            stop_btn=False,
            elem_id="input",
        )
        with gr.Row(elem_classes="turn-actions"):
            # Labelled words, not emoji (a machine without an emoji font shows boxes); one of
            # each: the chat's own retry / undo / clear icons are not used.
            # Greyed out until the chat has a reply (actions.turn_buttons, after each change).
            regen_btn = gr.Button("Regenerate", size="sm", elem_id="regenerate", interactive=False)
            continue_btn = gr.Button("Continue", size="sm", elem_id="continue", interactive=False)
            undo_btn = gr.Button("Undo last turn", size="sm", elem_id="undo", interactive=False)

        endpoint.install(assistant, CONCURRENCY, store.media_dir)

        # -- wiring ----------------------------------------------------------------------
        answer: dict[str, Any] = dict(
            fn=voice.speaking(demo.voice_hub, assistant, as_owner(partial(respond, assistant, store))),
            inputs=[voice_state, session, *panel.inputs],
            outputs=[chatbot, stats, box, history],
            concurrency_limit=CONCURRENCY,
            show_progress="hidden",
            api_visibility="private",
        )
        # Quick handlers still go through the queue (toasts from queue=False events are
        # dropped), but nothing limits how many run at once.
        quick: dict[str, Any] = dict(concurrency_limit=None, show_progress="hidden", api_visibility="private")
        # After anything that changes which messages are shown: their versions, for the arrows,
        # and which of the turn's buttons have something to act on.
        show_versions: dict[str, Any] = dict(
            fn=lambda tab: (render.versions(tab.messages, tab.others), *actions.turn_buttons(tab)),
            inputs=[session],
            outputs=[versions, regen_btn, continue_btn, undo_btn],
            **quick,
        )
        for start in (
            box.submit(actions.send, [session, box], [chatbot, box], **quick),
            regen_btn.click(actions.regenerate, [session], [chatbot, box], **quick),
            continue_btn.click(actions.continue_reply, [session], [chatbot, box], **quick),
            chatbot.edit(actions.edit, [session], [chatbot, box], **quick),
        ):
            start.success(**answer).then(report_error, [session], None, **quick).then(**show_versions)
        # (.change: page.js writes the box, and Gradio's textbox fires .input for keys only)
        version_pick.change(
            as_owner(partial(actions.switch_version, store)),
            [session, version_pick],
            [chatbot, stats],
            **quick,
        ).then(**show_versions)
        box.stop(actions.stop, [session], None, queue=False, api_visibility="private")  # at once
        spoken_then: dict[str, Any] = dict(fn=report_error, inputs=[session], outputs=None, **quick)
        voice.wire(voice_send, answer, actions.send, session, box, spoken_then, show_versions)  # voice mode

        undo = as_owner(partial(actions.undo, store))
        undo_btn.click(undo, [session], [chatbot, stats, box, history], **quick).then(**show_versions)
        fresh = as_owner(partial(sidebar.new_chat, store))
        for trigger in (new_btn.click, chatbot.clear):  # the chat's clear icon is hidden (style.py)
            trigger(fresh, [session], [chatbot, stats, title, history], **quick).then(**show_versions)
        find.change(  # (typing, pasting or clearing alike)
            as_owner(partial(sidebar.search, store)),
            [session, find],
            [history],
            trigger_mode="always_last",
            **quick,
        )
        history.input(
            as_owner(partial(sidebar.open_conversation, store)),
            [session, history],
            [chatbot, stats, title, history],
            **quick,
        ).then(**show_versions)
        for trigger in (rename_btn.click, title.submit):
            trigger(as_owner(partial(sidebar.rename, store)), [session, title], [history], **quick)
        # Delete asks first: a second button does it, next to one that keeps the chat.
        delete_btn.click(lambda: gr.Row(visible=True), None, [confirm_row], **quick)
        cancel_btn.click(lambda: gr.Row(visible=False), None, [confirm_row], **quick)
        confirm_btn.click(
            as_owner(partial(sidebar.delete, store)), [session], [chatbot, stats, title, history], **quick
        ).then(lambda: gr.Row(visible=False), None, [confirm_row], **quick).then(**show_versions)

        # page.js puts what arrives in #copied on the clipboard (the CSP allows no js= snippets).
        copy_chat_btn.click(as_owner(partial(sidebar.copy_text, store)), [session], [copied], **quick)
        export_btn.click(as_owner(partial(sidebar.export_chat, store)), [session], [exports], **quick)
        import_btn.upload(
            as_owner(partial(sidebar.import_chat, store)),
            [session, import_btn],
            [chatbot, stats, title, history],
            **quick,
        ).then(**show_versions)

        # A photo attached to the draft is read by the model while the words are still typed.
        box.change(
            as_owner(partial(actions.read_ahead, assistant)),  # its cache entry is this user's
            [session, box, *panel.inputs],
            None,
            trigger_mode="always_last",
            **quick,
        )
        # What the server keeps for this user's next visit in this browser: the open chat, the
        # draft, the settings.
        history.change(prefs.chat_remembering(store), [browser, history], [chat_id], **quick)
        # Any change, a send's clearing included (a sent message is no draft any more).
        box.change(prefs.draft_remembering(store), [browser, box], None, trigger_mode="always_last", **quick)
        controls = {"persona": panel.persona, "custom_prompt": panel.custom_prompt, **panel.options}
        remember = prefs.settings_remembering(store, list(controls))
        for control in controls.values():
            control.input(remember, [browser, *controls.values()], None, **quick)  # type: ignore[attr-defined]

        # Every handler that reads or writes the history takes its owner from the request
        # (as_owner), so a client that never fires this load event is no one else.
        kept = [chat_kept, draft_kept, settings_kept]
        loaded = demo.load(
            prefs.restorer(store, controls),
            [session, *kept, browser],
            [chatbot, stats, title, history, box, *controls.values()],
            **quick,
        )
        loaded.then(**show_versions)
        loaded.success(prefs.mover(store), [browser, *kept], [browser, *kept], **quick)
    return demo
