"""Per-kernel times of the Triton pipeline at one paper shape (bf16, H = 16, K = V = 128),
next to each kernel's minimum bytes, so the slowest stage is the one to work on.

    python benchmarks/profile_stages.py --B 2 --T 8192
"""

import argparse

import torch
import triton

from gdn2.bench.gpu import make_inputs, stage_inputs
from gdn2.ops.gdn2.triton.backward import chunk_bwd
from gdn2.ops.gdn2.triton.intra import chunk_intra_fwd
from gdn2.ops.gdn2.triton.state import chunk_state_fwd
from gdn2.ops.gdn2.triton.l2norm import l2norm as l2norm_triton
from gdn2.ops.utils import l2norm


def bench(fn):
    return triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--B", type=int, default=2)
    p.add_argument("--T", type=int, default=8192)
    a = p.parse_args()
    x = make_inputs(a.B, a.T)
    s = stage_inputs(x, l2norm(x["q"]), l2norm(x["k"]))
    qf, kf, vf, gf, bf, wf, cu, chunks, modes, scale = s.q, s.k, s.v, s.g, s.b, s.w, s.cu, s.chunks, s.modes, s.scale
    A, Aqk, gated = chunk_intra_fwd(qf, kf, gf, bf, scale, chunks, modes[0], modes[1])
    do = torch.randn_like(vf)
    rows = [
        ("l2norm q, k (PyTorch composite)", bench(lambda: (l2norm(x["q"]), l2norm(x["k"])))),
        ("l2norm q, k (Triton, used)", bench(lambda: (l2norm_triton(x["q"]), l2norm_triton(x["k"])))),
        ("intra fwd (Aqk, A, gated operands; three-pass, as a training forward)",
         bench(lambda: chunk_intra_fwd(qf, kf, gf, bf, scale, chunks, modes[0], modes[1]))),
        ("state fwd (o)", bench(lambda: chunk_state_fwd(gated, vf, wf, A, Aqk, None, cu, chunks, modes, False))),
        ("state fwd recompute (h, R)", bench(lambda: chunk_state_fwd(gated, vf, wf, A, Aqk, None, cu, chunks, modes,
                                                                     False, store_o=False, store_h=True,
                                                                     store_r=True))),
        ("backward, all stages (intra recomputed)",
         bench(lambda: chunk_bwd(qf, kf, vf, gf, bf, wf, None, scale, cu, chunks, do, None))),
        ("backward from the forward's A, Aqk (used in training)",
         bench(lambda: chunk_bwd(qf, kf, vf, gf, bf, wf, None, scale, cu, chunks, do, None, kept=(A, Aqk)))),
        *[(f"backward, key kernel on {n} columns", bench(lambda n=n: chunk_bwd(qf, kf, vf, gf, bf, wf, None, scale, cu,
                                                                             chunks, do, None, key_block=n)))
          for n in (16, 32)],
    ]
    print(f"| stage ({a.B}x{a.T}, {torch.cuda.get_device_name()}) | ms |")
    print("|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.3f} |")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        chunk_bwd(qf, kf, vf, gf, bf, wf, None, scale, cu, chunks, do, None)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12))


if __name__ == "__main__":
    main()
