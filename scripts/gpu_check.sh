#!/usr/bin/env bash
# One GPU session: install the project, run the GPU tests, run the kernel benchmark.
# Usage (on a CUDA machine, repo root): bash scripts/gpu_check.sh [OUT_DIR]
# Wheels in .whl/ (fla-core, einops) are installed first when present.
set -uo pipefail
OUT=${1:-${OUT:-/tmp/gdn2-gpu}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q --maxfail=15 tests/gpu tests/ops/test_triton_interpret.py 2>&1 | tee "$OUT/gpu-tests.log" | tail -30
tests_rc=${PIPESTATUS[0]}
echo "gpu tests exit code: $tests_rc" | tee -a "$OUT/gpu-tests.log"
python3 benchmarks/gpu_ops.py --out "$OUT" 2>&1 | tee "$OUT/bench.log" | tail -40
