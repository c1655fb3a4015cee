"""MQAR sweep of the GDN-2 reproduction: mixers x d_model x (seq_len, pairs) x learning rate x seed.

    python experiments/mqar.py --help
    python experiments/mqar.py --budget-seconds 540                     # one 10-minute GPU call
    python experiments/mqar.py --d-models 64 --settings 64:8 --steps 20 --device cpu   # smoke test
    python experiments/mqar.py --train zoology --steps 8000 --batch-size 256   # Zoology's data
    python experiments/report.py                                        # summary table and plot

``--train single`` (the default) trains each cell at its own (seq_len, pairs). ``--train zoology``
trains one model per (mixer, d_model, lr, seed) on Zoology's mixture (``ZOOLOGY_TRAIN_MIXTURE``:
mostly T = 64 with 4 pairs, up to T = 256 with 64; each batch's groups of one length run
unpadded) and tests it at every ``--settings`` (default: Zoology's test settings, T = 64 to 1024,
those under the vocabulary), writing one record per tested setting. Single settings of 64 pairs
left every mixer, attention included, at chance after 4000 steps (H100, 2026-12-07); the
mixture's easy sequences are how Zoology's two-layer models leave that plateau. Its learning rate is chosen, and its other seeds
run, by the mean accuracy over the tested settings (``selection_accuracy``). ``--mixture
T:P:WEIGHT,...`` trains on a mixture of your own instead (a smaller one for a CPU, say); the
records' ``train`` field names it, so its cells never mix with Zoology's.

Every cell is ``gdn2.eval.mqar_train.train_mqar`` (2-layer model, fresh batches at every step, AdamW,
warm-up + cosine, held-out accuracy). All recurrent mixers at one d_model share ``--num-heads``
heads of width d_model / heads, so their recurrent state per layer (heads x K x V floats) is the
same; attention's "state" is its KV cache at seq_len (2 x seq_len x d_model floats per layer).
``gdn2+neg`` is GDN-2 with the erase gate in [0, 2] (``negative_eigen=True``; any preset takes
``+neg``).

Cell order, so that a run cut short by the budget is still useful. For each setting, for each
d_model: (1) ``--lr-first`` (default: the middle of ``--lrs``) for every mixer at the first (smallest)
seed; (2) the other learning rates at that seed, nearest to ``--lr-first`` first; (3) the remaining
seeds only at each mixer's best learning rate at the first seed, among every rate on record there
(``report.choose_lr``: ties to the rate with more seeds, then the smaller). That is how "best of 4 LRs, 3 seeds"
stays affordable: 4 + 2 runs per (mixer, d_model, setting) instead of 12.

Budget: before a cell starts it is skipped (with a message) when elapsed time plus an estimate of
its duration (the last cell of the same mixer and d_model, scaled by seq_len and steps; else the
slowest cell so far, scaled) would exceed ``--budget-seconds``. Skipped cells are not written.

On CUDA, ``--prefetch-workers`` threads generate ``train_mqar``'s training batches ahead of time
(its ``prefetch``: the same batches) to overlap CPU data generation with GPU steps.

Every finished cell is appended at once as one JSON line to ``<out>/mqar.jsonl`` (never
overwritten). ``--resume`` skips cells already recorded there with the same protocol (``report.PROTOCOL``:
steps, batch, vocabulary, layers, heads, schedule, training data and, for a mixture, the settings
tested), so a second call continues the first.
"""

from __future__ import annotations

import argparse
import datetime
import math
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

_T0 = time.perf_counter()  # when run as a script, the budget counts torch's import too
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from experiments.common import (environment, first_step_below, loss_curve, parse_list, require_args,  # noqa: E402
                                require_mixers, split_mixer)
from experiments.report import PROTOCOL, choose_lr, protocol_of, tested_at  # noqa: E402
from gdn2.eval.likelihood import progress_bar  # noqa: E402
from gdn2.eval.mqar import ZOOLOGY_TEST_SETTINGS, ZOOLOGY_TRAIN_MIXTURE  # noqa: E402
from gdn2.eval.mqar_train import SCHEDULES, check_settings, mqar_config, train_mqar  # noqa: E402
from gdn2.train.metrics import append_records, read_log  # noqa: E402

DEFAULT_MIXERS = "gdn2,kda,gdn,deltanet,gla,attention,attention_conv,gdn2_b_only,gdn2_w_only,gdn2+neg"
TRAININGS = ("single", "zoology")
DEFAULT_SETTINGS = "256:64,512:128"


@dataclass(frozen=True)
class Cell:
    mixer: str
    d_model: int
    seq_len: int
    num_kv_pairs: int
    lr: float
    seed: int

    def key(self) -> Tuple:
        return (self.mixer, self.d_model, self.seq_len, self.num_kv_pairs, float(self.lr), self.seed)


def parse_mixture(text: str) -> List[Tuple[int, int, float]]:
    """``"32:2:5,64:8:1"`` -> ``[(32, 2, 5.0), (64, 8, 1.0)]``."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        parts = item.split(":")
        if len(parts) != 3:
            raise argparse.ArgumentTypeError(f"mixture entry {item!r} is not SEQ_LEN:PAIRS:WEIGHT")
        out.append((int(parts[0]), int(parts[1]), float(parts[2])))
    return out


def mixture_name(mixture: Sequence[Tuple[int, int, float]]) -> str:
    return "mixture " + ",".join(f"{t}:{pairs}:{w:g}" for t, pairs, w in mixture)


def parse_settings(text: str) -> List[Tuple[int, int]]:
    """``"256:64,512:128"`` -> ``[(256, 64), (512, 128)]``."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        seq_len, _, pairs = item.partition(":")
        if not pairs:
            raise argparse.ArgumentTypeError(f"setting {item!r} is not SEQ_LEN:PAIRS")
        out.append((int(seq_len), int(pairs)))
    return out


def cell_order(mixers: Sequence[str], d_models: Sequence[int], settings: Sequence[Tuple[int, int]],
               lrs: Sequence[float], seeds: Sequence[int], lr_first: float,
               accuracies: Mapping[Tuple, float]) -> Iterator[Cell]:
    """Cells in run order (see the module docstring). ``accuracies``: ``Cell.key()`` -> selection
    accuracy of every cell on record or finished so far (the caller adds to it as cells finish).
    Lazy: phase 3's rate is chosen (``report.choose_lr``, the report's rule) once phases 1 and 2 of
    that block are yielded, from every rate on record at the first seed, this call's ``lrs`` or not."""
    rest = sorted((lr for lr in lrs if lr != lr_first), key=lambda lr: abs(math.log(lr / lr_first)))
    order = [lr_first] + rest
    for seq_len, pairs in settings:
        for d in d_models:
            for lr in order:
                for m in mixers:
                    yield Cell(m, d, seq_len, pairs, lr, seeds[0])
            for m in mixers:
                block = (m, d, seq_len, pairs)
                at_first = {k[4]: a for k, a in accuracies.items() if k[:4] == block and k[5] == seeds[0]}
                lr = choose_lr(at_first, Counter(k[4] for k in accuracies if k[:4] == block))
                for seed in ([] if lr is None else seeds[1:]):
                    yield Cell(m, d, seq_len, pairs, lr, seed)


def state_size(config, seq_len: int) -> Tuple[int, str]:
    """Floats of one layer's recurrent state (heads x K x V), or attention's KV cache at ``seq_len``."""
    if "L" in config.pattern:
        return config.num_v_heads * config.head_k_dim * config.head_v_dim, "recurrent"
    return 2 * seq_len * config.num_key_value_heads * config.head_dim, "kv_cache"


class Estimator:
    """Seconds a cell will take, from finished cells (per step and token; scaled to the cell).
    ``length``: the trained length of a cell without its own (the mixture's cells). A later cell of
    a mixer and d_model already run in this process is estimated without most of that cell's first
    step, whose compilation it finds cached (d_model 128, eight processes on an H100: a process's
    first model 283-305 s, its first step included, the next 92-128 s); any other cell at the
    slowest full rate seen."""

    RECOMPILE = 0.25   # the share of a first step's seconds that a later model of the same shape pays again

    def __init__(self, length: int = 0):
        self.last: Dict[Tuple[str, int], float] = {}
        self.slowest = 0.0
        self.length = length

    def add(self, cell: Cell, steps: int, seconds: float, first_step_seconds: float = 0.0) -> None:
        tokens = steps * (cell.seq_len or self.length)
        self.last[(cell.mixer, cell.d_model)] = (seconds - (1 - self.RECOMPILE) * first_step_seconds) / tokens
        self.slowest = max(self.slowest, seconds / tokens)

    def __call__(self, cell: Cell, steps: int) -> float:
        return self.last.get((cell.mixer, cell.d_model), self.slowest) * steps * (cell.seq_len or self.length)


def where(cell: Cell) -> str:
    return "mixture" if not cell.seq_len else f"T={cell.seq_len:<4} P={cell.num_kv_pairs:<4}"


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``p.error`` (exit 2, the argument named) for what would otherwise fail deep in a cell or,
    worse, append an untrained record; puts ``--seeds`` in order (the smallest chooses the rate)."""
    require_args(p, args, nonempty=("mixers", "d_models", "lrs", "seeds"),
                 positive=("lrs", "lr_first", "steps", "batch_size", "num_heads", "num_layers", "num_test"))
    for d in args.d_models:
        if d < 1 or d % (2 * args.num_heads):
            p.error(f"--d-models: each d_model must split into --num-heads ({args.num_heads}) heads of even "
                    f"width (a multiple of {2 * args.num_heads}), got {d}")
    args.seeds = sorted(dict.fromkeys(args.seeds))


def main(argv: Optional[Sequence[str]] = None, start: Optional[float] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--mixers", type=parse_list(str), default=DEFAULT_MIXERS,
                   help="presets, attention, or PRESET+neg (default %(default)s)")
    p.add_argument("--d-models", type=parse_list(int), default="64,128,256", help="(default %(default)s)")
    p.add_argument("--settings", type=parse_settings, default=None,
                   help=f"SEQ_LEN:PAIRS,... (default {DEFAULT_SETTINGS}; with --train zoology, what is tested, "
                        "default Zoology's test settings)")
    p.add_argument("--train", choices=TRAININGS, default="single",
                   help="each setting on its own, or Zoology's mixture (default %(default)s)")
    p.add_argument("--mixture", type=parse_mixture, default=None,
                   help="SEQ_LEN:PAIRS:WEIGHT,...: train on this mixture instead of Zoology's (implies it)")
    p.add_argument("--lrs", type=parse_list(float), default="1e-3,3e-3,1e-2,3e-2", help="(default %(default)s)")
    p.add_argument("--lr-first", type=float, default=None, help="LR run first (default: the middle of --lrs)")
    p.add_argument("--seeds", type=parse_list(int), default="0,1,2", help="(default %(default)s)")
    p.add_argument("--steps", type=int, default=1000, help="per cell (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="(default %(default)s)")
    p.add_argument("--num-heads", type=int, default=2, help="of every mixer and attention (default %(default)s)")
    p.add_argument("--num-layers", type=int, default=2, help="(default %(default)s)")
    p.add_argument("--vocab-size", type=int, default=8192, help="(default %(default)s)")
    p.add_argument("--lr-schedule", choices=SCHEDULES, default="cosine",
                   help="after the warm-up: cosine to 0, or constant (default %(default)s)")
    p.add_argument("--num-test", type=int, default=256, help="held-out sequences per cell (default %(default)s)")
    p.add_argument("--budget-seconds", type=float, default=540.0, help="(default %(default)s)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on CUDA (float32)")
    p.add_argument("--prefetch-workers", type=int, default=None,
                   help="threads generating batches ahead (default 4 on CUDA, 0 on CPU)")
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "results", help="(default %(default)s)")
    p.add_argument("--resume", action="store_true", help="skip cells already in <out>/mqar.jsonl")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile each step (CUDA graphs on CUDA)")
    args = p.parse_args(argv)
    check_args(p, args)

    start = time.perf_counter() if start is None else start
    if args.mixture is not None:
        if not args.mixture:
            p.error("--mixture names no setting")
        args.train = mixture_name(args.mixture)   # the protocol's record of it
    zoology = args.train != "single"   # any mixture
    if args.settings is None:
        args.settings = ([s for s in ZOOLOGY_TEST_SETTINGS if s[0] < args.vocab_size] if zoology
                         else parse_settings(DEFAULT_SETTINGS))
    args.tests = tested_at(args.settings) if zoology else None   # a protocol field (report.PROTOCOL)
    mixture = (args.mixture or ZOOLOGY_TRAIN_MIXTURE) if zoology else None
    try:
        check_settings(args.vocab_size, args.settings, mixture or ())
    except ValueError as e:
        p.error(f"--settings, --mixture or --vocab-size: {e}")
    # a mixture cell is one model tested at every setting: its cells carry no setting of their own
    cell_settings = [(0, 0)] if zoology else args.settings
    require_mixers(p, args.mixers, allow_attention=True)
    lr_first = args.lr_first if args.lr_first is not None else args.lrs[(len(args.lrs) - 1) // 2]
    if lr_first not in args.lrs:
        args.lrs = [lr_first] + args.lrs
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type != "cuda":
        print(f"WARNING: running MQAR on {device} (no GPU): only tiny settings finish in reasonable time",
              file=sys.stderr, flush=True)
    amp = device.type == "cuda" and not args.no_amp
    workers = args.prefetch_workers if args.prefetch_workers is not None else 4 * (device.type == "cuda")
    env = environment(device)
    protocol = {k: getattr(args, k) for k in PROTOCOL}

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "mqar.jsonl"
    accuracies: Dict[Tuple, float] = {}
    if args.resume:
        for r in read_log(path):
            if r.get("task") == "mqar" and protocol_of(r) == tuple(protocol.values()):
                t, pairs = (0, 0) if zoology else (r["seq_len"], r["num_kv_pairs"])
                accuracies[Cell(r["mixer"], r["d_model"], t, pairs, r["lr"], r["seed"]).key()] = \
                    r.get("selection_accuracy", r["accuracy"])
        print(f"resume: {len(accuracies)} cell(s) of this protocol already in {path}", flush=True)

    cells = cell_order(args.mixers, args.d_models, cell_settings, args.lrs, args.seeds, lr_first, accuracies)
    total = len(cell_settings) * len(args.d_models) * len(args.mixers) * (len(args.lrs) + len(args.seeds) - 1)
    bar = progress_bar(None, total=total, unit="cell", enabled=not args.no_progress)
    estimate, run, skipped = Estimator(max((t for t, _, _ in mixture or ()), default=0)), 0, 0
    for cell in cells:
        if bar is not None:
            bar.update(1)
        if cell.key() in accuracies:
            continue
        elapsed, guess = time.perf_counter() - start, estimate(cell, args.steps)
        if elapsed + guess >= args.budget_seconds:
            skipped += 1
            print(f"skip {cell.mixer} d={cell.d_model} {where(cell)} lr={cell.lr:g} "
                  f"seed={cell.seed}: elapsed {elapsed:.0f}s + estimate {guess:.0f}s would exceed the budget of "
                  f"{args.budget_seconds:g}s", flush=True)
            continue
        preset, neg = split_mixer(cell.mixer, allow_attention=True)
        config = mqar_config(preset, vocab_size=args.vocab_size, hidden_size=cell.d_model,
                             num_layers=args.num_layers, num_heads=args.num_heads,
                             **({"negative_eigen": True} if neg else {}))
        tests = args.settings if zoology else [(cell.seq_len, cell.num_kv_pairs)]
        result = train_mqar(config, *tests[0], args.steps, cell.lr, cell.seed,
                            batch_size=args.batch_size, num_test=args.num_test, device=device, amp=amp,
                            prefetch=workers, schedule=args.lr_schedule, compile=args.compile, mixture=mixture,
                            test_settings=tests[1:])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        losses = result.losses
        first50 = [v for v in losses[:50] if not math.isnan(v)]
        selection = statistics.fmean(result.accuracies.values())
        # what the trained model's records share; each tested setting adds its own accuracy and state
        run_fields = dict(**protocol, head_dim=cell.d_model // args.num_heads, selection_accuracy=selection,
                          final_loss=result.final_loss, loss_curve=loss_curve(losses),
                          # when the run left MQAR's plateau: its 50-step mean loss under half the first 50 steps'
                          steps_to_half_loss=first_step_below(losses, 0.5 * statistics.fmean(first50)) if first50 else None,
                          seconds=result.seconds, first_step_seconds=result.first_step_seconds,
                          num_parameters=result.num_parameters, amp=amp, compile=args.compile,
                          num_test=args.num_test, **env,
                          date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        records = []
        for (t, pairs), accuracy in result.accuracies.items():   # one record per tested setting
            size, kind = state_size(config, t)
            records.append(dict(task="mqar", **{**asdict(cell), "seq_len": t, "num_kv_pairs": pairs}, **run_fields,
                                accuracy=accuracy, state_size=size, state_kind=kind))
        append_records(path, records)   # one write: the sweep's other processes append to this file too
        accuracies[cell.key()] = selection
        estimate.add(cell, args.steps, result.seconds, result.first_step_seconds)
        run += 1
        shown = " ".join(f"{t}:{pairs}={a:.3f}" for (t, pairs), a in result.accuracies.items())
        message = (f"{cell.mixer:>12} d={cell.d_model:<4} {where(cell)} "
                   f"lr={cell.lr:<7g} seed={cell.seed} acc {shown} loss={result.final_loss:.3f} "
                   f"state={state_size(config, tests[0][0])[0]} {result.seconds:.1f}s")
        (bar.write(message) if bar is not None else print(message, flush=True))
    if bar is not None:
        bar.close()
    print(f"done: {run} cell(s) run, {skipped} skipped for the budget, {time.perf_counter() - start:.0f}s; "
          f"appended to {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(start=_T0))
