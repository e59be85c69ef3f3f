"""A clip and a PDF sent from the page in a real headless browser (Debian's chromium driven by
Playwright): the user's bubble plays the clip and names the PDF, the stats line says what the
model got, and a reload shows the same from the saved chat."""

from __future__ import annotations

import pytest

from tests.clip_samples import make_clip
from tests.pdf_samples import text_pdf
from tests.server import start_app, tiny_model
from tests.test_browser import ARTIFACTS, CHROMIUM_ARGS, shot  # noqa: F401  (the same browser set-up)
from tests.test_browser import CHROMIUM as CHROMIUM_PATH

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    running = start_app(["--model", str(tiny_model()), "--data-dir", str(data), "--video-frames", "4"])
    yield running
    running.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media-browser")
    pdf = folder / "invoice.pdf"
    pdf.write_bytes(text_pdf(["Invoice 42", "Total: 99 euros"]))
    return {"clip": str(make_clip(folder / "walk.mp4", speech=None)), "pdf": str(pdf)}


@pytest.fixture
def page(app):
    import shutil
    from pathlib import Path

    if not Path(CHROMIUM_PATH).exists() and not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (make system-deps)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(app.url)
        page.locator("#input textarea").wait_for()
        yield page
        browser.close()


def test_a_clip_and_a_pdf_from_the_page(page, files):
    page.locator("#input input[type=file]").set_input_files([files["clip"], files["pdf"]])
    page.locator("#input .thumbnail-item, #input .thumbnails img, #input .thumbnails video").first.wait_for()
    page.locator("#input textarea").fill("What happens, and what is the total?")
    page.locator("#input textarea").press("Enter")
    page.locator("#stats").filter(has_text="sent video").wait_for()
    stats = page.locator("#stats").inner_text()
    assert (
        "video: 4 frames as pictures" in stats and "invoice.pdf: pages 1, 2 of 2 as pictures + text" in stats
    )
    chat = page.locator("#chat")
    chat.locator("video").first.wait_for()
    assert chat.locator("video").count() == 1  # the clip plays in the chat (a bubble of its own)
    chat.locator("video").first.scroll_into_view_if_needed()
    # the document as a file chip with the name it was sent under
    chip = chat.locator("[data-testid=chatbot-file]", has_text="invoice.pdf")
    assert chip.count() == 1 and chip.first.get_attribute("href").endswith(".pdf")
    shot(page, "clip-and-pdf")
    page.reload()
    page.locator("#chat video").first.wait_for()  # the saved chat keeps the clip
    shot(page, "clip-and-pdf-reloaded")
