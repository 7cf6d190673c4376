#!/usr/bin/env bash
# The GPU checks, in one go (under 8 minutes on one GPU):
#   1. benchmarks/gpu_cell.py: images/s of a whole cell (ResNet-50 at 224 px, Grad-CAM, deletion and
#      insertion with 20 steps, IoU, pointing game) at fp32 and bf16, against the model's own forward and
#      forward+backward throughput at its best batch, and against the same pipeline built from
#      pytorch-grad-cam and Quantus;
#   2. the CUDA tests (pytest -m cuda): runtime from CUDA events, out-of-memory back-off on a real
#      out-of-memory error, autocast precision.
# Results go to $OUT (default benchmarks/out): gpu_cell.json, gpu_cell.md, cuda_tests.txt.
#
#   benchmarks/gpu.sh            # on a machine with a CUDA device
#   benchmarks/gpu.sh --dry-run  # anywhere: tiny sizes, the CUDA tests skip without a device (seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

dry=()
if [[ "${1:-}" == "--dry-run" ]]; then
  dry=(--dry-run)
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
fi

start=$SECONDS
timeout 330 "$PYTHON" benchmarks/gpu_cell.py "${dry[@]}" --json "$OUT/gpu_cell.json" | tee "$OUT/gpu_cell.md"
echo "gpu_cell: $((SECONDS - start)) s"

start=$SECONDS
timeout 120 "$PYTHON" -m pytest -p no:xdist -q -m cuda tests/test_cuda.py -rs 2>&1 | tee "$OUT/cuda_tests.txt"
echo "cuda tests: $((SECONDS - start)) s"
