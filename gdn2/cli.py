"""The ``gdn2`` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gdn2", description="Gated DeltaNet-2 tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="benchmarks (with correctness gates)")
    bench.add_argument("which", choices=["cpu"], help="cpu: backend speed-up and peak memory on this CPU")
    sub.add_parser("memory", add_help=False,
                   help="inference-state bytes vs context length: Transformer, recurrent and hybrids "
                        "(gdn2 memory --help for options)")
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        from .bench import cpu
        cpu.main(rest)
    elif args.command == "memory":
        from . import memory
        return memory.main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
