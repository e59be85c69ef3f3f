"""The page in a real headless browser (Debian's chromium driven by Playwright), against
``app.py`` on a tiny model. Screenshots go to artifacts/ for a person to look at."""

from __future__ import annotations

import base64
import shutil
import time
from pathlib import Path

import pytest

from tests import speech_samples
from tests.server import ROOT, start_app, tiny_model
from tools.chromium import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = ROOT / "artifacts"
FIRST_MESSAGE = "Hello from the browser! What is in this photo?"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    running = start_app(["--model", str(tiny_model()), "--data-dir", str(data)])
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser(media):
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (make system-deps)")
    from playwright.sync_api import sync_playwright

    # The microphone is a fake device that "hears" the spoken test question.
    fake_mic = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={media['speech']}",
    ]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + fake_mic)
        yield b
        b.close()


@pytest.fixture
def page(app, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860}, permissions=["microphone"])
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(app.url)
    page.locator("#input textarea").wait_for()
    yield page
    context.close()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("media")
    photo = folder / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(photo, quality=85)
    notes = folder / "holiday.png"
    notes.write_text("these are my notes, not a photo\n")
    speech = speech_samples.make_speech("What is the capital of France?", folder / "question.wav")
    return {"photo": str(photo), "notes": str(notes), "speech": str(speech)}


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-{name}.png"))


def last_reply(page) -> str:
    replies = page.locator("#chat [data-testid=bot]")
    return replies.last.inner_text() if replies.count() else ""


def attach(page, *paths: str) -> None:
    page.locator("#input input[type=file]").set_input_files(list(paths))
    page.locator("#input .thumbnail-item, #input .thumbnails img").first.wait_for()


def set_options(page, **values) -> None:
    """Type into the settings panel's number fields, e.g. set_options(page, Temperature=0)."""
    toggle = page.locator("#settings button.toggle-button")
    toggle.click()
    for label, value in values.items():
        field = page.get_by_label(f"number input for {label.replace('_', ' ')}")
        field.fill(str(value))
        field.press("Enter")
    toggle.click()


def wait_for_stats(page, text: str = "tokens") -> str:
    page.locator("#stats").filter(has_text=text).wait_for()
    return page.locator("#stats").inner_text()


def test_page_loads_with_settings_and_model_info(page):
    assert page.title() == "Multimodal assistant"
    assert page.locator("#banner").count() == 0 or not page.locator("#banner").is_visible()
    page.locator("#settings button.toggle-button").click()
    page.get_by_text("tiny-smolvlm").wait_for()  # model shown read-only, with its device
    assert page.get_by_label("Persona").is_visible()
    shot(page, "01-loaded-with-settings")


def test_send_stream_stop_and_find_it_again_after_reload(page, media):
    set_options(page, Temperature=0)  # greedy: the same (long) reply on every run
    # Type, attach a photo, press Enter: the photo sits in the user's bubble.
    page.locator("#input textarea").fill(FIRST_MESSAGE)
    attach(page, media["photo"])
    page.locator("#input textarea").press("Enter")
    page.locator("#chat [data-testid=user] img").first.wait_for()

    # The reply streams: it is seen at several lengths before the stats line appears.
    lengths = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "tokens" not in page.locator("#stats").inner_text():
        lengths.add(len(last_reply(page)))
        time.sleep(0.03)
    stats = wait_for_stats(page)
    assert len([n for n in lengths if n > 1]) >= 2, f"reply did not stream: lengths seen {sorted(lengths)}"
    assert "to first token" in stats and "tokens/s" in stats
    assert last_reply(page).strip()
    shot(page, "02-streamed-reply")

    # A long reply, stopped midway: it stops growing and the send button comes back.
    set_options(page, Max_new_tokens=1500)
    page.locator("#input textarea").fill("Now tell me a very long story")
    page.locator("#input textarea").press("Enter")
    stop = page.locator("#input").get_by_role("button", name="Stop")
    stop.wait_for()
    page.wait_for_function(
        "() => { const r = document.querySelectorAll('#chat [data-testid=bot]'); return r.length >= 2 && r[r.length - 1].innerText.length > 20; }"
    )
    stop.click()
    assert "stopped" in wait_for_stats(page, "stopped")
    stopped_at = last_reply(page)
    time.sleep(1.0)
    assert last_reply(page) == stopped_at
    page.locator("#input").get_by_role("button", name="Submit").wait_for()
    shot(page, "03-stopped")

    # Reload: the conversation is in the history sidebar, and opens with its photo.
    page.reload()
    page.locator("#input textarea").wait_for()
    saved = page.locator("#history label").filter(has_text=FIRST_MESSAGE[:30])
    saved.wait_for()
    saved.click()
    page.locator("#chat [data-testid=user]").nth(1).wait_for()
    image = page.locator("#chat [data-testid=user] img").first
    image.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert "very long story" in page.locator("#chat").inner_text()
    image.scroll_into_view_if_needed()
    shot(page, "04-reopened-from-history")

    # Edit the first message (the one with the photo): the chat continues from there.
    page.locator("#chat button[aria-label='Edit']").first.click()
    page.locator("#chat textarea").fill("Edited: describe the photo in one line")
    page.locator("#chat button[aria-label='Submit']").click()
    page.locator("#chat [data-testid=user]").filter(has_text="Edited: describe").wait_for()
    wait_for_stats(page)
    assert "very long story" not in page.locator("#chat").inner_text()  # later turns dropped
    assert page.locator("#chat [data-testid=user] img").count() == 1  # the photo stays


def test_voice_file_is_transcribed_into_the_users_bubble(page, media):
    attach(page, media["speech"])
    page.locator("#input textarea").press("Enter")
    page.locator("#chat [data-testid=user]").filter(has_text="🎤 What is the capital of France").wait_for()
    wait_for_stats(page)
    assert last_reply(page).strip()
    shot(page, "05-voice-transcript")


def test_microphone_recording_is_transcribed_and_answered(page):
    box = page.locator("#input")
    box.get_by_role("button", name="Record audio").click()
    box.get_by_role("button", name="Start recording").click()
    time.sleep(3.0)  # the fake microphone plays the 2.3 s question
    box.get_by_role("button", name="Stop recording").click()
    box.get_by_role("button", name="Play").wait_for()
    page.locator("#input textarea").press("Enter")
    page.locator("#chat [data-testid=user]").filter(has_text="🎤").filter(has_text="capital").wait_for()
    wait_for_stats(page)
    shot(page, "06-microphone")


def test_bad_file_shows_the_error_and_keeps_the_typed_text(page, media):
    page.locator("#input textarea").fill("Please read my holiday notes")
    attach(page, media["notes"])
    page.locator("#input textarea").press("Enter")
    page.locator(".toast-body").filter(has_text="holiday.png is not a supported image").wait_for()
    time.sleep(0.5)  # let the toast finish sliding in, for the screenshot
    shot(page, "07-bad-file")
    assert page.locator("#input textarea").input_value() == "Please read my holiday notes"
    assert page.locator("#chat [data-testid=user]").count() == 0  # the failed turn was taken back
    assert "Traceback" not in page.content()


def open_chat(page, url: str) -> None:
    page.goto(url)
    page.locator("#input textarea").wait_for()


def send_and_wait(page, text: str) -> None:
    answered = page.locator("#chat [data-testid=bot]").count()
    page.locator("#input textarea").fill(text)
    page.locator("#input textarea").press("Enter")
    page.wait_for_function(f"() => document.querySelectorAll('#chat [data-testid=bot]').length > {answered}")
    wait_for_submit(page)


def wait_for_submit(page) -> None:
    page.locator("#input").get_by_role("button", name="Submit").wait_for()


def chat_url(page) -> str:
    page.wait_for_function("() => new URL(location.href).searchParams.get('chat')")
    return page.url


def test_two_tabs_on_one_chat_keep_both_turns_and_see_each_other(page, browser, app):
    send_and_wait(page, "From TAB ONE")
    url = chat_url(page)
    other = page.context.new_page()  # the same login, a second tab on the chat's address
    open_chat(other, url)
    other.locator("#chat [data-testid=user]").filter(has_text="From TAB ONE").wait_for()
    send_and_wait(other, "From TAB TWO")
    send_and_wait(page, "Back in tab one")
    # Tab one shows tab two's turn once it acts again, and the saved chat holds all three.
    page.locator("#chat [data-testid=user]").filter(has_text="From TAB TWO").wait_for()
    shot(page, "08-two-tabs")
    open_chat(other, url)
    users = other.locator("#chat [data-testid=user]")
    users.filter(has_text="Back in tab one").wait_for()
    assert [u.inner_text().strip() for u in users.all()] == [
        "From TAB ONE",
        "From TAB TWO",
        "Back in tab one",
    ]
    other.close()


def test_reload_mid_reply_keeps_the_question_and_the_partial_answer(page):
    set_options(page, Max_new_tokens=1500)
    page.locator("#input textarea").fill("A question asked just before a reload")
    page.locator("#input textarea").press("Enter")
    page.wait_for_function(
        "() => { const r = document.querySelectorAll('#chat [data-testid=bot]'); return r.length && r[r.length - 1].innerText.length > 40; }"
    )
    # The browser has taken note of the new chat (the event that stores it also fills #chat-id);
    # on a busy machine that can come after the first words of the reply.
    page.wait_for_function("() => (document.querySelector('#chat-id textarea, #chat-id input') || {}).value")
    time.sleep(0.5)  # its localStorage write follows the event's output
    page.reload()  # (not from ?chat in the address: the browser remembers the open chat)
    page.locator("#chat [data-testid=user]").filter(has_text="just before a reload").wait_for()
    page.wait_for_function(
        "() => { const r = document.querySelectorAll('#chat [data-testid=bot]'); return r.length && r[r.length - 1].innerText.length > 20; }"
    )
    assert "chat=" in chat_url(page)
    shot(page, "09-reloaded-mid-reply")


def test_reopen_after_reload_with_the_draft_and_settings_kept(page):
    send_and_wait(page, "Remember this chat about quokkas")
    set_options(page, Max_new_tokens=300, Temperature=0.3)
    page.locator("#input textarea").press_sequentially("an unsent draft")
    time.sleep(1.0)  # the browser stores it
    page.reload()
    page.locator("#chat [data-testid=user]").filter(has_text="Remember this chat").wait_for()
    page.wait_for_function("() => document.querySelector('#input textarea').value === 'an unsent draft'")
    page.locator("#settings button.toggle-button").click()
    assert page.get_by_label("number input for Max new tokens").input_value() == "300"
    assert page.get_by_label("number input for Temperature").input_value() == "0.3"
    shot(page, "10-reopened-with-settings")
    # The history's search box keeps only the chats that have the words (titles and messages).
    page.locator("#settings button.toggle-button").click()
    page.locator("#search textarea, #search input").first.fill("quokk")  # (replies are random words)
    page.wait_for_function(
        "() => { const l = [...document.querySelectorAll('#history label')]; return l.length === 1 && l[0].innerText.includes('Remember this chat'); }"
    )
    shot(page, "13-history-search")


def test_esc_stops_a_reply_and_enter_while_answering_says_so(page):
    set_options(page, Max_new_tokens=1500)
    page.locator("#input textarea").fill("Tell me a very long story")
    page.locator("#input textarea").press("Enter")
    page.locator("#input").get_by_role("button", name="Stop").wait_for()
    page.locator("#input textarea").fill("impatient follow-up")
    page.locator("#input textarea").press("Enter")
    page.locator("#page-notice.shown").filter(has_text="still being written").wait_for()
    assert page.locator("#input textarea").input_value() == "impatient follow-up"
    page.keyboard.press("Escape")
    assert "stopped" in wait_for_stats(page, "stopped")
    assert page.locator("#chat [data-testid=user]").filter(has_text="impatient").count() == 0


def test_phone_layout_starts_with_the_chat_and_closes_the_history_after_a_choice(browser, app):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    open_chat(page, app.url)
    send_and_wait(page, "Hello from a phone")
    page.reload()
    page.locator("#input textarea").wait_for()
    page.wait_for_function("() => !document.querySelector('#history-sidebar').classList.contains('open')")
    time.sleep(0.5)
    shot(page, "11-phone")
    chat, box = page.locator("#chat").bounding_box(), page.locator("#input").bounding_box()
    assert chat["width"] >= 300 and chat["x"] >= 0 and chat["x"] + chat["width"] <= 391
    assert box["y"] + box["height"] <= 844 and box["width"] >= 300
    bar = page.locator("#history-sidebar").bounding_box()
    assert bar is None or bar["x"] + bar["width"] <= 60  # only its toggle peeks in
    page.locator("#history-sidebar button.toggle-button").click()
    page.locator("#history label").first.click()
    page.wait_for_function("() => !document.querySelector('#history-sidebar').classList.contains('open')")
    context.close()


def contrast(page, selector: str) -> float:
    """WCAG contrast ratio of an element's text against the first opaque background behind it."""
    return page.evaluate(
        """sel => {
        const el = document.querySelector(sel);
        const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
        let bg = null;
        for (let n = el; n; n = n.parentElement) {
            const c = rgb(getComputedStyle(n).backgroundColor);
            if (c.length === 3 || (c.length === 4 && c[3] > 0.9)) { bg = c; break; }
        }
        bg = bg || [255, 255, 255];
        const lum = c => { const [r, g, b] = c.slice(0, 3).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
        const a = lum(rgb(getComputedStyle(el).color)), b = lum(bg);
        return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    }""",
        selector,
    )


@pytest.fixture(scope="module")
def app_without_model(tmp_path_factory):
    running = start_app(["--model", "missing/model", "--data-dir", str(tmp_path_factory.mktemp("nomodel"))])
    yield running
    running.stop()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_no_model_banner_is_readable_and_the_page_has_one_settings(browser, app_without_model, scheme):
    context = browser.new_context(viewport={"width": 1280, "height": 860}, color_scheme=scheme)
    page = context.new_page()
    page.goto(app_without_model.url + f"?__theme={scheme}")
    page.locator("#banner").get_by_text("make tiny-model").wait_for()
    for part in ("#banner p", "#banner li"):
        assert contrast(page, part) >= 4.5, f"{part} contrast too low in {scheme} mode"
    shot(page, f"12-banner-{scheme}")
    # One "Settings" (the page's, labelled), no emoji on buttons, each button named.
    assert page.locator("footer").get_by_text("Settings").count() == 0
    page.get_by_role("button", name="Settings").wait_for()
    page.get_by_role("button", name="Chat history").wait_for()
    names = page.evaluate(
        "[...document.querySelectorAll('button')].filter(b => b.offsetParent !== null).map(b => b.getAttribute('aria-label') || b.innerText.trim())"
    )
    emoji = [
        n for n in names if any(ord(c) >= 0x1F000 or 0x2600 <= ord(c) < 0x27C0 or c == "\ufe0f" for c in n)
    ]
    assert all(names) and not emoji, names
    assert page.get_by_role("button", name="Regenerate").count() == 1
    assert page.locator("#chat button[aria-label='Clear']").is_hidden()
    context.close()


def test_export_then_import_round_trip_keeps_the_photo(page, media, tmp_path):
    page.locator("#input textarea").fill("Round trip with a photo")
    attach(page, media["photo"])
    page.locator("#input textarea").press("Enter")
    wait_for_stats(page)
    page.get_by_text("This chat: rename, export, delete").click()
    page.locator("#export").click()
    link = page.locator("#exports a[download$='.json']")
    link.wait_for()
    with page.expect_download() as download:
        link.click()
    exported = tmp_path / "chat.json"
    download.value.save_as(exported)
    assert "Round trip with a photo" in exported.read_text()
    before = page.locator("#history label").count()
    with page.expect_file_chooser() as chooser:
        page.locator("#import").click()
    chooser.value.set_files(str(exported))
    page.wait_for_function(f"() => document.querySelectorAll('#history label').length > {before}")
    image = page.locator("#chat [data-testid=user] img").first
    image.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert "Round trip with a photo" in page.locator("#chat").inner_text()
    shot(page, "14-imported")


def test_regenerate_keeps_versions_that_the_arrows_switch_between_and_continue_extends(page):
    set_options(page, Max_new_tokens=8)  # short replies; sampling makes each version differ
    send_and_wait(page, "Versions, please")
    first = last_reply(page)
    page.locator("#regenerate").click()
    nav = page.locator("#chat .version-nav")
    nav.filter(has_text="2/2").wait_for()
    assert last_reply(page)
    shot(page, "15-versions")
    nav.get_by_role("button", name="Previous version").click()
    nav.filter(has_text="1/2").wait_for()
    page.wait_for_function("t => { const r = document.querySelectorAll('#chat [data-testid=bot]');"
                           " return r.length && r[r.length - 1].innerText === t; }", arg=first)  # fmt: skip
    assert nav.get_by_role("button", name="Previous version").is_disabled()
    # A reload finds the version chosen, with its arrows.
    open_chat(page, chat_url(page))
    page.locator("#chat .version-nav").filter(has_text="1/2").wait_for()
    assert last_reply(page) == first
    # Continue makes the shown reply longer, in the same bubble: still two versions.
    before = page.locator("#chat [data-testid=bot]").count()
    page.locator("#continue").click()
    page.wait_for_function(
        "([n, length]) => { const r = document.querySelectorAll('#chat [data-testid=bot]');"
        " return r.length === n && r[n - 1].innerText.length > length; }",
        arg=[before, len(first)],
    )
    wait_for_submit(page)
    assert last_reply(page).startswith(first.strip()[:10])
    page.locator("#chat .version-nav").filter(has_text="1/2").wait_for()


def drop_on_chat(page, path: str) -> None:
    """Drop a file on the chat area (not on the input box), as a person dragging a photo would."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    page.evaluate(
        """([data, name]) => {
          const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
          const dt = new DataTransfer();
          dt.items.add(new File([bytes], name, {type: 'image/jpeg'}));
          const chat = document.querySelector('#chat');
          for (const type of ['dragover', 'drop'])
            chat.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        [data, Path(path).name],
    )


def unlabelled_controls(page) -> list[str]:
    """Visible buttons and fields a screen reader could not name."""
    return page.evaluate(
        """() => [...document.querySelectorAll('button, [role=button], input, textarea')]
          .filter(e => e.offsetParent !== null && e.type !== 'file')
          .filter(e => !(e.getAttribute('aria-label') || e.title || (e.innerText || '').trim()
                        || (e.labels && e.labels.length && e.labels[0].innerText.trim())
                        || e.getAttribute('aria-labelledby') || e.placeholder
                        || [...e.querySelectorAll('img')].some(i => i.alt)))
          .map(e => e.outerHTML.slice(0, 120))"""
    )


def test_photos_sit_side_by_side_open_large_and_can_be_dropped_anywhere(page, media):
    set_options(page, Max_new_tokens=4)
    attach(page, media["photo"], media["photo"])
    drop_on_chat(page, media["photo"])  # the third one dropped on the chat, not on the box
    page.wait_for_function("() => document.querySelectorAll('#input .thumbnail-item').length === 3")
    send_and_wait(page, "Three photos")
    frames = page.locator("#chat [data-testid=user] .image-container")
    frames.nth(2).wait_for()
    boxes = [frames.nth(i).bounding_box() for i in range(3)]
    assert all(b is not None for b in boxes)
    tops = {round(b["y"]) for b in boxes}
    assert len(tops) == 1, f"the photos are stacked, not side by side: {boxes}"
    assert boxes[0]["x"] + boxes[0]["width"] <= boxes[1]["x"] and all(b["height"] < 250 for b in boxes)
    # The text of the message is its own line below them, a bubble of its own width.
    text = page.locator("#chat [data-testid=user]").filter(has_text="Three photos").last.bounding_box()
    assert text is not None and text["y"] >= boxes[0]["y"] + boxes[0]["height"] and text["width"] < 400
    # No dead buttons: a photo's "share" only works on Spaces.
    shares = page.locator("#chat button[aria-label=Share], #chat button[title=Share]").all()
    assert not any(button.is_visible() for button in shares)
    assert unlabelled_controls(page) == []  # screen readers can name every control
    shot(page, "16-photo-grid")
    # The fullscreen button is the lightbox: the photo fills the screen.
    page.locator("#chat [data-testid=user] button[aria-label*=ullscreen]").first.click()
    page.wait_for_function("() => document.fullscreenElement !== null")
    height = page.evaluate("() => document.querySelector(':fullscreen img').getBoundingClientRect().height")
    assert height > 600, f"the photo stays {height:.0f} px high in fullscreen"
    shot(page, "17-lightbox")
    page.keyboard.press("Escape")


def test_copy_conversation_gives_markdown_without_server_addresses(page, media):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    set_options(page, Max_new_tokens=4)
    attach(page, media["photo"])
    send_and_wait(page, "Copy this chat")
    page.locator("#chat").get_by_role("button", name="Copy conversation").click()
    copied, deadline = "", time.monotonic() + 20
    while "Copy this chat" not in copied and time.monotonic() < deadline:  # (a Promise is no condition)
        time.sleep(0.2)
        copied = page.evaluate("navigator.clipboard.readText()")
    assert "**You**" in copied and "*[photo]*" in copied and "**Assistant**" in copied
    assert "gradio_api" not in copied and "http" not in copied
