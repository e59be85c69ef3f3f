"""Benchmarks of the assistant: speech, chat engine overhead, image preprocessing, serving.

    python -m bench [--quick] [--only speech,chat,reuse,int8,vision,images,documents,server,llama,real,voice]   (`make bench`)

Each section is a module with ``run(ctx) -> SectionResult``. Results are kept in
``docs/benchmarks.json`` and rendered to ``docs/benchmarks.md`` with plots ``docs/bench-*.png``.
Machines are noisy (shared cores), so every headline figure is a ratio or a difference taken
within one run, from interleaved repetitions, reported as median with its spread.

The GPU section is separate (``bash bench/gpu.sh``): it needs a CUDA machine.
"""

SECTIONS = (
    "speech",
    "chat",
    "reuse",
    "int8",
    "vision",
    "images",
    "documents",
    "server",
    "llama",
    "real",
    "voice",
)
