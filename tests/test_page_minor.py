"""Small things a user notices on the page, in headless Chromium (issue 26, minor items): the
turn's buttons greyed out while there is no reply to act on (item 9), and a search that finds
nothing says so (item 15)."""

from __future__ import annotations

import pytest

# The keyboard tests' app (three stored chats, the tiny model) and browser, reused.
from tests.test_page_keyboard import DESKTOP, app, browser, open_page  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TURN_BUTTONS = ("#regenerate", "#continue", "#undo")


def enabled(page) -> list[bool]:
    return [page.locator(b).is_enabled() for b in TURN_BUTTONS]


def wait_enabled(page, state: bool) -> None:
    """Until every turn button is enabled (or every one disabled): the update follows the chat's."""
    ids = ", ".join(f"'{b}'" for b in TURN_BUTTONS)
    page.wait_for_function(
        f"() => [{ids}].every(s => {{ const b = document.querySelector(s); return b && b.disabled === {str(not state).lower()}; }})",
        timeout=15_000,
    )


def open_first_chat(page) -> None:
    page.locator("#history label").first.click()
    page.locator("#chat [data-testid=bot]").first.wait_for()


def test_the_turn_buttons_are_greyed_out_until_the_chat_has_a_reply(browser, app):  # noqa: F811
    page = open_page(browser, app, DESKTOP)
    assert enabled(page) == [False, False, False]  # an empty chat
    opacity = page.locator("#undo").evaluate("b => getComputedStyle(b).opacity")
    cursor = page.locator("#undo").evaluate("b => getComputedStyle(b).cursor")
    assert float(opacity) < 1 or cursor == "not-allowed", (opacity, cursor)  # visibly so
    open_first_chat(page)
    wait_enabled(page, True)
    page.locator("#new-chat").click()
    wait_enabled(page, False)
    open_first_chat(page)
    wait_enabled(page, True)
    page.reload()  # the open chat comes back, and so do its buttons
    page.locator("#chat [data-testid=bot]").first.wait_for()
    wait_enabled(page, True)
    page.close()


def test_undo_down_to_an_empty_chat_greys_the_buttons_out(browser, app):  # noqa: F811
    page = open_page(browser, app, DESKTOP)
    open_first_chat(page)
    wait_enabled(page, True)
    page.locator("#undo").click()  # each stored chat has one turn: the chat is empty after it
    page.wait_for_function("() => !document.querySelector('#chat [data-testid=bot]')")
    wait_enabled(page, False)
    page.close()


def test_a_search_that_finds_nothing_says_so(browser, app):  # noqa: F811
    page = open_page(browser, app, DESKTOP)
    history = page.locator("#history")
    page.locator("#search input, #search textarea").first.fill("zebras")
    page.wait_for_function("() => !document.querySelector('#history input[type=radio]')")
    page.get_by_text("No chats match “zebras”.").wait_for()
    page.locator("#search input, #search textarea").first.fill("")  # cleared: the chats, no line
    page.locator("#history input[type=radio]").first.wait_for(state="attached")
    assert "No chats match" not in history.inner_text()
    page.close()


def test_a_clip_or_a_document_in_the_chat_has_no_share_button(browser, tmp_path):  # noqa: F811
    """Gradio's Share only works on Spaces ("Must be on Spaces to share"): none is shown."""
    from assistant.conversation import Message
    from assistant.store import HistoryStore
    from tests.clip_samples import make_clip
    from tests.pdf_samples import text_pdf
    from tests.server import start_app, tiny_model

    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(text_pdf(["Invoice 42"]))
    clip = make_clip(tmp_path / "walk.mp4", speech=None, seconds_each=0.5, size=(160, 120))
    HistoryStore(tmp_path / "data").save(
        None,
        [
            Message.user("What is this?", videos=[str(clip)], documents=[str(pdf)]),
            Message.assistant("A walk."),
        ],
    )
    running = start_app(["--model", str(tiny_model()), "--data-dir", str(tmp_path / "data")])
    try:
        page = open_page(browser, running, DESKTOP)
        open_first_chat(page)
        page.locator("#chat video").first.wait_for(state="attached")
        page.locator("#chat [data-testid=chatbot-file]").first.wait_for()
        page.wait_for_timeout(500)
        shown = "() => [...document.querySelectorAll('#chat button[title=Share]')].filter(b => b.offsetWidth).length"
        assert page.evaluate(shown) == 0
        page.close()
    finally:
        running.stop()
