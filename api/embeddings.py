"""``POST /v1/embeddings``: texts to vectors, as OpenAI's endpoint (the embedded MiniLM by default).

``input`` is one string or a list of strings (token arrays are refused: they would be another
model's token ids); ``encoding_format: base64`` gives little-endian float32 bytes, as OpenAI's
client expects. The work runs on the API's worker threads, one batch at a time, and counts
against the caller's per-user limits like any other model work.
"""

from __future__ import annotations

import base64

from fastapi import APIRouter, Request

from api.errors import ApiError
from api.responses import Embedding, EmbeddingList, EmbeddingUsage
from api.schemas import EmbeddingRequest
from api.streaming import Workers


def texts_of(body: EmbeddingRequest) -> list[str]:
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not all(isinstance(t, str) for t in texts):
        raise ApiError(
            400,
            "input must be text (a string or a list of strings): this server does not take token arrays",
            param="input",
            code="invalid_input",
        )
    return texts


def install(router: APIRouter, assistant, workers: Workers) -> None:
    """Add the route to the /v1 router (before its catch-all)."""

    @router.post("/embeddings")
    async def embeddings(body: EmbeddingRequest, request: Request):
        embedder = assistant.embedder
        if embedder is None:
            raise ApiError(
                404, "this server serves no embedding model (--embedding-model off)", code="model_not_found"
            )
        name = embedder.name
        if body.model not in (name, embedder.source):
            raise ApiError(
                404,
                f"The model '{body.model}' does not exist; use '{name}'",
                param="model",
                code="model_not_found",
            )
        texts = texts_of(body)
        if body.dimensions is not None and body.dimensions != await workers.run(lambda: embedder.dimensions):
            raise ApiError(
                400, f"dimensions: {name} gives {embedder.dimensions} and cannot shorten them; leave it out",
                param="dimensions", code="unsupported_parameter",
            )  # fmt: skip
        assistant.quotas.admit(request.state.user)
        found = await workers.run(embedder.embed, texts)
        data = [
            Embedding(
                index=i,
                embedding=base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
                if body.encoding_format == "base64"
                else row.tolist(),
            )
            for i, row in enumerate(found.vectors)
        ]
        usage = EmbeddingUsage(prompt_tokens=found.tokens, total_tokens=found.tokens)
        return EmbeddingList(data=data, model=name, usage=usage)


__all__ = ["install"]
