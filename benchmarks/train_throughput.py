"""Training throughput at 16K tokens per step (the GDN-2 paper's Figure 2), see gdn2/bench/throughput.py.

Appends <out>/<date>-<HHMM>-<gpu>-train-throughput.{md,json,png}. The default grid (hybrid and
recurrent x gdn2/kda/gdn, and the transformer; 8x2K, 4x4K, 2x8K, 1x16K) on one H100, within
about 7 minutes (cells that would pass the budget are marked skipped):

    python benchmarks/train_throughput.py --out benchmarks/results --budget-seconds 360

One row only: --kinds hybrid --mixers gdn2 --shapes 8x2048,1x16384.
"""

import argparse
import pathlib
import sys

import torch

from gdn2.ops import BACKENDS
from gdn2.bench.throughput import KINDS, MIXERS, SHAPES, SIZES, format_markdown, run, write_results


def _list(choices):
    def parse(text):
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}, got {text!r}")
        return items
    return parse


def _shapes(text):
    try:
        shapes = [tuple(int(n) for n in s.lower().split("x")) for s in text.split(",") if s.strip()]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        raise argparse.ArgumentTypeError(f"shapes are BxT separated by commas, e.g. 8x2048,1x16384; got {text!r}")
    return shapes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"), help="results folder")
    p.add_argument("--size", default="340m", choices=sorted(SIZES), help="model size (tiny: CPU smoke test)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per cell (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per cell (the first compiles kernels)")
    p.add_argument("--budget-seconds", type=float, default=360,
                   help="skip the remaining cells once the next one might end past this (inf: no budget)")
    p.add_argument("--kinds", type=_list(list(KINDS)), default=list(KINDS), help="comma list of " + ",".join(KINDS))
    p.add_argument("--mixers", type=_list(list(MIXERS)), default=list(MIXERS),
                   help="comma list of " + ",".join(MIXERS) + " (the L layers' gates)")
    p.add_argument("--shapes", type=_shapes, default=SHAPES,
                   help="comma list of BxT (default " + ",".join(f"{b}x{t}" for b, t in SHAPES) + ")")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="operator backend of the L layers (auto: Triton on CUDA)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 1:
        p.error("--steps and --warmup must be at least 1 (the first step compiles the kernels)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.size != "tiny" and not device.startswith("cuda"):
        sys.exit(f"--size {args.size} needs a CUDA GPU (found device {device!r}): a 340M-parameter model at "
                 f"16K tokens per step would take hours on a CPU. Use --size tiny for a CPU smoke run.")
    report = run(size=args.size, kinds=args.kinds, mixers=args.mixers, shapes=args.shapes, device=device,
                 steps=args.steps, warmup=args.warmup, backend=args.backend,
                 budget_seconds=None if args.budget_seconds == float("inf") else args.budget_seconds)
    print(format_markdown(report))
    for path in write_results(report, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
