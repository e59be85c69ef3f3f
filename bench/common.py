"""What every section shares: the run context, results, statistics, machine description,
markdown tables, and the benchmark copy of a random-weight chat model."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tools import QUIET_ENV

ROOT = Path(__file__).resolve().parent.parent


def quiet_environment() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def quiet_transformers() -> None:
    """No progress bars from weight loading/saving in the benchmark's output."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


# ------------------------------------------------------------------------------- run context


@dataclass
class Context:
    quick: bool
    cache: Path  # built models, audio and images, reused across runs
    out: Path  # where benchmarks.md / .json / plots go
    command: str  # the exact command line, written under every table
    budget_s: float = 0.0  # this section's time budget (soft: sections shrink optional work)
    started: float = field(default_factory=time.perf_counter)
    log: Callable[[str], None] = print

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return self.budget_s - self.elapsed()


@dataclass
class Goal:
    name: str
    target: str
    measured: str
    met: bool | None  # None: not measured
    note: str = ""


@dataclass
class SectionResult:
    key: str
    title: str
    body: str  # markdown: tables, plot links, findings
    goals: list[Goal]
    data: dict[str, Any]
    runtime_s: float = 0.0
    measured_at: str = ""
    quick: bool = False
    machine: dict[str, Any] = field(default_factory=dict)
    load: tuple[float, float] = (0.0, 0.0)  # 1-min load average before and after
    command: str = ""  # the exact command that measured it

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> SectionResult:
        raw = dict(raw)
        raw["goals"] = [Goal(**g) for g in raw.get("goals", [])]
        raw["load"] = tuple(raw.get("load", (0.0, 0.0)))
        return cls(**raw)


# ------------------------------------------------------------------------------- statistics


def summary(values) -> dict[str, float]:
    """Median and spread of a sample: min, max, quartiles, n."""
    xs = sorted(float(v) for v in values)
    if not xs:
        return {
            "n": 0,
            "median": float("nan"),
            "min": float("nan"),
            "max": float("nan"),
            "p25": float("nan"),
            "p75": float("nan"),
        }
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return {
        "n": len(xs),
        "median": statistics.median(xs),
        "min": xs[0],
        "max": xs[-1],
        "p25": q[0],
        "p75": q[2],
    }


def percentile(values, p: float) -> float:
    """Linear-interpolated percentile (p in 0..100), like numpy's default."""
    xs = sorted(float(v) for v in values)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def fmt(value: float, digits: int = 2) -> str:
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def fmt_ms(seconds: float, digits: int = 0) -> str:
    return fmt(seconds * 1000, digits)


def spread(s: dict, scale: float = 1.0, digits: int = 2) -> str:
    """'median (min–max)' of a summary, scaled (e.g. 1000 for ms)."""
    if not s["n"]:
        return "–"
    if s["n"] == 1:
        return f"{s['median'] * scale:.{digits}f}"
    return f"{s['median'] * scale:.{digits}f} ({s['min'] * scale:.{digits}f}–{s['max'] * scale:.{digits}f})"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v):
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def peak_rss_mib(pid: int | str = "self") -> float:
    """A process's peak resident memory (VmHWM). Not getrusage's ru_maxrss: on Linux that survives
    exec, so a child started by a big parent would report the parent's peak."""
    return _status_mib(pid, "VmHWM")


def rss_mib(pid: int | str = "self") -> float:
    """A process's resident memory now (VmRSS)."""
    return _status_mib(pid, "VmRSS")


def _status_mib(pid: int | str, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


# ------------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def _version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": cores,
        "ram_gib": round(_ram_gib(), 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {
            d: _version(d)
            for d in (
                "torch",
                "torchvision",
                "transformers",
                "faster-whisper",
                "ctranslate2",
                "pillow",
                "gradio",
            )
        },
    }


def machine_line(m: dict) -> str:
    v = m.get("versions", {})
    return (
        f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('ram_gib')} GiB RAM; "
        f"torch {v.get('torch')}, transformers {v.get('transformers')}, faster-whisper {v.get('faster-whisper')}, "
        f"ctranslate2 {v.get('ctranslate2')}, Pillow {v.get('pillow')}, torchvision {v.get('torchvision')}; Python {m.get('python')}"
    )


def provenance(result: SectionResult) -> str:
    """The line under each section's tables: machine, versions, command, noise indicator."""
    before, after = result.load
    return (
        f"<sub>Machine: {machine_line(result.machine)}. Command: `{result.command}`. "
        f"Measured {result.measured_at}, section runtime {result.runtime_s:.0f} s, "
        f"1-min load average {before:.1f} → {after:.1f} (other work on the machine adds noise).</sub>"
    )


# ------------------------------------------------------------------------------- plots


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3})
    return plt


# ------------------------------------------------------------------------------- chat models

BENCH_MODEL_VERSION = 2
BENCH_MARKER = "bench_model.json"


def word_token_ids(tokenizer) -> list[int]:
    """Ids of ordinary word-start tokens (" cat", " 12"): base vocabulary, no special or added
    token, decoding to a space followed by printable text."""
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    found = []
    for i in range(len(tokenizer)):
        if i in special:
            continue
        text = tokenizer.decode([i])
        if (
            len(text) > 1
            and text[0] == " "
            and text[1:].strip()
            and text.isprintable()
            and "\ufffd" not in text
        ):
            found.append(i)
    return found


def words_only(model, processor) -> None:
    """Zero the output-layer rows of every id that is not a word-start token (see below)."""
    import torch

    tokenizer = getattr(processor, "tokenizer", processor)
    keep = torch.zeros(model.get_output_embeddings().weight.shape[0], dtype=torch.bool)
    keep[word_token_ids(tokenizer)] = True
    with torch.no_grad():
        model.get_output_embeddings().weight[~keep] = 0


def chat_model_dir(cache: Path, arch: str = "idefics3", size: str = "full") -> Path:
    """A random-weight model of ``arch``/``size`` whose replies are always visible text.

    ``tools.random_models`` gives the real architecture with the published dimensions, but its
    tokenizer is small while the output layer keeps the real vocabulary size: a random model
    then mostly emits ids with no text, and tends to repeat one word piece without a space, so
    the text streamer (which holds back an unfinished word) shows nothing until the end. Here
    the output-layer rows of every id that is not a word-start token (" cat") are set to zero:
    greedy decoding then always picks a whole word, so text streams token by token like prose
    (and never EOS, so replies have the asked length). Speed does not depend on weight values.
    """
    from tools.random_models import MARKER, build

    quiet_transformers()
    models = cache / "models"
    raw = build(arch, models / f"{arch}-{size}-raw", size=size)
    out = models / f"{arch}-{size}"
    wanted = {"version": BENCH_MODEL_VERSION, "raw": json.loads((raw / MARKER).read_text())}
    try:
        if json.loads((out / BENCH_MARKER).read_text()) == wanted:
            return out
    except (OSError, ValueError):
        pass

    from transformers import AutoModelForImageTextToText, AutoProcessor

    quiet_transformers()
    processor = AutoProcessor.from_pretrained(raw)
    model = AutoModelForImageTextToText.from_pretrained(raw, dtype="auto")
    words_only(model, processor)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=models))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / BENCH_MARKER).write_text(json.dumps(wanted, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def log_to_stderr(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)
