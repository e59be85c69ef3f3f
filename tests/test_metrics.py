"""``/metrics``: what it counts, who may read it, and a real Prometheus scraping a real app.py.

Fast part: the whole server stack (``app.build_server``) with ``FakeChatModel`` through
Starlette's TestClient, the figures read back with prometheus_client's own parser. Real part:
Debian's ``prometheus`` (installed by ``make test``'s system-deps) scrapes ``python app.py``
with the API key and is queried over its HTTP API.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from assistant.core import Assistant
from assistant.settings import Settings
from tests.fakes import FakeChatModel
from tests.server import free_port, start_app

KEY = "metrics-key"


def server(tmp_path, model=None, **settings):
    from app import build_server

    s = Settings(data_dir=tmp_path / "data", **settings)
    assistant = Assistant(s, model or FakeChatModel(chunks=["Hello", " there", "!"]))
    app, _ = build_server(assistant, s)
    return TestClient(app, base_url="http://127.0.0.1"), assistant


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found, name, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def chat(client, headers, stream=False):
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return client.post("/v1/chat/completions", json=body, headers=headers)


def test_metrics_need_the_same_credentials_as_the_api(tmp_path):
    client, _ = server(tmp_path, api_key=KEY, auth=(("alice", "wonderland"),))
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert client.get("/metrics", auth=("alice", "wonderland")).status_code == 200


def test_replies_tokens_and_requests_are_counted(tmp_path):
    client, assistant = server(tmp_path, api_key=KEY)
    key = {"Authorization": f"Bearer {KEY}"}
    assert chat(client, key).status_code == 200
    assert chat(client, key, stream=True).status_code == 200
    assert chat(client, {"Authorization": "Bearer wrong"}).status_code == 401
    response = client.get("/metrics", headers=key)
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    model = assistant.chat_model.info.name
    assert value(found, "assistant:request_success_total", model_name=model, finished_reason="stop") == 2
    assert value(found, "assistant:generation_tokens_total", model_name=model) == 6
    assert value(found, "assistant:time_to_first_token_seconds_count", model_name=model) == 2
    assert value(found, "assistant:e2e_request_latency_seconds_count", model_name=model) == 2
    assert value(found, "assistant:time_per_output_token_seconds_count", model_name=model) == 2
    prompt = value(found, "assistant:prompt_tokens_total", model_name=model)
    assert prompt > 0 and value(found, "assistant:prefix_cache_queries_total", model_name=model) == prompt
    assert value(found, "assistant:model_loaded", model_name=model) == 1
    assert value(found, "assistant:num_requests_running", model_name=model) == 0
    requests = "assistant:http_requests_total"
    assert value(found, requests, route="/v1/chat/completions", method="POST", status="200") == 2
    assert value(found, requests, route="/v1/chat/completions", method="POST", status="401") == 1


def test_a_failed_reply_is_counted_by_its_error(tmp_path):
    from tests.test_api import FailingModel

    client, assistant = server(tmp_path, model=FailingModel(after=0))
    assert chat(client, {}).status_code >= 500
    found = samples(client.get("/metrics").text)
    name = assistant.chat_model.info.name
    assert value(found, "assistant:request_failure_total", model_name=name, error="GenerationFailed") == 1
    assert value(found, "assistant:request_success_total", model_name=name, finished_reason="stop") == 0


def test_a_path_a_client_makes_up_does_not_become_a_label(tmp_path):
    client, _ = server(tmp_path)
    for i in range(5):
        client.get(f"/v1/made-up-{i}")
        client.get(f"/nowhere/{i}")
    found = samples(client.get("/metrics").text)
    routes = {dict(labels).get("route") for name, labels in found if name == "assistant:http_requests_total"}
    assert routes == {"/v1/other", "other"}


def test_speech_is_counted_in_seconds_of_audio(tmp_path):
    from assistant.metrics import Metrics

    metrics = Metrics()
    metrics.transcribed(0.4, 2.5)
    metrics.spoken(0.2, 1.5)
    from prometheus_client import generate_latest

    found = samples(generate_latest(metrics.registry).decode())
    assert value(found, "assistant:transcription_audio_seconds_total") == 2.5
    assert value(found, "assistant:transcription_seconds_count") == 1
    assert value(found, "assistant:speech_audio_seconds_total") == 1.5


# --------------------------------------------------------------------------- a real Prometheus


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed")
def test_a_real_prometheus_scrapes_the_app_and_answers_queries():
    folder = Path(tempfile.mkdtemp(prefix="prometheus-"))
    # a chat server that is not there: the app starts at once, and serves /v1/models and /metrics
    backend = ["--backend", "openai", "--base-url", f"http://127.0.0.1:{free_port()}/v1"]
    app = start_app([*backend, "--api-key", KEY, "--data-dir", str(folder / "data")])
    port = free_port()
    (folder / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: assistant\n"
        f"    authorization: {{credentials: {KEY}}}\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{app.port}']}}]\n"
    )
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "prometheus.log").open("wb"),
    )  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as prom:
            deadline, result = time.monotonic() + 60, []
            query = 'assistant:http_requests_total{route="/metrics",status="200"}'
            while time.monotonic() < deadline and not result:
                time.sleep(1)
                try:
                    answer = prom.get("/api/v1/query", params={"query": query}).json()
                except (httpx.HTTPError, ValueError):
                    continue  # still starting
                result = answer.get("data", {}).get("result", [])
            assert result, (folder / "prometheus.log").read_text()[-2000:]
            assert float(result[0]["value"][1]) >= 1
            targets = prom.get("/api/v1/targets").json()["data"]["activeTargets"]
            assert [t["health"] for t in targets] == ["up"], targets
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=20)
        app.stop()
