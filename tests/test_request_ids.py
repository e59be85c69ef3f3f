"""Request ids: one per request or turn, in the answer's header, the log lines, the error a user
sees and the request a remote chat server gets; ``--log-format json`` lines."""

from __future__ import annotations

import json
import logging

from fastapi.testclient import TestClient

from assistant import request_ids
from assistant.core import Assistant
from assistant.models.base import ChatRequest
from assistant.settings import Settings
from tests.fakes import FakeChatModel


class Recording(FakeChatModel):
    def stream(self, request: ChatRequest):
        logging.getLogger("assistant.test").warning("generating")
        yield from super().stream(request)


class Broken(FakeChatModel):
    def stream(self, request: ChatRequest):
        raise RuntimeError("a bug")
        yield ""  # pragma: no cover


def server(tmp_path, model):
    from app import build_server

    s = Settings(data_dir=tmp_path / "data")
    app, _ = build_server(Assistant(s, model), s)
    return TestClient(app, base_url="http://127.0.0.1")


def ask(client, headers=None):
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
    return client.post("/v1/chat/completions", json=body, headers=headers or {})


def test_every_answer_names_its_request_and_a_callers_sane_id_is_kept(tmp_path):
    client = server(tmp_path, FakeChatModel())
    first, second = ask(client), ask(client)
    assert first.headers["x-request-id"].startswith("req-")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert ask(client, {"X-Request-Id": "proxy-42"}).headers["x-request-id"] == "proxy-42"
    odd = ask(client, {"X-Request-Id": "evil\r\nline " * 9}).headers["x-request-id"]
    assert odd.startswith("req-")  # not a short token: replaced, never written into logs as is


def test_log_lines_while_answering_name_the_request(tmp_path, caplog):
    caplog.handler.addFilter(request_ids._WithId())
    client = server(tmp_path, Recording())
    with caplog.at_level(logging.WARNING, logger="assistant.test"):
        answer = ask(client, {"X-Request-Id": "trace-7"})
    assert [r.request_id for r in caplog.records if r.getMessage() == "generating"] == ["trace-7"]
    assert answer.status_code == 200


def test_an_unexpected_error_tells_the_user_which_request_to_look_up(tmp_path):
    client = server(tmp_path, Broken())
    answer = ask(client, {"X-Request-Id": "trace-9"})
    assert answer.status_code == 500 and "request trace-9" in answer.json()["error"]["message"]


def test_a_turn_without_a_request_gets_its_own_id_and_sends_it_on():
    model = FakeChatModel()
    assistant = Assistant(Settings(), model)
    from assistant.conversation import Message

    one = assistant.reply([], Message.user("hi")).wait()
    two = assistant.reply([], Message.user("hi")).wait()
    assert one.request_id.startswith("req-") and one.request_id != two.request_id
    assert [r.request_id for r in model.requests] == [one.request_id, two.request_id]


def test_json_log_lines_carry_the_id():
    record = logging.LogRecord("assistant.x", logging.ERROR, __file__, 1, "it %s", ("broke",), None)
    record.request_id = "req-1"
    line = json.loads(request_ids.JsonFormatter().format(record))
    assert line["message"] == "it broke" and line["request_id"] == "req-1" and line["level"] == "ERROR"


def test_the_remote_backend_sends_the_id_on():
    import httpx

    from assistant.models.remote import RemoteChatModel
    from assistant.options import GenerationParams

    seen = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("x-request-id"))
        body = 'data: {"choices":[{"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    client = httpx.Client(base_url="http://server/v1/", transport=httpx.MockTransport(handle))
    model = RemoteChatModel("http://server/v1", model="m", client=client)
    from assistant.conversation import Message

    list(model.stream(ChatRequest([Message("user", "hi")], GenerationParams(), request_id="req-abc")))
    assert seen == ["req-abc"]
