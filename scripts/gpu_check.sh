#!/usr/bin/env bash
# One GPU session: install the project, run the kernel benchmark, then the GPU tests.
# Usage (on a CUDA machine, repo root): bash scripts/gpu_check.sh [OUT_DIR] [TEST_SECONDS]
# Wheels in .whl/ (fla-core, einops) are installed first when present; a Triton cache
# tarball in .tcache/ is reused and refreshed, since compilation dominates a cold run.
set -uo pipefail
OUT=${1:-${OUT:-/tmp/gdn2-gpu}}
TEST_SECONDS=${2:-300}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton-cache
mkdir -p "$TRITON_CACHE_DIR"
[ -f .tcache/cache.tgz ] && tar -xzf .tcache/cache.tgz -C "$TRITON_CACHE_DIR"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
timeout 280 python3 benchmarks/gpu_ops.py --out "$OUT" 2>&1 | tee "$OUT/bench.log" | tail -25
timeout "$TEST_SECONDS" python3 -m pytest -q --maxfail=15 -p no:cacheprovider tests/gpu 2>&1 | tee "$OUT/gpu-tests.log" | tail -25
echo "gpu tests exit code: ${PIPESTATUS[0]}" | tee -a "$OUT/gpu-tests.log"
tar -czf "$OUT/cache.tgz" -C "$TRITON_CACHE_DIR" . && ls -la "$OUT/cache.tgz"
