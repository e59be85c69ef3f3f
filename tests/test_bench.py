"""Smoke tests of the benchmark code (`python -m bench`), so it cannot rot.

Benchmarks are not tests: nothing here asserts a timing. The quick mode runs every CPU section
on tiny models and short inputs, then the report must have every section, its goals and plots.
"""

from __future__ import annotations

import json

import pytest

from bench import SECTIONS
from tests.speech_samples import have_tools

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not have_tools(), reason="espeak-ng, sox and ffmpeg are needed for the speech clips")
def test_quick_run_writes_every_section(tmp_path):
    from bench.__main__ import main

    out, cache = tmp_path / "docs", tmp_path / "cache"
    rc = main(["--quick", "--out", str(out), "--cache", str(cache)])
    report = (out / "benchmarks.md").read_text()
    raw = json.loads((out / "benchmarks.json").read_text())
    assert rc == 0, report
    for key in SECTIONS:
        section = raw["sections"][key]
        assert (
            section["quick"] and section["goals"] and section["command"].startswith("python -m bench --quick")
        ), key
        assert "failed" not in section["title"], section["body"]
        assert (out / f"bench-{key}.png").stat().st_size > 1000, key
        assert f"](bench-{key}.png)" in report
    assert report.count("Machine:") >= len(SECTIONS)  # every table says where it was measured
    assert "**Not measured yet.**" in report  # the GPU section never pretends
    assert raw["full_run"] is None  # a quick run is not a full run


def test_only_rejects_unknown_sections(capsys):
    from bench.__main__ import parse_args

    assert parse_args(["--only", "chat,images"]).only == ["chat", "images"]
    with pytest.raises(SystemExit):
        parse_args(["--only", "chat,gpu"])
    assert "unknown section" in capsys.readouterr().err


def test_gpu_report_renders_from_results():
    from bench.gpu import VARIANTS, render

    def variant(peak, tps):
        return {
            "load_s": 10.0,
            "weights_gib": peak * 0.8,
            "peak_gib": peak,
            "reserved_gib": peak + 1,
            "process_gib": None,
            "runs": [{"ttft_s": 0.2, "tokens_per_s": tps, "tokens": 128, "prompt_tokens": 900}],
        }

    variants = {
        name: variant(8.0 if "bf16" in name else 3.0, 40.0 if "bf16" in name else 30.0) for name in VARIANTS
    }
    variants["int8"] = {"error": "CUDA out of memory"}
    results = {
        "command": "bash bench/gpu.sh",
        "at": "today",
        "seconds": 60.0,
        "machine": {
            "gpu": "Test GPU",
            "gpu_gib": 80,
            "cuda": "12.x",
            "cpu": "cpu",
            "cores": 16,
            "ram_gib": 128,
            "versions": {},
        },
        "chat": {"new_tokens": 128, "reps": 1, "variants": variants},
        "speech": {
            "types": [
                {
                    "compute_type": "float16",
                    "load_s": 1.0,
                    "first_s": 0.5,
                    "process_gib": 1.0,
                    "clips": [{"clip": "en-us 5 s", "seconds": 5.0, "times": [0.1], "wer": 0.0}],
                    "long": {"seconds": 600, "elapsed_s": 12, "wer": 0.05},
                },
                {"compute_type": "int8_float16", "error": "no CUDA libraries"},
            ]
        },
    }
    md = render(results)
    assert "NF4 peak memory vs BF16: **0.38×**" in md and "failed: CUDA out of memory" in md
    assert "failed: no CUDA libraries" in md and "Test GPU" in md
