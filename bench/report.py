"""docs/benchmarks.md from the section results (kept in docs/benchmarks.json between runs, so
``--only chat`` refreshes one section and keeps the others as last measured)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from bench import SECTIONS
from bench.common import SectionResult, machine_line, provenance, table

RESULTS = "benchmarks.json"
REPORT = "benchmarks.md"


def load_raw(out: Path) -> dict:
    try:
        return json.loads((out / RESULTS).read_text())
    except (OSError, ValueError):
        return {}


def load_results(out: Path) -> dict[str, SectionResult]:
    raw = load_raw(out)
    found = {}
    for key, value in raw.get("sections", {}).items():
        try:
            found[key] = SectionResult.from_json(value)
        except TypeError:
            continue  # written by an older version: that section is simply re-measured
    return found


def save_results(out: Path, results: dict[str, SectionResult], full_run: dict | None) -> None:
    payload = {"full_run": full_run, "sections": {k: r.to_json() for k, r in results.items()}}
    (out / RESULTS).write_text(json.dumps(payload, indent=1, default=str) + "\n")


def _goal_rows(results: dict[str, SectionResult]) -> list[list[str]]:
    rows = []
    for key in SECTIONS:
        r = results.get(key)
        if r is None:
            continue
        for g in r.goals:
            if g.met is None:
                verdict = "reported" if g.target == "report" else "not measured"
            else:
                verdict = "**met**" if g.met else "**missed**"
            rows.append([g.name, g.target, g.measured, verdict, g.note])
    return rows


GPU_SECTION = """## 5. GPU (Qwen2.5-VL-3B shape: NF4 vs INT8 vs BF16; Whisper float16 vs int8_float16)

**Not measured yet.** No GPU was available to the sessions that wrote these benchmarks, so there
are no GPU figures here — none are estimated or copied from elsewhere. The script is ready:

```bash
bash bench/gpu.sh            # on a CUDA machine with torch + transformers; writes docs/benchmarks-gpu.md
```

It measures, for the Qwen2.5-VL-3B-Instruct shape (random weights, real dimensions): peak VRAM,
load time, time to first token with one 1024-px image and decode tokens/s for BF16, INT8
(LLM.int8) and NF4 (plus NF4 variants that may close the speed gap: vision tower and `lm_head`
left in BF16, static KV cache + `torch.compile`), and faster-whisper on the GPU in float16 vs
int8_float16. Goals: NF4 VRAM ≤ 0.35× BF16 and NF4 tokens/s ≥ 0.9× BF16. See the header of
`bench/gpu.sh` for the wheels to carry to a machine without internet.
"""


def gpu_goal_rows(out: Path) -> list[list[str]]:
    """The two GPU goals from docs/benchmarks-gpu.json when `bench/gpu.sh` has been run."""
    try:
        gpu = json.loads((out / "benchmarks-gpu.json").read_text())
        variants = gpu["chat"]["variants"]
        bf16, nf4 = variants["bf16"], variants["nf4 (default)"]
        tps = lambda v: statistics.median(r["tokens_per_s"] for r in v["runs"])  # noqa: E731
        vram, speed = nf4["peak_gib"] / bf16["peak_gib"], tps(nf4) / tps(bf16)
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError, statistics.StatisticsError):
        return [
            [
                "GPU: NF4 VRAM vs BF16",
                "≤ 0.35×",
                "not measured (no GPU available)",
                "not measured",
                "run `bash bench/gpu.sh` on a GPU machine",
            ],
            [
                "GPU: NF4 tokens/s vs BF16",
                "≥ 0.9×",
                "not measured (no GPU available)",
                "not measured",
                "run `bash bench/gpu.sh` on a GPU machine",
            ],
        ]
    where = f"{gpu['machine'].get('gpu')}, see benchmarks-gpu.md"
    return [
        [
            "GPU: NF4 VRAM vs BF16",
            "≤ 0.35×",
            f"{vram:.2f}×",
            "**met**" if vram <= 0.35 else "**missed**",
            where,
        ],
        [
            "GPU: NF4 tokens/s vs BF16",
            "≥ 0.9×",
            f"{speed:.2f}×",
            "**met**" if speed >= 0.9 else "**missed**",
            where,
        ],
    ]


def gpu_section(out: Path) -> str:
    gpu_md = out / "benchmarks-gpu.md"
    if gpu_md.exists():
        return (
            "## 5. GPU\n\nMeasured with `bash bench/gpu.sh`: [benchmarks-gpu.md](benchmarks-gpu.md).\n\n"
            + gpu_md.read_text().replace("# GPU benchmarks", "", 1).replace("\n## ", "\n### ")
        )
    return GPU_SECTION


def render(out: Path, results: dict[str, SectionResult], full_run: dict | None = None) -> Path:
    parts = [
        "# Benchmarks",
        "",
        "Speed of the assistant's own code paths on CPU, measured with `make bench` (= `python -m bench`). "
        "Chat figures use the real architectures with **random weights built from hand-written configs** "
        "(`tools/random_models.py`; dimensions from the public model cards, nothing downloaded): speed and "
        "memory do not depend on weight values. Reply lengths are fixed (`min_new_tokens = max_new_tokens`). "
        "The machines these ran on are shared and noisy, so every headline figure is a ratio or a "
        "difference measured within one run from interleaved repetitions, reported as the median with "
        "its spread (min–max).",
        "",
    ]
    parts += [
        "Reproduce: `make bench` (6–11 minutes on 2 cores, depending on other load; built models, audio and photos are cached in `.cache/bench`), "
        "one section: `python -m bench --only chat` (the others keep their last figures, from `docs/benchmarks.json`), "
        "a one-minute check that the code runs: `python -m bench --quick --out /tmp/bench` (tiny models; figures meaningless). "
        "GPU: `bash bench/gpu.sh` (section 5).",
        "",
    ]
    any_result = next(iter(results.values()), None)
    if any_result is not None:
        parts += [f"**Machine:** {machine_line(any_result.machine)}.", ""]
    if full_run:
        parts += [
            f"Last full run: `{full_run['command']}` on {full_run['at']}, {full_run['seconds'] / 60:.1f} min in all "
            f"(budget: 15 min on 2 cores).",
            "",
        ]
    parts += [
        "## Goals",
        "",
        table(
            ["goal", "target", "measured", "verdict", "what limits it / note"],
            _goal_rows(results) + gpu_goal_rows(out),
        ),
        "",
    ]
    for key in SECTIONS:
        r = results.get(key)
        if r is None:
            parts += [f"## {key}", "", "Not run yet: `python -m bench --only " + key + "`.", ""]
            continue
        quick = " (quick mode: tiny settings, figures are not representative)" if r.quick else ""
        parts += [f"## {r.title}{quick}", "", r.body, "", provenance(r), ""]
    parts += [gpu_section(out)]
    path = out / REPORT
    path.write_text("\n".join(parts))
    return path
