"""Issue 3's correctness criterion applied to FLA 0.6.0 as well as to this backend.

The GPU tests hold the Triton backend to the flash-attention criterion: against the float64
recurrence, at most twice the error of the PyTorch ``chunk`` backend (which computes in float32)
plus 1e-5, for the output, the final state and every gradient. That criterion is why the
backward's float32 outputs (dg, the initial-state gradient) take three-pass TF32 products here.
FLA's ``chunk_gdn2``, the speed target, runs bfloat16 products; this measures its errors under
the same criterion, on the same inputs, beside ours:

    python benchmarks/criterion_fla.py [--out DIR]

A row's ratio is the error over the chunk backend's; the criterion allows 2 (+ 1e-5 / baseline).
"""

import argparse
import sys
import time
from pathlib import Path

import torch

from gdn2.testing import backend_outputs, error, no_worse_bound, random_inputs, run_with_grads

CASES = {   # name: random_inputs arguments (bfloat16 q, k, v, b, w; float32 g; K = V = 128)
    "T=1000, H=4, initial state": dict(B=1, T=1000, H=4, initial_state=True, seed=1),
    "T=300 x 2, H=4, b in [0, 2]": dict(B=2, T=300, H=4, b_max=2.0, initial_state=True, seed=2),
}


def fla(**x):
    from fla.ops.gdn2 import chunk_gdn2
    return chunk_gdn2(x["q"], x["k"], x["v"], x["g"], x["b"], x["w"], scale=x.get("scale"),
                      initial_state=x.get("initial_state"), output_final_state=x["output_final_state"])


def rows_for(case: dict, backend: str = "triton"):
    """Table rows: per tensor, the chunk baseline's error, ``backend``'s and FLA's, each against the
    float64 recurrence."""
    x = random_inputs(K=128, V=128, dtype=torch.bfloat16, device="cuda", **case)
    start = time.perf_counter()
    triples = backend_outputs(x, backend)   # name -> (backend's, the chunk baseline's, float64's)
    # progress on stdout: a run cut off at its time limit still says how far it got
    print(f"float64 recurrence, chunk and {backend}: {time.perf_counter() - start:.0f} s", flush=True)
    try:
        o, S, grads = run_with_grads(fla, x)
        print(f"FLA: {time.perf_counter() - start:.0f} s", flush=True)
        theirs = {"o": o, "final_state": S, **{f"d{n}": g for n, g in grads.items()}}
    except Exception as exc:   # FLA refusing an input is a result too
        print(f"FLA failed: {type(exc).__name__}: {exc}", flush=True)
        theirs = {}
    out = []
    for what, (ours, baseline, expected) in triples.items():
        if what == "o (forward only)":   # FLA's forward has one form
            continue
        base = error(baseline, expected)
        bound = no_worse_bound(base, 2.0, 1e-5)
        cells = []
        for got in (ours, theirs.get(what)):
            if got is None:
                cells.append("n/a")
                continue
            e = error(got, expected)
            # a non-finite baseline bounds nothing
            verdict = "ok" if base.finite and e.finite and e.rel_rms <= bound else "**fails**"
            cells.append(f"{e.rel_rms:.2e} ({e.rel_rms / max(base.rel_rms, 1e-30):.1f}x) {verdict}")
        name = "final state" if what == "final_state" else what
        out.append(f"| {name} | {expected.dtype} -> {baseline.dtype} | {base.rel_rms:.2e} | {cells[0]} | {cells[1]} |")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, help="also write criterion-fla.md here")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA device (and fla-core 0.6.0)")
        return 0
    import fla
    from gdn2.bench.gpu import versions, versions_line
    meta = versions()
    lines = [f"# The correctness criterion on FLA {getattr(fla, '__version__', '?')} and on gdn2, "
             f"{meta['date']} {meta['time']} UTC, {meta['gpu']}", "",
             f"{versions_line(meta)} Relative RMS error against the float64 recurrence; the ratio is over the "
             "PyTorch chunk backend's error (float32 arithmetic); the criterion allows 2x + 1e-5.", ""]
    print("\n".join(lines), flush=True)
    for name, case in CASES.items():
        section = [f"## {name}", "", "| tensor | dtype | chunk (baseline) | gdn2 Triton | FLA chunk_gdn2 |",
                   "|---|---|---:|---:|---:|"] + rows_for(case) + [""]
        print("\n".join(section), flush=True)
        lines += section
        if args.out:   # after every case: a run cut off later keeps the cases done
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "criterion-fla.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
