"""Are the Triton kernels right at head dims below ``MIN_HEAD_DIM`` on this card's Triton?

On an H100 under Triton 3.6 the key gradients once came out wrong at K = 16 (exact under the
interpreter), so heads narrower than ``gdn2.ops.gdn2.triton.chunk.MIN_HEAD_DIM`` were zero-padded
to 64: a 32-wide head (the MQAR models' d_model 64 with 2 heads) then cost the state work of a
64-wide one. This runs the unpadded kernels at K, V in {16, 32} against the float64 recurrence with
the GPU tests' criterion and says, per width, whether the bound may sit below it (both were right
on 2026-12-06, and the bound is now 16):

    python scripts/head_dim_probe.py

Exit status 0 whatever it finds (a probe, not a test); the verdicts are in the output.
"""

import sys

import torch

import gdn2.ops.gdn2.triton.chunk as triton_chunk
from gdn2.testing import check_backend, random_inputs

CASES = {
    "channel gates, grouped heads": dict(B=2, T=200, H=2, HV=4),
    "scalar gates": dict(B=1, T=130, H=2, gate="scalar", erase="scalar", write="scalar"),
    "packed, initial state": dict(B=1, T=300, H=2, N=3, initial_state=True),
}
PACKED = [0, 100, 137, 300]   # offsets of the packed case's three sequences


def probe(width: int) -> bool:
    saved = triton_chunk.MIN_HEAD_DIM
    triton_chunk.MIN_HEAD_DIM = width            # no padding at this width
    ok = True
    try:
        for name, case in CASES.items():
            for dtype in (torch.float32, torch.bfloat16):
                x = random_inputs(K=width, V=width, b_max=2.0, dtype=dtype, device="cuda", seed=width,
                                  requires_grad=True, **case)
                extra = {"cu_seqlens": torch.tensor(PACKED, device=x["q"].device)} if "N" in case else {}
                try:
                    check_backend(x, "triton", **extra)
                    verdict = "ok"
                except AssertionError as e:      # the criterion's message names the tensor and errors
                    ok, verdict = False, f"FAILS: {str(e).splitlines()[0][:160]}"
                except RuntimeError as e:        # a fault: the CUDA context is gone, so stop here
                    print(f"K = V = {width:3d} | {name:28s} | {str(dtype):14s} | FAULT: {str(e)[:160]}", flush=True)
                    raise
                print(f"K = V = {width:3d} | {name:28s} | {str(dtype):14s} | {verdict}", flush=True)
    finally:
        triton_chunk.MIN_HEAD_DIM = saved
    return ok


def main() -> int:
    if not torch.cuda.is_available():
        print("needs a CUDA device")
        return 0
    verdicts = {w: probe(w) for w in (32, 16)}
    for w, ok in verdicts.items():
        print(f"K = V = {w}: {'safe to run unpadded' if ok else 'keep the padding'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
