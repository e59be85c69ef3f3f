"""python -m bench [--quick] [--only speech,chat,reuse,int8,vision,images,documents,server,llama,real,voice] [--out docs] [--cache .cache/bench]"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench import SECTIONS
from bench.common import (
    ROOT,
    Context,
    Goal,
    SectionResult,
    load_average,
    log_to_stderr,
    machine,
    quiet_environment,
)
from bench.report import load_raw, load_results, render, save_results

# Soft time budgets (seconds) of the full run on 2 cores; sections skip optional work past them.
BUDGETS = {
    "speech": 200,
    "chat": 330,
    "reuse": 420,
    "int8": 420,
    "vision": 300,
    "images": 90,
    "documents": 420,
    "server": 200,
    "llama": 300,
    "real": 300,
    "voice": 240,
}


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the assistant on this machine and write docs/benchmarks.md.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny models and inputs, one repetition: checks the code runs, figures mean nothing",
    )
    p.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated sections ({','.join(SECTIONS)})"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "docs",
        help="where benchmarks.md, benchmarks.json and the plots go",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=ROOT / ".cache" / "bench",
        help="built models, audio and images, reused between runs",
    )
    args = p.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.only if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    quiet_environment()
    command = " ".join(["python -m bench", *map(shlex.quote, argv)])
    args.out.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    results = load_results(args.out)
    full_run = load_raw(args.out).get("full_run")
    info = machine()
    started = time.perf_counter()
    failed = []
    for key in args.only:
        ctx = Context(
            quick=args.quick,
            cache=args.cache,
            out=args.out,
            command=command,
            budget_s=BUDGETS[key],
            log=log_to_stderr,
        )
        log_to_stderr(f"== {key} (budget {ctx.budget_s:.0f} s)")
        load_before = load_average()
        try:
            module = importlib.import_module(f"bench.{key}")
            result = module.run(ctx)
        except Exception as exc:  # one broken section must not lose the others' figures
            traceback.print_exc()
            failed.append(key)
            result = SectionResult(
                key,
                f"{key} (failed)",
                f"This section failed: `{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}`",
                [Goal(key, "", "failed", None, "the section raised an error")],
                {},
            )
        result.runtime_s = ctx.elapsed()
        result.measured_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        result.quick = args.quick
        result.machine = info
        result.load = (load_before, load_average())
        result.command = command
        results[key] = result
        log_to_stderr(f"== {key}: {result.runtime_s:.0f} s")
        save_results(args.out, results, full_run)
    total = time.perf_counter() - started
    if set(args.only) == set(SECTIONS) and not args.quick and not failed:
        full_run = {
            "command": command,
            "seconds": total,
            "at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        }
    save_results(args.out, results, full_run)
    path = render(args.out, results, full_run)
    log_to_stderr(f"wrote {path} in {total:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
