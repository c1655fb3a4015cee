"""The ``gdn2`` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gdn2", description="Gated DeltaNet-2 tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    # add_help=False: "gdn2 bench cpu --help" reaches the benchmark's own options
    bench = sub.add_parser("bench", add_help=False, help="benchmarks (with correctness gates; gdn2 bench cpu --help)")
    bench.add_argument("which", nargs="?", choices=["cpu"], help="cpu: backend speed-up and peak memory on this CPU")
    sub.add_parser("memory", add_help=False,
                   help="inference-state bytes vs context length: Transformer, recurrent and hybrids "
                        "(gdn2 memory --help for options)")
    sub.add_parser("train", add_help=False,
                   help="train a model; with no arguments the tiny preset on the built-in King James corpus, "
                        "a few minutes on a CPU (gdn2 train --help for options)")
    sub.add_parser("generate", add_help=False,
                   help="sample text from a trained checkpoint (gdn2 generate --help for options)")
    from .eval.cli import add_eval_parser
    add_eval_parser(sub)
    args, rest = parser.parse_known_args(argv)
    if args.command == "eval":
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        from .eval.cli import run_eval
        return run_eval(args)
    if args.command == "bench" and args.which is None:
        asked = bool({"-h", "--help"} & set(rest))
        print("usage: gdn2 bench cpu [options]   (gdn2 bench cpu --help: the options)",
              file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    if args.command == "bench":
        from .bench import cpu
        cpu.main(rest)   # returns its report, not an exit status
    elif args.command == "memory":
        from . import memory
        return memory.main(rest)
    elif args.command == "train":
        from .train.commands import train_main
        return train_main(rest)
    elif args.command == "generate":
        from .train.commands import generate_main
        return generate_main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
