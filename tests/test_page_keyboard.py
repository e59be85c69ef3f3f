"""The page by keyboard, in headless Chromium (issue 26, major 1): Tab never walks into a closed
panel (the Settings on a desktop, the history on a phone), the chat list is one Tab stop that
the arrows move through, and Enter opens the chat focused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from assistant.conversation import Message
from assistant.store import HistoryStore
from tests.server import start_app, tiny_model
from tools.chromium import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DESKTOP, PHONE = {"width": 1280, "height": 800}, {"width": 390, "height": 844}
# Where the keyboard is: the element's id or tag, its words, where it lies, which panel holds it.
FOCUS = """() => { const e = document.activeElement; const r = e.getBoundingClientRect();
  const side = e.closest('.sidebar');
  return {id: e.id, tag: e.tagName, type: e.type || '', x: r.x, width: r.width,
          toggle: e.classList.contains('toggle-button'),
          label: (e.closest('label') || e).textContent.trim().slice(0, 40), panel: side ? side.id : ''}; }"""


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    store = HistoryStore(data)
    for topic in ("tea", "bicycles", "the moon"):
        store.save(None, [Message.user(f"Tell me about {topic}"), Message.assistant(f"Here is {topic}.")])
    running = start_app(["--model", str(tiny_model()), "--data-dir", str(data)])
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (make system-deps)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser, app, viewport):
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(30_000)
    page.goto(app.url)
    page.locator("#input textarea").wait_for()
    page.locator("#history input[type=radio]").first.wait_for(state="attached")
    page.wait_for_timeout(600)  # the page script's first poll
    return page


def tab_stops(page, count=40) -> list[dict]:
    stops = []
    for _ in range(count):
        page.keyboard.press("Tab")
        stops.append(page.evaluate(FOCUS))
    return stops


def test_tab_skips_the_closed_settings_and_visits_the_chat_list_once(browser, app):
    page = open_page(browser, app, DESKTOP)
    stops = tab_stops(page)
    in_settings = [s for s in stops if s["panel"] == "settings"]
    assert in_settings and all(s["toggle"] for s in in_settings), in_settings  # its arrow only
    assert all(s["x"] < DESKTOP["width"] for s in stops), [s for s in stops if s["x"] >= DESKTOP["width"]]
    chats = [s for s in stops if s["type"] == "radio"]
    assert 0 < len(chats) <= len(stops) // 10  # one stop per round of the page, not one per chat
    page.close()


def test_on_a_phone_tab_skips_the_closed_history(browser, app):
    page = open_page(browser, app, PHONE)
    stops = tab_stops(page)
    assert all(s["x"] + s["width"] > 0 and s["x"] < PHONE["width"] for s in stops), [
        s for s in stops if s["x"] + s["width"] <= 0 or s["x"] >= PHONE["width"]
    ]
    assert not [s for s in stops if s["id"] == "new-chat"]
    page.locator("#history-sidebar button.toggle-button").click()  # opened: reachable again
    page.wait_for_timeout(300)
    assert any(s["id"] == "new-chat" for s in tab_stops(page, 30))
    page.close()


def test_arrows_move_through_the_chats_and_enter_opens_one(browser, app):
    page = open_page(browser, app, DESKTOP)
    page.locator("#history input[type=radio]").first.focus()
    first = page.evaluate(FOCUS)["label"]
    page.keyboard.press("ArrowDown")
    second = page.evaluate(FOCUS)
    assert second["type"] == "radio" and second["label"] != first
    assert page.locator("#history input[type=radio]:checked").count() == 0  # moved, not opened
    page.keyboard.press("Enter")
    page.locator("#chat [data-testid=bot]").first.wait_for()
    topic = second["label"]
    assert page.locator("#history input[type=radio]:checked").count() == 1
    assert any(word in page.locator("#chat").inner_text() for word in topic.split()), topic
    page.close()
