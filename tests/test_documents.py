"""Documents: PDFs with and without a text layer (written in the tests), plain text and
Markdown; every limit's message; which pages go to the model; and documents through the
engine, the API and the CLI."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from assistant import media
from assistant.conversation import Message
from assistant.core import Assistant
from assistant.errors import MediaError
from assistant.media import documents
from assistant.settings import Settings
from tests.fakes import FakeChatModel
from tests.pdf_samples import encrypted_pdf, scanned_pdf, text_pdf
from tests.test_cli import run_cli
from tools.random_models import build

PAGES = [f"Page {n} of the report.\nThe secret word of page {n} is word{n * 7}." for n in range(1, 13)]


def scan(colour) -> Image.Image:
    page = Image.new("RGB", (612, 792), "white")
    ImageDraw.Draw(page).rectangle((100, 100, 500, 400), fill=colour)
    return page


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("docs")
    out = {
        "report": d / "report.pdf",
        "scan": d / "scan.pdf",
        "notes": d / "notes.md",
        "plain": d / "plain.txt",
    }
    out["report"].write_bytes(text_pdf(PAGES))
    out["scan"].write_bytes(scanned_pdf([scan((200, 30, 30)), scan((30, 30, 200))]))
    out["notes"].write_text("# Shopping\n\n- eggs\n- flour\n", encoding="utf-8")
    out["plain"].write_text("Meeting at nine.\n", encoding="utf-8")
    return out


# --------------------------------------------------------------------------- reading


def test_a_pdf_gives_each_pages_text_and_renders_pages_within_the_side(files):
    doc = documents.load_document(files["report"])
    assert doc.name == "report.pdf" and doc.kind == "pdf" and doc.page_count == 12
    assert [p.text for p in doc.pages] == PAGES and doc.has_text
    pages = documents.render_pages(doc, [1, 12], max_side=256)
    assert [n for n, _ in pages] == [1, 12]
    for _, image in pages:
        assert image.mode == "RGB" and max(image.size) == 256
        pixels = np.asarray(image)
        assert pixels.min() < 100 and np.median(pixels) > 200  # black text on a white page
    assert documents.render_pages(doc, range(1, 13), max_side=256, budget_pixels=256 * 200 * 3)[-1][0] == 3


def test_a_scan_has_no_text_and_its_pictures_are_the_page(files):
    doc = documents.load_document(files["scan"])
    assert doc.page_count == 2 and not doc.has_text
    (_, red), (_, blue) = documents.render_pages(doc, [1, 2], max_side=200)
    r, b = np.asarray(red).reshape(-1, 3).mean(0), np.asarray(blue).reshape(-1, 3).mean(0)
    assert r[0] > r[2] and b[2] > b[0]
    assert "no text layer" in documents.for_model(doc, [1, 2], 10_000)


def test_text_and_markdown_are_documents(files):
    for name in ("notes", "plain"):
        assert media.kind_of(files[name]) == "document"
        doc = documents.load_document(files[name])
        assert doc.kind == "text" and doc.page_count == 1
    assert "- flour" in documents.load_document(files["notes"]).text
    assert media.kind_of(files["report"]) == "document"


def test_pages_named_in_the_question_are_shown_first():
    doc = documents.load_document(text_pdf(PAGES), name="r.pdf")
    assert documents.pages_to_show(doc, "hello", 4) == [1, 2, 3, 4]
    assert documents.pages_to_show(doc, "what is on page 7?", 4) == [1, 2, 3, 7]
    assert documents.pages_to_show(doc, "compare pages 9-11 and p. 5", 3) == [9, 10, 11]
    assert documents.pages_to_show(doc, "page 99", 2) == [1, 2]  # not in the document


def test_the_text_is_cut_to_fit_and_says_so():
    doc = documents.load_document(text_pdf(PAGES), name="r.pdf")
    short = documents.for_model(doc, [1], 600)
    assert "--- page 1 ---" in short and "word84" not in short and "left out" in short
    full = documents.for_model(doc, [1, 7], 100_000)
    assert "pages shown as pictures: 1, 7" in full and all(f"word{n * 7}" in full for n in range(1, 13))


def refused(source, *words, **limits):
    with pytest.raises(MediaError) as caught:
        documents.load_document(source, **limits)
    for word in words:
        assert word in str(caught.value), str(caught.value)


def test_every_limit_and_bad_file_is_explained(files, tmp_path):
    refused(files["report"], "report.pdf has 12 pages, over the 10-page limit", max_pages=10)
    refused(files["report"], "report.pdf is", "over the 1 KB limit", max_bytes=1024)
    refused(
        text_pdf(["huge"], (14400, 14400)),
        "page 1 is 200 x 200 inches, over the 100-inch limit",
        name="big.pdf",
    )
    refused(encrypted_pdf(), "protected by a password", name="locked.pdf")
    refused(text_pdf(PAGES)[:400], "cut.pdf is truncated or corrupt", name="cut.pdf")
    html = tmp_path / "invoice.pdf"
    html.write_text("<!DOCTYPE html><html><body>Your invoice</body></html>")
    refused(html, "invoice.pdf is not a PDF or a text file (looks like HTML)")
    refused(b"\x00\x01\x02binary" * 100, "not a PDF or a text file", name="blob.pdf")
    refused(b"   \n ", "is empty", name="blank.txt")
    refused(tmp_path / "missing.pdf", "was not found")
    # the encrypted sample really is a PDF: with its password PDFium opens it
    import pypdfium2 as pdfium

    assert len(pdfium.PdfDocument(encrypted_pdf("secret"), password="secret")) == 1


# --------------------------------------------------------------------------- the engine


def test_the_model_gets_the_text_and_the_first_and_asked_pages(files):
    fake = FakeChatModel()
    helper = Assistant(Settings(document_page_images=3, max_images_in_context=4), fake, None)
    reply = helper.reply([], Message.user("What is the secret word on page 9?", documents=[files["report"]]))
    reply.wait()
    sent = fake.requests[-1].messages[-1]
    assert len(sent.images) == 3 and "pages shown as pictures: 1, 2, 9" in sent.text
    assert "word63" in sent.text and sent.text.endswith("What is the secret word on page 9?")
    assert (
        reply.stats is not None and reply.stats.sent == "report.pdf: pages 1, 2, 9 of 12 as pictures + text"
    )
    # a scan in a later turn: its pages are the pictures; older pages give way to the cap
    history = [reply.message, Message.assistant(reply.text)]
    helper.reply(history, Message.user("And this?", documents=[files["scan"]])).wait()
    messages = fake.requests[-1].messages
    assert len(messages[-1].images) == 2 and sum(len(m.images) for m in messages) == 4
    assert "word63" in messages[1].text  # the first document's text is still there


def test_document_text_is_held_to_the_context():
    fake = FakeChatModel(context_length=2048)
    helper = Assistant(Settings(), fake, None)
    long = text_pdf([("lorem ipsum dolor " * 40).strip() for _ in range(30)])
    helper.reply([], Message.user("Summarise", documents=[long])).wait()
    assert len(fake.requests[-1].messages[-1].text) < 3000


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["qwen2_5_vl", "llava"])
def test_pdf_then_follow_up_through_a_tiny_model(tmp_path_factory, files, arch):
    from assistant.models.local import LocalChatModel

    model = LocalChatModel.load(
        str(build(arch, tmp_path_factory.getbasetemp() / f"tiny-{arch}")), image_max_side=128, dtype="float32"
    )
    helper = Assistant(Settings(image_max_side=128, document_page_images=2), model, None)
    params = helper.params(max_new_tokens=4, min_new_tokens=4, temperature=0)
    one = helper.reply([], Message.user("Summarise page 3", documents=[files["report"]]), params).wait()
    assert one.stats is not None and one.stats.tokens == 4
    assert one.stats.sent == "report.pdf: pages 1, 3 of 12 as pictures + text"
    two = helper.reply([one.message, Message.assistant(one.text)], Message.user("And page 4?"), params).wait()
    assert two.stats is not None and two.stats.cached_tokens > 0  # the document is not read again


# --------------------------------------------------------------------------- API and CLI


def api_client(**settings):
    from api import install_api

    fake = FakeChatModel()
    settings_ = Settings(**settings)
    app = FastAPI()
    install_api(app, Assistant(settings_, fake, None), settings_)
    return TestClient(app), fake


def file_part(data: bytes, filename="report.pdf", media_type="application/pdf"):
    url = f"data:{media_type};base64," + base64.b64encode(data).decode()
    return {"type": "file", "file": {"file_data": url, "filename": filename}}


def post(c, content):
    return c.post(
        "/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": content}]}
    )


def test_api_takes_openai_file_parts_and_explains_bad_ones():
    c, fake = api_client(document_page_images=2)
    r = post(c, [{"type": "text", "text": "What is on page 5?"}, file_part(text_pdf(PAGES))])
    assert r.status_code == 200, r.text
    sent = fake.requests[-1].messages[-1]
    assert "[document report.pdf: PDF, 12 pages; pages shown as pictures: 1, 5]" in sent.text
    assert len(sent.images) == 2
    r = post(c, [file_part(b"<!doctype html><p>x</p>", "fake.pdf")])
    assert r.status_code == 400 and "fake.pdf is not a PDF or a text file (looks like HTML)" in r.text
    r = post(c, [file_part(encrypted_pdf(), "locked.pdf")])
    assert r.status_code == 400 and "locked.pdf is protected by a password" in r.json()["error"]["message"]
    r = post(c, [file_part(text_pdf(PAGES), media_type="image/png")])
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_document_url"
    r = post(c, [{"type": "file", "file": {"file_id": "file-123"}}])
    assert r.status_code == 400 and "file_data" in r.json()["error"]["message"]
    r = post(c, [file_part(b"notes: buy milk", "notes.txt", "text/plain")])
    assert r.status_code == 200 and "buy milk" in fake.requests[-1].messages[-1].text
    r = c.post(
        "/v1/chat/completions",
        json={
            "model": "fake",
            "messages": [
                {"role": "system", "content": [file_part(text_pdf(PAGES))]},
                {"role": "user", "content": "hi"},
            ],
        },
    )
    assert r.status_code == 400 and "system messages cannot contain documents" in r.text


@pytest.mark.slow
def test_cli_chat_with_a_pdf_and_a_locked_one(tmp_path_factory, files, tmp_path):
    path = build("llava", tmp_path_factory.getbasetemp() / "tiny-llava")
    result = run_cli(
        "chat",
        "--model",
        path,
        "--file",
        files["report"],
        "--max-new-tokens",
        "3",
        "--json",
        "What is on page 2?",
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["tokens"] == 3 and out["sent"].startswith("report.pdf: pages 1, 2")
    locked = tmp_path / "locked.pdf"
    locked.write_bytes(encrypted_pdf())
    bad = run_cli("chat", "--model", path, "--file", locked, "hi")
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.returncode == 2 and len(lines) == 1, bad.stderr
    assert lines[0] == "error: locked.pdf is protected by a password: remove the protection and send it again"
