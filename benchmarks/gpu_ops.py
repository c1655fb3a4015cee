"""GPU kernel benchmark (see gdn2/bench/gpu.py). Writes <out>/<date>-<gpu>.md.

    python benchmarks/gpu_ops.py --out benchmarks/results
    python benchmarks/gpu_ops.py --whole-chunk split    # a setting of the whole-chunk forms, before it is the default
    python benchmarks/gpu_ops.py --pair-products f16x3  # the backward walks' products, likewise
    python benchmarks/gpu_ops.py --solve blocks         # the intra solve's form, likewise
"""

import argparse
import contextlib
import pathlib

from gdn2.bench.gpu import format_results, machine_ceilings, results_path, run, versions
from gdn2.ops.gdn2.triton import backward, chunk, intra
from gdn2.ops.gdn2.triton.chunk import whole_chunk_forms
from gdn2.ops.gdn2.triton.common import WHOLE_FORMS

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"), help="results folder")
    p.add_argument("--no-fla", action="store_true", help="skip the FLA baseline (not installed)")
    p.add_argument("--whole-chunk", choices=sorted(WHOLE_FORMS), default=None,
                   help="the intra and key kernels' whole-chunk forms for this run (default: the library's)")
    # settings of the library a run may force (a setting before it is the default): flag, module,
    # attribute, choices (None: "on" or "off" for a boolean), what the results file calls it
    settings = [("--pair-products", backward, "PAIR_PRODUCTS", ["tf32x3", "f16x3"], "Backward walks' products"),
                ("--parallel-products", backward, "PARALLEL_PRODUCTS", ["tf32x3", "f16x3"],
                 "Value and key kernels' products"),
                ("--intra-float16", intra, "FLOAT16_PRODUCTS", None, "Intra products on float16"),
                ("--solve", intra, "SOLVE_FORM", list(intra.SOLVE_FORMS), "Intra solve"),
                ("--aqk-float16", chunk, "AQK_FLOAT16", None, "Aqk float16 for the one-pass walk")]
    switch = {"on": True, "off": False}
    for flag, module, attr, choices, _ in settings:
        where = f"{module.__name__.rsplit('.', 1)[-1]}.{attr}"
        p.add_argument(flag, dest=attr, choices=choices or sorted(switch),
                       help=f"{where} for this run (default: the library's)")
    args = p.parse_args()
    library = {attr: getattr(module, attr) for _, module, attr, _, _ in settings}
    for _, module, attr, _, _ in settings:
        if getattr(args, attr) is not None:
            setattr(module, attr, switch.get(getattr(args, attr), getattr(args, attr)))
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
    for _, module, attr, _, name in settings:
        value = getattr(module, attr)
        note += f" {name}: {value}"
        note += "." if value == library[attr] else f", set for this run (the library's: {library[attr]})."
    text = f"{head}\n\n{note}\n{rest}"
    print(text)
    out = results_path(args.out, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
