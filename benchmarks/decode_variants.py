"""Tilings of the decode kernel at the benchmark's decode shape (batch 64, one token, H = 16,
K = V = 128, bfloat16, float32 state): value columns per program and warps, each replayed from a
CUDA graph (device time, no host path) against the state-traffic floor, after a check that it
computes what the launcher's tiling computes.

    python benchmarks/decode_variants.py
"""

import sys

import torch
import triton

from gdn2.bench.gpu import H, K, V, decode_floor_ms, machine_ceilings, make_inputs, stage_inputs
from gdn2.ops.gdn2.triton.decode import fused_recurrent_fwd
from gdn2.testing import assert_close


def main() -> int:
    if not torch.cuda.is_available():
        print("decode variants need a CUDA device")
        return 0
    B = 64
    x = make_inputs(B, 1)
    s = stage_inputs(x, x["q"], x["k"])
    h0 = torch.randn(B, H, K, V, device="cuda") * 0.1
    o_ref, ht_ref = fused_recurrent_fwd(s.q, s.k, s.v, s.g, s.b, s.w, s.scale, h0, s.cu, True, use_qk_l2norm=True)
    floor_ms = decode_floor_ms(B, machine_ceilings()["copy_GBps"])

    print(f"| decode tiling (batch {B}, {torch.cuda.get_device_name()}) | ms (CUDA graph) | x floor |\n|---|---|---|")
    for BV in (8, 16, 32, 64):
        for nw in (1, 2, 4, 8):
            if BV * K // (32 * nw) < 4:  # fewer than 4 state elements per thread: not worth a launch
                continue
            def step(BV=BV, nw=nw):
                return fused_recurrent_fwd(s.q, s.k, s.v, s.g, s.b, s.w, s.scale, h0, s.cu, True,
                                           use_qk_l2norm=True, BV=BV, num_warps=nw)
            o, ht = step()
            # o is bfloat16: another summation order flips a few roundings (2^-9 each)
            assert_close(f"o (BV={BV}, {nw} warps)", o.float(), o_ref.float(), rtol=1e-3)
            assert_close(f"ht (BV={BV}, {nw} warps)", ht, ht_ref, rtol=1e-6)
            ms = triton.testing.do_bench_cudagraph(step, return_mode="median")
            print(f"| BV={BV}, {nw} warps | {ms:.4f} | {ms / floor_ms:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
