"""GPU kernel benchmark (see gdn2/bench/gpu.py). Writes <out>/<date>-<gpu>.md.

    python benchmarks/gpu_ops.py --out benchmarks/results
"""

import argparse
import pathlib

from gdn2.bench.gpu import format_results, machine_ceilings, results_path, run, versions

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"), help="results folder")
    p.add_argument("--no-fla", action="store_true", help="skip the FLA baseline (not installed)")
    args = p.parse_args()
    meta = versions()
    ceilings = machine_ceilings()
    res = run(with_fla=not args.no_fla)
    text = format_results(res, meta, ceilings)
    print(text)
    out = results_path(args.out, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
