"""GPU kernel benchmark (see gdn2/bench/gpu.py). Writes <out>/<date>-<gpu>.md.

    python benchmarks/gpu_ops.py --out benchmarks/results
    python benchmarks/gpu_ops.py --whole-chunk split    # a setting of the whole-chunk forms, before it is the default
    python benchmarks/gpu_ops.py --pair-products f16x3  # the backward walks' products, likewise
"""

import argparse
import contextlib
import pathlib

from gdn2.bench.gpu import format_results, machine_ceilings, results_path, run, versions
from gdn2.ops.gdn2.triton import backward, intra
from gdn2.ops.gdn2.triton.chunk import whole_chunk_forms
from gdn2.ops.gdn2.triton.common import WHOLE_FORMS

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"), help="results folder")
    p.add_argument("--no-fla", action="store_true", help="skip the FLA baseline (not installed)")
    p.add_argument("--whole-chunk", choices=sorted(WHOLE_FORMS), default=None,
                   help="the intra and key kernels' whole-chunk forms for this run (default: the library's)")
    p.add_argument("--pair-products", choices=["tf32x3", "f16x3"], default=None,
                   help="the backward walks' products for this run (backward.PAIR_PRODUCTS; default: the library's)")
    p.add_argument("--parallel-products", choices=["tf32x3", "f16x3"], default=None,
                   help="the backward's value and key kernels' products for this run (backward.PARALLEL_PRODUCTS; "
                        "default: the library's)")
    p.add_argument("--intra-float16", action="store_true",
                   help="the intra kernel's products on float16 for this run (intra.FLOAT16_PRODUCTS)")
    args = p.parse_args()
    pair_default, parallel_default = backward.PAIR_PRODUCTS, backward.PARALLEL_PRODUCTS
    intra_default = intra.FLOAT16_PRODUCTS
    if args.intra_float16:
        intra.FLOAT16_PRODUCTS = True
    if args.pair_products:
        backward.PAIR_PRODUCTS = args.pair_products
    if args.parallel_products:
        backward.PARALLEL_PRODUCTS = args.parallel_products
    meta = versions()
    ceilings = machine_ceilings()
    default = intra.WHOLE_CHUNK, backward.KEY_WHOLE
    with whole_chunk_forms(args.whole_chunk) if args.whole_chunk else contextlib.nullcontext():
        setting = intra.WHOLE_CHUNK, backward.KEY_WHOLE
        res = run(with_fla=not args.no_fla)
    text = format_results(res, meta, ceilings)
    head, rest = text.split("\n", 1)
    note = f"Whole-chunk forms (intra, key): {setting[0]}, {setting[1]}"
    note += "." if setting == default else f", set for this run (the library's default: {default[0]}, {default[1]})."
    note += f" Backward walks' products: {backward.PAIR_PRODUCTS}"
    note += "." if backward.PAIR_PRODUCTS == pair_default else f", set for this run (the library's: {pair_default})."
    note += f" Value and key kernels' products: {backward.PARALLEL_PRODUCTS}"
    note += ("." if backward.PARALLEL_PRODUCTS == parallel_default
             else f", set for this run (the library's: {parallel_default}).")
    note += f" Intra products on float16: {intra.FLOAT16_PRODUCTS}"
    note += "." if intra.FLOAT16_PRODUCTS == intra_default else f", set for this run (the library's: {intra_default})."
    text = f"{head}\n\n{note}\n{rest}"
    print(text)
    out = results_path(args.out, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
