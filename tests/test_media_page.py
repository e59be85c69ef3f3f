"""Clips and documents in the page: the input box routes them by content, the bubble shows a
playable clip and the document's chip, the stats line says what the model got, the history
keeps both (saved inside the chat's media folder), and a bad file is explained."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from assistant.conversation import DocumentAttachment, VideoAttachment
from assistant.core import Assistant
from assistant.settings import Settings
from assistant.store import HistoryStore
from tests.clip_samples import make_clip
from tests.fakes import FakeChatModel
from tests.pdf_samples import encrypted_pdf, text_pdf
from ui import actions, inputs, render
from ui.actions import report_error, respond
from ui.session import ChatSession
from web.files import UPLOAD_SUFFIXES

PANEL = ("default", "", 0.7, 0.95, 64, "")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("page-clips") / "walk.mp4", speech=None)


@pytest.fixture
def env(tmp_path):
    settings = Settings(model="fake", data_dir=tmp_path / "data", video_frames=4)
    model = FakeChatModel(chunks=["Seen", "."])
    return SimpleNamespace(
        assistant=Assistant(settings, model, None),
        model=model,
        store=HistoryStore(settings.data_dir),
        session=ChatSession(),
        tmp=tmp_path,
    )


def send(env, text, files):
    actions.send(env.session, {"text": text, "files": [str(f) for f in files]})
    return list(respond(env.assistant, env.store, env.session, *PANEL))


def test_the_box_routes_clips_and_documents_by_content(tmp_path, clip):
    pdf = tmp_path / "scan.jpg"  # a PDF whatever its name says
    pdf.write_bytes(text_pdf(["hello"]))
    notes = tmp_path / "notes.md"
    notes.write_text("# todo\n")
    message = inputs.message({"text": "look", "files": [str(clip), str(pdf), str(notes)]})
    assert message.videos == (str(clip),) and message.documents == (str(pdf), str(notes))
    assert not message.images and message.audio is None
    assert {".mp4", ".mov", ".webm", ".mkv", ".pdf", ".txt", ".md"} <= UPLOAD_SUFFIXES


def test_a_clip_and_a_pdf_are_shown_kept_and_reported(env, clip):
    pdf = env.tmp / "invoice.pdf"
    pdf.write_bytes(text_pdf(["Invoice 42", "Total 99 euros"]))
    *_, (chat, stats, _, _) = send(env, "What happens, and what is the total?", [clip, pdf])
    stored = env.store.load(env.session.conversation_id).messages[0]
    kinds = [type(a) for a in stored.attachments]
    assert kinds == [VideoAttachment, DocumentAttachment]
    assert all(str(a.source).startswith(str(env.store.media_dir)) for a in stored.attachments)
    assert str(stored.videos[0]).endswith(".mp4") and str(stored.documents[0]).endswith(".pdf")
    bubble = render.bubble(stored)
    assert stored.attachments[1].name == "invoice.pdf"  # the saved copy is named by content; its name is kept
    assert bubble["content"][:2] == [
        {"path": str(stored.videos[0])},
        {"file": {"path": str(stored.documents[0]), "orig_name": "invoice.pdf"}},
    ]
    assert bubble["content"][-1] == "What happens, and what is the total?"
    assert "sent video: 4 frames as pictures, invoice.pdf: pages 1, 2 of 2 as pictures + text" in stats
    sent = env.model.requests[-1].messages[-1]
    assert len(sent.images) == 4 and "Total 99 euros" in sent.text  # 4 frames; pages over the cap
    # the saved chat answers again: its clip and document are read from the media folder
    *_, (_, stats, _, _) = send(env, "And page 2?", [])
    assert "Total 99 euros" in env.model.requests[-1].messages[1].text
    assert "[document invoice.pdf: PDF, 2 pages" in env.model.requests[-1].messages[1].text


def test_a_locked_pdf_is_explained_and_the_chat_goes_on(env):
    locked = env.tmp / "locked.pdf"
    locked.write_bytes(encrypted_pdf())
    chat, _, box, _ = send(env, "read this", [locked])[-1]
    assert chat == [] and box.value["text"] == "read this"  # the turn is taken back, the words kept
    with pytest.raises(gr.Error, match="locked.pdf is protected by a password"):
        report_error(env.session)
    *_, (chat, _, _, _) = send(env, "hello", [])
    assert chat[-1] == {"role": "assistant", "content": "Seen."}


def test_exports_name_clips_and_carry_documents(env, clip, tmp_path):
    import base64
    import json

    from assistant import transfer
    from assistant.errors import InvalidParams

    pdf = env.tmp / "invoice.pdf"
    pdf.write_bytes(text_pdf(["Invoice 42"]))
    send(env, "Look", [clip, pdf])
    stored = env.store.load(env.session.conversation_id)
    markdown = transfer.to_markdown("t", stored.messages)
    assert "*[video clip]*" in markdown and "*[document: invoice.pdf]*" in markdown
    exported = transfer.to_json("t", stored.messages)
    kinds = [a["kind"] for a in exported["messages"][0]["attachments"]]
    assert kinds == ["document"]  # clips are named in Markdown but not carried (size)
    folder = tmp_path / "imported"
    folder.mkdir()
    _, messages = transfer.from_json(json.dumps(exported), folder)
    (document,) = messages[0].attachments
    assert isinstance(document, DocumentAttachment) and document.name == "invoice.pdf"
    assert open(document.source, "rb").read() == pdf.read_bytes()
    exported["messages"][0]["attachments"][0]["data"] = base64.b64encode(b"<!doctype html><p>x").decode()
    with pytest.raises(InvalidParams, match="not a PDF, text or Markdown file"):
        transfer.from_json(json.dumps(exported), folder)
