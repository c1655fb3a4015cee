"""Needle retrieval under interference (experiment 2 of the GDN-2 reproduction, small scale).

    python experiments/needle.py --help
    python experiments/needle.py --budget-seconds 540 --resume          # one 10-minute GPU call; repeat to continue
    python experiments/needle.py --summary-only                         # rewrite results/needle_summary.md only

Tiny causal LMs (default 4 layers, d_model 256) are trained from scratch on a mixture of the default
corpus (the King James Bible, ``gdn2.data``; or ``--corpus``) and synthetic RULER needle examples
(``gdn2.eval.ruler``: S-NIAH-1/2/3 and MK-NIAH-1, i.e. single needles and several needles of which
one is asked), all at ``--seq-len`` (1K) tokens; then tested on held-out S-NIAH-1/2/3 and MK-NIAH-1
at 1K, 2K and 4K tokens (length generalisation).

Cells: kind x mixer x seed. Kinds ``recurrent`` (pattern ``L``) and ``hybrid`` (``LS``: GDN-2-style
layers alternating with sliding-window attention of ``--sliding-window`` tokens). Mixers are
``gdn2.layers.MIXER_PRESETS`` names (gdn2, kda, gdn, and the ablations gdn2_b_only, gdn2_w_only);
``NAME+neg`` is the preset with the erase gate in [0, 2] (``negative_eigen=True``). Every
recurrent mixer has the same ``--num-heads`` heads of width d_model / heads for keys and values, so
the recurrent state per layer (heads x K x V floats) is the same for all of them.

Data (built once per run, shared by every cell, so all cells see the same examples):

- A byte-level BPE (``gdn2.data.Tokenizer``, ``--vocab-size``) trained on the training split.
- Corpus rows: random windows of ``--seq-len`` tokens of the tokenized training split, each
  document wrapped in end-of-text tokens as ``PackedDataset`` does; ``cu_seqlens`` restarts the
  state at every document start (``--no-document-resets``: the state flows through) and no token
  predicts across a document boundary.
- Needle rows: a pool of ``--train-pool`` RULER prompts (tasks ``--train-tasks``, cycled in chunks
  of 50 whose needle depths are spread evenly) at ``--seq-len`` tokens (or at each of
  ``--train-lengths`` in equal shares, shorter rows padded), the haystack drawn from the
  *training* split, followed by the answer and end-of-text. The prompt starts with end-of-text,
  as in ``gdn2.eval.harness``. Loss (``--needle-loss``): ``answer`` (default) on the answer tokens
  and the final end-of-text only, so needle rows teach retrieval and corpus rows teach language;
  ``all`` on every token of the row.
- Each step takes ``round(batch_size * needle_fraction)`` needle rows (drawn without replacement
  from the pool, reshuffled when used up) and corpus rows for the rest; the cell's seed sets the
  initial weights and the draws, so every mixer of one seed sees the same data.
- Loss: the mean over rows of each row's mean token cross-entropy (so ``--needle-fraction`` is
  also the needle share of the loss, however few answer tokens a needle row has).

Optimisation: AdamW (``gdn2.train.optim``: no decay on A_log, dt_bias, norms, biases, embeddings),
linear warm-up then cosine to 10% of ``--lr``, gradient clipping 1.0, bfloat16 autocast entered
per step around the forward on CUDA only (float32 weights). ``--compile`` (batches without offsets:
needle rows only, or ``--no-document-resets``): the loss compiled, on CUDA replayed from CUDA
graphs; the same losses as the eager step, and the records of both count as one protocol.

Evaluation: ``--eval-examples`` samples per (task, length), the haystack from the *held-out* split
and keys / values from ``--eval-seed`` (the same samples for every cell of a run). Greedy decoding
with the model's cache (``gdn2.models.decode``: prefill, then one token per step; constant-size
state for the recurrent layers), at most the sample's ``max_new_tokens`` (answer tokens + 1), cut
at end-of-text; scored with RULER's string match (``gdn2.eval.scoring``), in percent. Samples of
equal prompt length are decoded together as one batch, which gives each the same tokens as
decoding it alone. A (task, length) whose prompt cannot fit is left out with a warning. For the
hybrid the record also keeps the accuracy over the samples whose needle lies beyond its attention
layers' reach (layers x window tokens before the answer, plus the short convolutions' few): there
only the recurrent state can have carried it (``accuracy_beyond_reach``, a table of its own in the summary).

Order and budget: for every (kind, mixer) first seed 0, then seed 1 for all, then seed 2. Before a
cell starts it is skipped (with a message) when elapsed time plus an estimate of its duration (the
last cell of the same kind and mixer, else of the same kind, else the slowest so far) would exceed
``--budget-seconds``; the budget counts the data set-up too. Every finished cell is appended at
once as one JSON line to ``<out>/needle.jsonl`` (never overwritten); ``--resume`` skips cells
already recorded there with the same protocol. At the end ``<out>/needle_summary.md`` is rewritten
from all records (``summarize``): mean +- sample std over seeds per (kind, mixer) x (task, length).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

_T0 = time.perf_counter()  # when run as a script, the budget counts torch's import too
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from experiments.common import (environment, first_step_below, loss_curve, parse_list, require_args,  # noqa: E402
                                require_mixers, split_mixer)
from experiments.needle_data import DataSpec, NeedleData, get_data  # noqa: E402
from experiments.needle_report import (ALL_TASKS, EXIT_NATS, KINDS, PROTOCOL, RESULTS, SUMMARY,  # noqa: E402
                                       fmt_length, summarize)
from experiments.needle_train import train_cell, unpacked  # noqa: E402
from gdn2.eval.mqar_train import derive_seed, mqar_config  # noqa: E402
from gdn2.train.metrics import append_records, read_log  # noqa: E402

DEFAULT_MIXERS = "gdn2,kda,gdn,gdn2_b_only,gdn2_w_only,gdn2+neg"


@dataclass(frozen=True)
class Cell:
    kind: str
    mixer: str
    seed: int

    def key(self) -> Tuple:
        return (self.kind, self.mixer, self.seed)


def cell_order(kinds: Sequence[str], mixers: Sequence[str], seeds: Sequence[int]) -> Iterator[Cell]:
    """Seed-major: every (kind, mixer) at the first seed, then at the second, ..."""
    for seed in seeds:
        for kind in kinds:
            for mixer in mixers:
                yield Cell(kind, mixer, seed)


def model_config(args, cell: Cell, vocab_size: int, eos_id: int, pad_id: int):
    preset, neg = split_mixer(cell.mixer)
    return mqar_config(preset, KINDS[cell.kind], vocab_size=vocab_size, hidden_size=args.d_model,
                       num_layers=args.num_layers, num_heads=args.num_heads, negative_eigen=neg,
                       intermediate_size=args.intermediate_size, sliding_window=args.sliding_window,
                       backend=args.backend, eos_token_id=eos_id, bos_token_id=eos_id, pad_token_id=pad_id)



# Training and evaluation

@torch.no_grad()
def predict(model, data: NeedleData, samples: Sequence[dict], device: torch.device, batch_size: int) -> List[str]:
    """Greedy answers of ``samples``; samples of equal prompt length are decoded as one batch."""
    from gdn2.models import decode

    model.eval()
    eos = data.eos_id
    prompts = [s["input_ids"] for s in samples]
    groups: Dict[int, List[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        groups[len(p)].append(i)
    predictions: List[Optional[str]] = [None] * len(samples)
    for members in groups.values():
        for k in range(0, len(members), batch_size):
            chunk = members[k:k + batch_size]
            ids = torch.tensor([prompts[i] for i in chunk], dtype=torch.long, device=device)
            steps = max(samples[i]["max_new_tokens"] for i in chunk)
            out = decode(model, ids, steps, eos_token_id=eos)[:, ids.shape[1]:].tolist()
            for i, new in zip(chunk, out):
                new = new[:samples[i]["max_new_tokens"]]
                predictions[i] = data.tokenizer.decode(new[:new.index(eos)] if eos in new else new)
    return predictions


def build_model(args, cell: Cell, data: NeedleData, device: torch.device):
    """The cell's config and freshly initialised model (weights from the cell's seed alone)."""
    from gdn2.models import GDN2ForCausalLM

    config = model_config(args, cell, data.tokenizer.vocab_size, data.eos_id, data.pad_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cell.seed, "init"))
        return config, GDN2ForCausalLM(config).to(device)


def needle_distances(samples: Sequence[dict], tokenizer) -> List[int]:
    """Positions from the asked needle's value to the prompt's last token (which generates the
    answer's first): how far back an attention layer would have to reach to copy it. A sample's
    ``input_tokens`` count the leading end-of-text its encoder adds and ``tokenizer`` does not. The
    text before the value is tokenised without its trailing space, which the byte-level BPE merges
    into the value's first token (" 123") in the whole prompt."""
    prefixes = [s["input"][:s["input"].index(s["answers"][0])].rstrip(" ") for s in samples]   # unique in the prompt
    # the value's first token sits at 1 + len(prefix), the last prompt token at input_tokens - 1
    return [s["input_tokens"] - 2 - len(ids) for s, ids in zip(samples, tokenizer.encode_batch(prefixes))]


def accuracy_beyond_reach(samples: Sequence[dict], predictions: Sequence[str], distances: Sequence[int],
                          reach: int) -> Dict[str, Dict[str, List[float]]]:
    """Accuracy (%) and sample count per task and length over the samples whose needle lies more than
    ``reach`` positions before the answer: out of the reach of every layer but the recurrent state
    (each attention layer passes on what its window saw, each short convolution its last few tokens)."""
    from gdn2.eval.scoring import score_ruler
    far = [(p, s) for p, s, d in zip(predictions, samples, distances) if d > reach]
    out: Dict[str, Dict[str, List[float]]] = defaultdict(dict)
    for row in score_ruler([p for p, _ in far], [s for _, s in far]):
        out[row["task"]][str(row["context_length"])] = [round(row["accuracy"], 2), row["num_samples"]]
    return dict(out)


def run_cell(args, cell: Cell, data: NeedleData, device: torch.device, amp: bool) -> dict:
    from gdn2.eval.scoring import score_ruler

    start = time.perf_counter()
    config, model = build_model(args, cell, data, device)
    losses, compiled = train_cell(model, data, args, cell, device, amp)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    trained = time.perf_counter()
    predictions = predict(model, data, data.eval_samples, device, args.eval_batch)
    scores = score_ruler(predictions, data.eval_samples)
    done = time.perf_counter()
    accuracy: Dict[str, Dict[str, float]] = defaultdict(dict)
    for r in scores:
        accuracy[r["task"]][str(r["context_length"])] = round(r["accuracy"], 2)
    first = {}   # one answer per (task, length), for a look at what the model says
    for s, pred in zip(data.eval_samples, predictions):
        first.setdefault((s["task"], s["context_length"]), dict(
            task=s["task"], context_length=s["context_length"], depth=s["depth"], answer=s["answers"][0],
            prediction=pred))
    mean = round(statistics.fmean(r["accuracy"] for r in scores), 2) if scores else None
    attention_layers = config.layer_kinds.count("S")
    # a window of W sees positions (p - W, p]: W - 1 back a layer; a short convolution of c, c - 1 back
    reach = (attention_layers * (args.sliding_window - 1) + config.layer_kinds.count("L") * (config.conv_size - 1)
             if attention_layers else 0)
    beyond = accuracy_beyond_reach(data.eval_samples, predictions,
                                   needle_distances(data.eval_samples, data.tokenizer), reach)
    return dict(
        accuracy=dict(accuracy), mean_accuracy=mean, num_eval=len(predictions), examples=list(first.values()),
        # the hybrid's accuracy where its attention cannot see the needle ([accuracy %, samples])
        attention_reach=reach, accuracy_beyond_reach=beyond,
        final_loss=round(statistics.fmean(losses["total"][-10:]), 4) if losses["total"] else None,
        loss_curve=loss_curve(losses["total"]), corpus_loss_curve=loss_curve(losses["corpus"]),
        needle_loss_curve=loss_curve(losses["needle"], points=40),
        # when the answers' loss left the plateau (~1.7-2.0 nats, the digits' prior): comparable
        # between mixers where accuracies are all 0 or all 100
        needle_steps_to_1_nat=first_step_below(losses["needle"], EXIT_NATS),
        pattern=config.pattern, layers="".join(config.layer_kinds),
        head_dim=config.head_v_dim,
        state_size=config.num_v_heads * config.head_k_dim * config.head_v_dim,
        kv_window_size=(2 * args.sliding_window * config.num_key_value_heads * config.head_dim
                        if "S" in config.pattern else 0),
        num_parameters=sum(p.numel() for p in model.parameters()),
        compile=compiled, train_seconds=round(trained - start, 3), eval_seconds=round(done - trained, 3),
        seconds=round(done - start, 3))


class Estimator:
    """Seconds a cell will take: the last of the same (kind, mixer), else of the same kind, else the slowest."""

    def __init__(self):
        self.last: Dict[Tuple[str, str], float] = {}
        self.kind: Dict[str, float] = {}
        self.slowest = 0.0

    def add(self, cell: Cell, seconds: float) -> None:
        self.last[(cell.kind, cell.mixer)] = self.kind[cell.kind] = seconds
        self.slowest = max(self.slowest, seconds)

    def __call__(self, cell: Cell) -> float:
        return self.last.get((cell.kind, cell.mixer), self.kind.get(cell.kind, self.slowest))


# The command line

def profile_cell(args, cell: Cell, data: NeedleData, device: torch.device, amp: bool, active: int,
                 skip: int = 10) -> str:
    """Markdown: one cell's training steps under ``torch.profiler`` (``skip`` steps first, so that
    compilation and caches are out of the way, then ``active`` profiled ones): wall time a step
    (with the profiler running, so a little above a plain step's), the device time of its
    kernels, launches, the costliest kernels. Nothing is recorded."""
    from gdn2.bench.profile import kernel_table

    _, model = build_model(args, cell, data, device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    marks: List[float] = []   # after step `skip` and after the last profiled one, synchronised
    done = [0]

    def on_step():
        done[0] += 1
        if done[0] in (skip, skip + active):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            marks.append(time.perf_counter())
        prof.step()

    schedule = torch.profiler.schedule(wait=skip - 1, warmup=1, active=active, repeat=1)
    with torch.profiler.profile(activities=activities, schedule=schedule) as prof:
        train_cell(model, data, argparse.Namespace(**{**vars(args), "steps": skip + active}), cell, device, amp,
                   on_step=on_step)
    wall_ms = 1e3 * (marks[1] - marks[0]) / active
    device_ms, launches, top = kernel_table(prof, active)
    lines = [f"## {cell.kind} {cell.mixer}: {wall_ms:.1f} ms a step (profiled), kernels {device_ms:.1f} ms "
             f"({device_ms / wall_ms:.0%}), {launches:.0f} launches a step", "",
             "| kernel | launches a step | ms a step |", "|---|---:|---:|"]
    lines += [f"| `{name[:90]}` | {c:.0f} | {ms:.3f} |" for name, c, ms in top]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None, start: Optional[float] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--kinds", type=parse_list(str), default="recurrent,hybrid",
                   help="recurrent (pattern L), hybrid (pattern LS) (default %(default)s)")
    p.add_argument("--mixers", type=parse_list(str), default=DEFAULT_MIXERS, help="presets or PRESET+neg "
                   "(default %(default)s)")
    p.add_argument("--seeds", type=parse_list(int), default="0,1,2", help="(default %(default)s)")
    g = p.add_argument_group("model")
    g.add_argument("--d-model", type=int, default=256, help="(default %(default)s)")
    g.add_argument("--num-layers", type=int, default=4, help="(default %(default)s)")
    g.add_argument("--num-heads", type=int, default=2, help="of every mixer and of attention; head width "
                   "d_model / heads (default %(default)s)")
    g.add_argument("--intermediate-size", type=int, default=None, help="MLP width (default 3 x d_model)")
    g.add_argument("--sliding-window", type=int, default=512, help="of the hybrid's attention (default %(default)s)")
    g.add_argument("--backend", default="auto", help="operator backend: auto, chunk, triton, recurrent "
                   "(default %(default)s)")
    g = p.add_argument_group("training")
    g.add_argument("--seq-len", type=int, default=1024, help="tokens per training row (default %(default)s)")
    g.add_argument("--steps", type=int, default=500, help="per cell (default %(default)s)")
    g.add_argument("--batch-size", type=int, default=32, help="rows per step (default %(default)s)")
    g.add_argument("--lr", type=float, default=2e-3, help="peak (default %(default)s)")
    g.add_argument("--warmup-steps", type=int, default=None, help="(default 10%% of --steps)")
    g.add_argument("--weight-decay", type=float, default=0.1, help="(default %(default)s)")
    g.add_argument("--needle-fraction", type=float, default=0.5, help="share of needle rows (default %(default)s)")
    g.add_argument("--needle-loss", choices=("answer", "all"), default="answer",
                   help="needle rows' loss on the answer only or on all tokens (default %(default)s)")
    g.add_argument("--train-tasks", type=parse_list(str), default=ALL_TASKS, help="(default %(default)s)")
    g.add_argument("--train-lengths", type=parse_list(int), default=None,
                   help="lengths of the training needles, each at most --seq-len, in equal shares (a mixture "
                   "like Zoology's for MQAR: the short ones lead off the plateau; default: --seq-len only)")
    g.add_argument("--no-document-resets", action="store_const", const=True, default=None,
                   help="corpus rows carry the state across document starts (the end-of-text between documents "
                   "stays and no token predicts across it, as most LM packing does): every batch is then [B, T] "
                   "without offsets, and --compile applies to batches with corpus rows (default: the state "
                   "restarts at every document start)")
    g.add_argument("--train-pool", type=int, default=None,
                   help="needle training examples (default: as many as one cell uses)")
    g.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary (default %(default)s)")
    g.add_argument("--corpus", default="kjv", help="'kjv' or a local .txt/.jsonl/.parquet file or directory "
                   "(default %(default)s)")
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval-tasks", type=parse_list(str), default=ALL_TASKS, help="(default %(default)s)")
    g.add_argument("--eval-lengths", type=parse_list(int), default="1024,2048,4096", help="(default %(default)s)")
    g.add_argument("--eval-examples", type=int, default=50, help="per (task, length) (default %(default)s)")
    g.add_argument("--eval-seed", type=int, default=42, help="(default %(default)s)")
    g.add_argument("--eval-batch", type=int, default=64, help="prompts decoded together (default %(default)s)")
    g = p.add_argument_group("run")
    g.add_argument("--budget-seconds", type=float, default=540.0, help="(default %(default)s)")
    g.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    g.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on CUDA (float32)")
    g.add_argument("--compile", action="store_true", help="torch.compile the training loss, on CUDA replayed "
                   "from CUDA graphs; needs --needle-fraction 1 or --no-document-resets (corpus rows' document "
                   "offsets change every batch)")
    g.add_argument("--workers", type=int, default=None, help="processes generating the needle data "
                   "(default min(16, CPUs) on CUDA, 1 on CPU)")
    g.add_argument("--data-cache", type=Path, default=None, help="folder keeping the built data (tokenizer, "
                   "needles, evaluation samples) for later runs of the same data protocol (default: none)")
    g.add_argument("--out", type=Path, default=ROOT / "experiments" / "results", help="(default %(default)s)")
    g.add_argument("--resume", action="store_true", help=f"skip cells already in <out>/{RESULTS}")
    g.add_argument("--summary-only", action="store_true", help=f"only rewrite <out>/{SUMMARY}")
    g.add_argument("--profile-steps", type=int, default=0,
                   help="profile this many training steps of each (kind, mixer) at the first seed, after 10 "
                   "unprofiled ones, print where a step's time goes and record nothing (default: off)")
    args = p.parse_args(argv)

    start = time.perf_counter() if start is None else start
    path = args.out / RESULTS
    if args.summary_only:
        summarize(args.out)
        print(f"wrote {args.out / SUMMARY}", flush=True)
        return 0
    require_args(p, args, nonempty=("kinds", "mixers", "seeds", "train_tasks", "eval_tasks", "eval_lengths"),
                 positive=("d_model", "num_layers", "num_heads", "intermediate_size", "sliding_window", "seq_len",
                           "steps", "batch_size", "lr", "train_pool", "vocab_size", "eval_lengths", "eval_examples",
                           "eval_batch"))
    for kind in args.kinds:
        if kind not in KINDS:
            p.error(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    require_mixers(p, args.mixers)
    if not 0 <= args.needle_fraction <= 1:
        p.error("--needle-fraction must be in [0, 1]")
    if args.compile and not unpacked(args):
        p.error(f"--compile needs batches without offsets (--needle-fraction 1 or --no-document-resets), got "
                f"--needle-fraction {args.needle_fraction:g}: corpus rows restart the state at document starts, "
                "a different count every batch, which a compiled graph cannot replay")
    if args.train_lengths is not None:
        if not args.train_lengths or any(not 0 < n <= args.seq_len for n in args.train_lengths):
            p.error(f"--train-lengths must be lengths in (0, --seq-len = {args.seq_len}], got {args.train_lengths}")
        args.train_lengths = sorted(set(args.train_lengths))
    if args.intermediate_size is None:
        args.intermediate_size = 3 * args.d_model
    if args.d_model % args.num_heads:
        p.error("--num-heads must divide --d-model")
    if "hybrid" in args.kinds and args.num_layers < 2:
        print("WARNING: with one layer the hybrid (pattern LS) has no attention layer: it is the recurrent model",
              file=sys.stderr, flush=True)
    needles = round(args.batch_size * args.needle_fraction)
    if needles == args.batch_size:
        args.no_document_resets = None   # no corpus rows: the same protocol either way
    if args.train_pool is None:
        args.train_pool = max(1, args.steps * needles)
    if len(args.train_lengths or ()) > 1 and args.train_pool < len(args.train_tasks) * len(args.train_lengths):
        p.error(f"--train-pool: {args.train_pool} rows cannot give each of {len(args.train_tasks)} task(s) x "
                f"{len(args.train_lengths)} --train-lengths a row")
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type != "cuda":
        print(f"WARNING: running the needle experiment on {device} (no GPU): only tiny settings finish in "
              "reasonable time", file=sys.stderr, flush=True)
    amp = device.type == "cuda" and not args.no_amp
    workers = args.workers if args.workers is not None else (min(16, os.cpu_count() or 1) if device.type == "cuda"
                                                             else 1)
    from gdn2.eval.ruler import get_task
    args.train_tasks = [get_task(t).name for t in args.train_tasks]
    args.eval_tasks = [get_task(t).name for t in args.eval_tasks]
    args.amp = amp   # a protocol field: bfloat16 and float32 records never count for each other
    protocol = {k: getattr(args, k) for k in PROTOCOL}
    spec = DataSpec(args.corpus, args.vocab_size, args.seq_len, tuple(args.train_tasks), args.train_pool,
                    tuple(args.eval_tasks), tuple(args.eval_lengths), args.eval_examples, args.eval_seed, workers,
                    tuple(args.train_lengths or ()))

    if args.profile_steps > 0:
        data = get_data(spec, cache_dir=args.data_cache)
        for cell in cell_order(args.kinds, args.mixers, args.seeds[:1]):
            print(profile_cell(args, cell, data, device, amp, args.profile_steps), flush=True)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.resume:
        for r in read_log(path):
            if r.get("task") == "needle" and all(r.get(k) == json.loads(json.dumps(v)) for k, v in protocol.items()):
                done.add(Cell(r["kind"], r["mixer"], r["seed"]).key())
        print(f"resume: {len(done)} cell(s) of this protocol already in {path}", flush=True)

    data, env, estimate, run, skipped = None, None, Estimator(), 0, 0
    for cell in cell_order(args.kinds, args.mixers, args.seeds):
        if cell.key() in done:
            continue
        elapsed, guess = time.perf_counter() - start, estimate(cell)
        if elapsed + guess >= args.budget_seconds:
            skipped += 1
            print(f"skip {cell.kind} {cell.mixer} seed={cell.seed}: elapsed {elapsed:.0f}s + estimate {guess:.0f}s "
                  f"would exceed the budget of {args.budget_seconds:g}s", flush=True)
            continue
        if data is None:
            data = get_data(spec, cache_dir=args.data_cache)
            if data.tokenizer.vocab_size != args.vocab_size:
                print(f"note: the BPE has {data.tokenizer.vocab_size} ids, not {args.vocab_size}", flush=True)
            env = environment(device)
        result = run_cell(args, cell, data, device, amp)
        record = dict(task="needle", **asdict(cell), **protocol, **result, tokenizer_sha=data.tokenizer_sha,
                      eval_left_out=data.left_out, data_seconds=round(data.seconds, 3), **env,
                      date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        append_records(path, [record])
        estimate.add(cell, result["seconds"])
        run += 1
        # per task: a mean over tasks was once read as one task's accuracy (docs/results.md, eighth session)
        accs = "; ".join(f"{task} " + " ".join(f"{fmt_length(int(n))}={v:.1f}" for n, v in sorted(
            by.items(), key=lambda item: int(item[0]))) for task, by in result["accuracy"].items())
        print(f"{cell.kind:>9} {cell.mixer:>12} seed={cell.seed} acc% {accs} loss={result['final_loss']} "
              f"train {result['train_seconds']:.1f}s eval {result['eval_seconds']:.1f}s", flush=True)
    summarize(args.out)
    print(f"done: {run} cell(s) run, {skipped} skipped for the budget, {time.perf_counter() - start:.0f}s; "
          f"appended to {path}; summary in {args.out / SUMMARY}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(start=_T0))
