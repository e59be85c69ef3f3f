"""The second round's data holes (issue 29: H1, H2, H3, H8) tried against a real ``app.py`` with a
tiny random model and three logins, as an attacker would; each returns one JSON-ready row.

    from bench.security_data import measure_data_holes
    rows = measure_data_holes()
"""

from __future__ import annotations

import base64
import tempfile
from contextlib import closing
from pathlib import Path

import httpx

USERS = {"alice": "a", "bob": "b", "carol": "c"}
PIN = "My bank PIN is 4812 and the card is in the blue drawer at home."


def basic(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def logged_in(url: str, user: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=120)
    client.post("/login", data={"username": user, "password": USERS[user]}).raise_for_status()
    return client


def send_event(client: httpx.Client) -> tuple[int, int]:
    """(fn_index, trigger id) of the page's message box submit."""
    config = client.get("/config").json()
    boxes = {c["id"] for c in config["components"] if c.get("type") == "multimodaltextbox"}
    for dep in config["dependencies"]:
        for component, event in dep.get("targets", []):
            if component in boxes and event == "submit":
                return dep["id"], component
    raise RuntimeError("no send event on the page")


def file_read(url: str, secret: Path) -> dict:
    """H1: bob's page message names a file of the server's."""
    with closing(logged_in(url, "bob")) as bob:
        fn, trigger = send_event(bob)
        body = {
            "data": [
                None,
                {"text": "hi", "files": [{"path": str(secret), "meta": {"_type": "gradio.FileData"}}]},
            ],
            "fn_index": fn,
            "trigger_id": trigger,
            "session_hash": "bench",
        }
        joined = bob.post("/gradio_api/queue/join", json=body)
        chat = bob.post(
            "/gradio_api/call/chat", json={"data": [{"text": "hi", "files": [{"path": str(secret)}]}, [], {}]}
        )
    return {
        "case": "H1: a page message naming a server file (queue/join; hidden /chat)",
        "queue_join_status": joined.status_code,
        "chat_status": chat.status_code,
    }


def cross_origin(url: str) -> dict:
    """H2: another site's page, with the app reached under a proxy's name."""
    evil = {"Origin": "https://evil.example", "Host": "chat.example.org"}
    with closing(logged_in(url, "alice")) as alice:
        token = alice.get("/gradio_api/token", headers=evil)
        login = alice.post("/login", data={"username": "alice", "password": "a"})
        preflights = {}
        for path in ("/v1/chat/completions", "/voice/say", "/gradio_api/queue/join"):
            answer = alice.options(path, headers={**evil, "Access-Control-Request-Method": "POST"})
            preflights[path] = answer.headers.get("access-control-allow-origin")
        posted = alice.post("/voice/say", headers=evil, json={"text": "hi"})
    return {
        "case": "H2: https://evil.example reading and posting with alice's login",
        "token_allow_origin": token.headers.get("access-control-allow-origin"),
        "preflight_allow_origin": preflights,
        "cross_site_post_status": posted.status_code,
        "cookie_same_site": sorted(
            {c.split("SameSite=")[-1].split(";")[0] for c in login.headers.get_list("set-cookie")}
        ),
    }


def cache_probe(url: str, model: str) -> dict:
    """H3: alice writes a PIN on the page (/chat); bob guesses it over /v1 and reads the count of
    cached tokens; carol sends something unrelated."""
    from gradio_client import Client

    Client(url, auth=("alice", "a"), verbose=False).predict(
        {"text": PIN, "files": []}, [], {"max_new_tokens": 1, "temperature": 0}, api_name="/chat"
    )

    def cached(user: str, text: str) -> tuple[int, int]:
        body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 1}
        usage = httpx.post(url + "v1/chat/completions", json=body, headers=basic(user), timeout=120).json()[
            "usage"
        ]
        return usage["prompt_tokens_details"]["cached_tokens"], usage["prompt_tokens"]

    right, prompt = cached("bob", PIN)
    wrong, _ = cached("carol", PIN.replace("4812", "1111"))
    own, _ = cached("alice", PIN)
    return {
        "case": "H3: cached_tokens another user's guess reveals (prompt tokens in all)",
        "prompt_tokens": prompt,
        "bob_right_guess": right,
        "carol_wrong_guess": wrong,
        "alice_own_follow_up": own,
    }


def login_bypass(url: str) -> dict:
    """H8: wrong passwords for carol sent with a decoy name first."""
    statuses = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for n in range(7):
            answer = client.post(
                "/login",
                content=f"username=decoy{n}&username=carol&password=wrong{n}",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            statuses.append(answer.status_code)
        for _ in range(6):  # the page's own multipart form
            answer = client.post("/login", files={"username": (None, "carol"), "password": (None, "nope")})
            statuses.append(answer.status_code)
    return {
        "case": "H8: 7 logins for carol behind a new decoy name each, then 6 multipart wrong passwords",
        "statuses": statuses,
    }


def measure_data_holes() -> list[dict]:
    from tests.server import start_app, tiny_model

    model = tiny_model()
    with tempfile.TemporaryDirectory() as tmp:
        secret = Path(tmp) / "diary.txt"
        secret.write_text("the spare key is under the third flowerpot")
        logins = [arg for user, password in USERS.items() for arg in ("--auth", f"{user}:{password}")]
        app = start_app(["--model", str(model), "--data-dir", tmp, *logins])
        try:
            return [
                file_read(app.url, secret),
                cross_origin(app.url),
                cache_probe(app.url, model.name),
                login_bypass(app.url),
            ]
        finally:
            app.stop()
