"""The second security round (issue 29): holes H1, H2, H3 and H8, each through the real routes
with two logged-in users. Each test fails on the code before its fix.

Fast ones use the whole server stack (app.build_server) through Starlette's TestClient with a
FakeChatModel; the prefix-cache one (H3) runs ``app.py`` with a tiny random model, since only
the local engine has a prefix cache.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from assistant.conversation import Message
from tests.test_security import basic, server_client

USERS = (("alice", "a"), ("bob", "b"))
SECRET = "diary: the spare key is under the third flowerpot"


def login(client, user: str) -> None:
    client.cookies.clear()
    password = dict(USERS)[user]
    assert client.post("/login", data={"username": user, "password": password}).status_code == 200


def page_event(client, target_label: str | None = None, event: str = "submit") -> tuple[int, int]:
    """(fn_index, component id) of the page's send event: the message box's submit."""
    config = client.get("/config").json()
    boxes = [
        c["id"]
        for c in config["components"]
        if c.get("type") == "multimodaltextbox"
        and c.get("props", {}).get("visible", True) is not False
        and (target_label is None or c.get("props", {}).get("label") == target_label)
    ]
    for dep in config["dependencies"]:
        for component, name in dep.get("targets", []):
            if component in boxes and name == event:
                return dep["id"], component
    raise AssertionError("the page has no send event")


def join(client, fn_index: int, trigger: int, files: list[dict], text: str = "hi"):
    body = {
        "data": [None, {"text": text, "files": files}],
        "fn_index": fn_index,
        "trigger_id": trigger,
        "session_hash": "h1test",
        "event_data": None,
    }
    return client.post("/gradio_api/queue/join", json=body)


def file_data(path) -> dict:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def upload(client, name: str, data: bytes) -> str:
    response = client.post("/gradio_api/upload", files={"files": (name, data)})
    assert response.status_code == 200, response.text
    return response.json()[0]


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 99, 199)).save(buffer, "PNG")
    return buffer.getvalue()


def cached_copies(secret: str) -> list[Path]:
    """Files in Gradio's upload and cache folder holding ``secret``."""
    from gradio.utils import get_upload_folder

    found = []
    for path in Path(get_upload_folder()).rglob("*"):
        try:
            if path.is_file() and path.stat().st_size < 1_000_000 and secret.encode() in path.read_bytes():
                found.append(path)
        except OSError:
            continue
    return found


# --------------------------------------------------------------------------- H1: any file on the server


@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_a_page_message_cannot_name_a_file_it_did_not_upload(tmp_path, how, monkeypatch):
    secret = tmp_path / "elsewhere" / "diary.txt"
    secret.parent.mkdir()
    marker = f"{SECRET} {how} {tmp_path.name}"
    secret.write_text(marker)
    monkeypatch.chdir(tmp_path)
    client, _, _ = server_client(tmp_path, auth=USERS)
    login(client, "bob")
    fn, trigger = page_event(client)
    named = secret if how == "absolute" else Path("elsewhere/diary.txt")
    refused = join(client, fn, trigger, [file_data(named)])
    assert refused.status_code == 403, refused.text
    assert "diary.txt" in refused.json()["detail"] and "attach" in refused.json()["detail"]
    # The old spelling without "meta" and the hidden /chat endpoint are refused the same way.
    bare = client.post(
        "/gradio_api/call/chat", json={"data": [{"text": "hi", "files": [{"path": str(secret)}]}, [], {}]}
    )
    assert bare.status_code == 403
    history = [{"role": "user", "content": [{"path": str(secret)}]}]
    assert (
        client.post(
            "/gradio_api/call/chat", json={"data": [{"text": "hi", "files": []}, history, {}]}
        ).status_code
        == 403
    )
    assert cached_copies(marker) == []  # nothing was copied where /gradio_api/file= serves it


def test_a_user_may_send_their_own_upload_but_not_someone_elses(tmp_path):
    client, store, _ = server_client(tmp_path, auth=USERS)
    login(client, "alice")
    fn, trigger = page_event(client)
    alices = upload(client, "mine.png", png())
    assert join(client, fn, trigger, [file_data(alices)]).status_code == 200  # her own: fine
    conversation, saved = store.save(None, [Message.user("look", [alices]), Message.assistant("ok")], "alice")
    kept = str(saved[0].images[0])
    assert join(client, fn, trigger, [file_data(kept)]).status_code == 200  # her chat's photo
    login(client, "bob")
    assert join(client, fn, trigger, [file_data(alices)]).status_code == 403
    assert join(client, fn, trigger, [file_data(kept)]).status_code == 403


def test_without_logins_only_uploads_and_saved_photos_may_be_named(tmp_path):
    client, _, _ = server_client(tmp_path)
    fn, trigger = page_event(client)
    mine = upload(client, "mine.png", png())
    assert join(client, fn, trigger, [file_data(mine)]).status_code == 200
    assert join(client, fn, trigger, [file_data(Path(__file__).resolve())]).status_code == 403
    assert join(client, fn, trigger, [file_data("/etc/passwd")]).status_code == 403


# --------------------------------------------------------------------------- H2: other websites


EVIL = "https://evil.example"


def test_another_website_gets_no_cross_origin_access_behind_a_proxy(tmp_path):
    client, _, _ = server_client(tmp_path, auth=USERS)
    proxied = {"Host": "chat.example.org"}
    login(client, "alice")
    token = client.get("/gradio_api/token", headers={**proxied, "Origin": EVIL})
    assert "access-control-allow-origin" not in token.headers
    assert "access-control-allow-credentials" not in token.headers
    for path in ("/v1/chat/completions", "/voice/say", "/gradio_api/queue/join"):
        preflight = client.options(
            path,
            headers={
                **proxied,
                "Origin": EVIL,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert "access-control-allow-origin" not in preflight.headers, path
    # A form post or a fetch sent without a preflight is refused before it does anything.
    fn, trigger = page_event(client)
    posted = client.post(
        "/gradio_api/queue/join",
        headers={**proxied, "Origin": EVIL},
        json={
            "data": [None, {"text": "hi", "files": []}],
            "fn_index": fn,
            "trigger_id": trigger,
            "session_hash": "x",
        },
    )
    assert posted.status_code == 403 and "other websites" in posted.json()["detail"]
    assert (
        client.post("/voice/say", headers={**proxied, "Origin": "null"}, json={"text": "hi"}).status_code
        == 403
    )
    # The page's own origin still works, behind the proxy too.
    same = client.post(
        "/gradio_api/queue/join",
        headers={"Host": "chat.example.org", "Origin": "https://chat.example.org"},
        json={
            "data": [None, {"text": "hi", "files": []}],
            "fn_index": fn,
            "trigger_id": trigger,
            "session_hash": "x",
        },
    )
    assert same.status_code == 200
    # Behind a proxy that rewrote Host (nginx's default): the browser still says it is this site.
    rewritten = client.post(
        "/voice/say",
        headers={
            "Host": "127.0.0.1:7860",
            "Origin": "https://chat.example.org",
            "Sec-Fetch-Site": "same-origin",
        },
        json={"text": "hi"},
    )
    assert rewritten.status_code != 403
    forged = {"Host": "127.0.0.1:7860", "Origin": EVIL, "Sec-Fetch-Site": "cross-site"}
    assert client.post("/voice/say", headers=forged, json={"text": "hi"}).status_code == 403


def test_a_listed_origin_may_call_the_api(tmp_path):
    client, _, _ = server_client(tmp_path, auth=USERS, allowed_origins=("https://tools.example.org",))
    friend = {"Origin": "https://tools.example.org", "Host": "chat.example.org"}
    preflight = client.options(
        "/v1/models",
        headers={
            **friend,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.headers.get("access-control-allow-origin") == "https://tools.example.org"
    listed = client.get("/v1/models", headers={**friend, **basic("alice", "a")})
    assert (
        listed.status_code == 200
        and listed.headers["access-control-allow-origin"] == "https://tools.example.org"
    )
    other = client.get(
        "/v1/models", headers={"Origin": EVIL, "Host": "chat.example.org", **basic("alice", "a")}
    )
    assert "access-control-allow-origin" not in other.headers


def test_an_app_without_logins_answers_only_to_its_own_names(tmp_path):
    """DNS rebinding: evil.example made to resolve to 127.0.0.1 is 'same origin' with itself."""
    client, _, _ = server_client(tmp_path, allowed_origins=("https://chat.lan",))
    rebound = {"Host": "evil.example:7860", "Origin": "http://evil.example:7860"}
    for path in ("/config", "/gradio_api/info", "/v1/models", "/voice/config"):
        refused = client.get(path, headers=rebound)
        assert refused.status_code == 403 and "--allowed-origins" in refused.text, path
    for host in ("127.0.0.1:7860", "localhost:7860", "[::1]:7860", "192.168.1.5", "chat.lan"):
        assert client.get("/config", headers={"Host": host}).status_code == 200, host


def test_session_cookies_are_same_site(tmp_path):
    client, _, _ = server_client(tmp_path, auth=USERS)
    cookies = client.post("/login", data={"username": "alice", "password": "a"}).headers.get_list(
        "set-cookie"
    )
    assert cookies and all("samesite=lax" in c.lower() and "samesite=none" not in c.lower() for c in cookies)


def test_allowed_origins_must_be_origins():
    from assistant.settings import origin

    assert origin("https://Tools.Example.org/") == "https://tools.example.org"
    for bad in ("tools.example.org", "https://x.org/path", "ftp://x.org", "*"):
        with pytest.raises(ValueError):
            origin(bad)


# --------------------------------------------------------------------------- H8: login limiter


def test_a_repeated_login_field_is_refused_and_multipart_logins_are_counted(tmp_path):
    client, _, _ = server_client(tmp_path, auth=(*USERS, ("carol", "c")))
    doubled = client.post(
        "/login",
        content="username=decoy&username=carol&password=wrong",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert doubled.status_code == 400 and "username" in doubled.json()["detail"]
    # The page's own login form posts multipart: five wrong ones, then even the right one waits.
    for _ in range(5):
        wrong = client.post("/login", files={"username": (None, "carol"), "password": (None, "nope")})
        assert wrong.status_code == 400
    limited = client.post("/login", files={"username": (None, "carol"), "password": (None, "c")})
    assert limited.status_code == 429
    assert client.post("/login", data={"username": "alice", "password": "a"}).status_code == 200


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --------------------------------------------------------------------------- H3: the prefix cache


PIN = "My bank PIN is 4812 and the card is in the blue drawer at home."


@pytest.mark.slow
def test_one_user_cannot_read_anothers_prompt_through_the_prefix_cache(tmp_path):
    import httpx
    from gradio_client import Client

    from tests.server import start_app, tiny_model

    logins = ["--auth", "alice:a", "--auth", "bob:b", "--auth", "carol:c"]
    app = start_app(["--model", str(tiny_model()), "--data-dir", str(tmp_path), *logins])
    try:
        page = Client(app.url, auth=("alice", "a"), verbose=False)
        page.predict(
            {"text": PIN, "files": []}, [], {"max_new_tokens": 1, "temperature": 0}, api_name="/chat"
        )

        def cached(user: str, password: str, text: str) -> tuple[int, int]:
            body = {"model": "tiny-smolvlm", "messages": [{"role": "user", "content": text}], "max_tokens": 1}
            r = httpx.post(
                app.url + "v1/chat/completions", json=body, headers=basic(user, password), timeout=120
            )
            assert r.status_code == 200, r.text
            usage = r.json()["usage"]
            return usage["prompt_tokens_details"]["cached_tokens"], usage["prompt_tokens"]

        right, prompt = cached("bob", "b", PIN)  # bob guesses alice's whole message
        anyone, _ = cached("carol", "c", "What is the weather like on Mars today?")
        assert right == anyone  # what anyone reuses: the server's own system prompt
        assert right < prompt - 10  # (it was prompt - 1: everything alice wrote)
        again, prompt = cached("alice", "a", PIN)
        assert again >= prompt - 2  # alice's own follow-up still comes from her cache
    finally:
        app.stop()


def test_cache_entries_serve_their_owner_and_only_the_servers_part_to_others():
    from assistant.models.prefix_cache import Entry, PrefixCache

    class KV:
        def __init__(self, n):
            self.n = n

        def get_seq_length(self):
            return self.n

        def crop(self, count):
            self.n += count

    cache = PrefixCache(budget_bytes=1 << 30, min_reuse=2)
    persona = list(range(100, 120))  # 20 tokens the server wrote
    alices = persona + [1, 2, 3, 4, 5, 6, 7, 8]
    cache.put(Entry(alices, [], KV(len(alices)), 10, owner="alice", shared=len(persona)))
    kv, n = cache.take(alices + [9], [], owner="bob", shared=len(persona))
    assert n == len(persona) and kv.n == len(persona)
    assert len(cache) == 1  # bob got a copy; alice's entry stays hers
    assert cache.take(alices + [9], [], owner="bob", shared=0) == (None, 0)  # his own system text
    kv, n = cache.take(alices + [9], [], owner="alice", shared=len(persona))
    assert n == len(alices)
