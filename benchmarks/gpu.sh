#!/usr/bin/env bash
# Training throughput on one GPU: SE-ResNet-50, ResNet-50, SE-ResNeXt-50 and
# ResNeXt-50 in bfloat16 at batch 256, 224x224, and timm's counterparts
# (channels-last, bf16 autocast), in one command for a machine with no network
# whose Python has jax (CUDA), flax, optax, orbax-checkpoint, torch and timm but
# not TensorFlow. Writes $OUT/gpu_results.md (benchmarks/results/ when OUT is
# unset); finishes in under 8 minutes on one H200, compilation included.
#
#   benchmarks/gpu.sh                    # the GPU run
#   PYTHON=.venv/bin/python benchmarks/gpu.sh --batch=2 --image_size=32 --steps=1 \
#     --rounds=1 --warmup=1 --dtype=float32 --torch_python=.venv-torch/bin/python  # CPU check
#
# Extra flags go to benchmarks/throughput.py (see benchmarks/gpu_driver.py).
# Python packages the machine lacks can travel as wheels in .whl/ at the repo
# root; they are installed, without network or dependencies, into /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if compgen -G ".whl/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

OUT_DIR=${OUT:-benchmarks/results}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
# Safety net only: the driver stops building models after --deadline_s and reports
# what it built; this kills a run that hangs, before the 8-minute mark.
timeout 470 "$PYTHON" benchmarks/gpu_driver.py --out="$OUT_DIR/gpu_results.md" "$@"
if command -v nvidia-smi > /dev/null; then
  { echo; echo '```'; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit \
      --format=csv; echo '```'; } >> "$OUT_DIR/gpu_results.md" || true
fi
