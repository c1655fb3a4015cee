"""Which tensor-core precision the float32-accurate stages may use.

The backward (dg and dh0 are float32) and the forward with a final state run three-pass TF32
products (``common.dot_precision``). For each candidate precision this script puts it in their
place, checks a set of the GPU tests' cases with the tests' criterion (error against the float64
recurrence at most 2x the PyTorch chunk backend's + 1e-5, relative RMS, for o, the final state and
every gradient) and only then times forward+backward at 2x8K (bf16, H = 16, K = V = 128). A
candidate that fails any case is reported with its worst output, and its time is still printed
as what it would buy.

    python benchmarks/precision_sweep.py [--precisions tf32x3,bf16x3,bf16x6,tf32] [--out DIR]
"""

import argparse
import contextlib
import itertools
import pathlib

import torch

from gdn2.bench.gpu import make_inputs, ours, results_path, time_fwd_bwd, versions, versions_line
from gdn2.ops.gdn2.triton import backward, chunk, common
from gdn2.testing import backend_outputs, error, no_worse_bound, random_inputs

DEFAULT = common.dot_precision(torch.float32, float32_outputs=True)  # three-pass TF32


def cases():
    """(name, inputs, kwargs): the GPU tests' shapes and gates that stress the products most."""
    dev = "cuda"
    yield "T1000 bf16", random_inputs(B=1, T=1000, H=4, K=128, V=128, dtype=torch.bfloat16, device=dev,
                                      b_max=2.0, initial_state=True, seed=1), dict(use_qk_l2norm=True)
    yield "H16 HV32 bf16", random_inputs(B=1, T=200, H=16, HV=32, K=128, V=128, dtype=torch.bfloat16, device=dev,
                                         b_max=2.0, initial_state=True, seed=1), dict(use_qk_l2norm=True)
    yield "T4100 bf16", random_inputs(B=1, T=4100, H=4, K=128, V=128, dtype=torch.bfloat16, device=dev,
                                      initial_state=True, seed=2), dict(use_qk_l2norm=True)
    for dtype in (torch.bfloat16, torch.float16):
        lengths = [100, 1, 64, 300, 37]
        cu = torch.tensor([0] + list(itertools.accumulate(lengths)), device=dev)
        x = random_inputs(B=1, T=int(cu[-1]), H=4, HV=8, K=128, V=128, dtype=dtype, device=dev,
                          initial_state=True, N=len(lengths), seed=4)
        yield f"packed {str(dtype)[6:]}", x, dict(cu_seqlens=cu, use_qk_l2norm=True)
        yield f"g >= -6 {str(dtype)[6:]}", random_inputs(B=1, T=300, H=4, K=128, V=128, dtype=dtype, device=dev,
                                                        b_max=2.0, g_min=-6.0, initial_state=True, seed=9), \
            dict(use_qk_l2norm=True)


@contextlib.contextmanager
def precision(prec):
    """The float32-accurate stages use ``prec`` inside (the one-pass forward stays as it is)."""
    def choose(dtype, float32_outputs):
        chosen = common.dot_precision(dtype, float32_outputs)
        return prec if chosen == DEFAULT else chosen
    for module in (chunk, backward):
        module.dot_precision = choose
    try:
        yield
    finally:
        for module in (chunk, backward):
            module.dot_precision = common.dot_precision


def sweep(prec, bench):
    """One table row: the cases under ``prec`` (already in place), then the timing."""
    passed, total, worst = 0, 0, (0.0, "")
    for name, x, kw in cases():
        total += 1
        ok = True
        for out, (fast, base, ref) in backend_outputs(x, "triton", **kw).items():
            baseline = error(base, ref)
            ratio = error(fast, ref).rel_rms / no_worse_bound(baseline)
            ok &= baseline.finite and ratio <= 1.0   # a non-finite baseline bounds nothing
            worst = max(worst, (ratio, f"{out}, {name}"))
        passed += ok
        print(f"{prec}: {name}: {'pass' if ok else 'FAIL'} (worst so far {worst[0]:.2f}, {worst[1]})", flush=True)
    ms = time_fwd_bwd(ours, bench)
    return f"| {prec} | {passed} / {total} | {worst[0]:.2f} ({worst[1]}) | {ms:.3f} |"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precisions", default=f"{DEFAULT},bf16x3,bf16x6,tf32")
    p.add_argument("--out", type=pathlib.Path, default=None, help="also write <out>/<date>-<gpu>-precision.md")
    args = p.parse_args()
    meta = versions()
    lines = [f"# Products of the float32-accurate stages, {meta['date']}, {meta['gpu']}", "",
             versions_line(meta), "",
             "Worst case = the largest error / allowed error (2x the chunk backend's + 1e-5) over o, final state "
             "and every gradient of the GPU tests' cases below; at most 1 passes. Time: fwd+bwd at 2x8K, bf16, "
             "H = 16, K = V = 128, median of do_bench.", "",
             "| precision | cases passed | worst case (ratio, output) | fwd+bwd 2x8K ms |", "|---|---|---|---|"]
    bench = make_inputs(2, 8192)
    for prec in args.precisions.split(","):
        try:
            with precision(prec):
                lines.append(sweep(prec, bench))
        except Exception as exc:  # a precision this Triton cannot build is a result too
            lines.append(f"| {prec} | failed: {type(exc).__name__}: {str(exc).splitlines()[0][:100]} | | |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        path = results_path(args.out, meta, "-precision")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
