"""Run each stage of the Triton pipeline once at a paper shape, synchronising after each, so a
faulting kernel is named (a fault otherwise surfaces at some later call).

    CUDA_LAUNCH_BLOCKING=1 python scripts/gpu_smoke.py
"""

import torch

from gdn2.bench.gpu import make_inputs, stage_inputs
from gdn2.ops.gdn2.triton.backward import chunk_bwd
from gdn2.ops.gdn2.triton.intra import chunk_intra_fwd
from gdn2.ops.gdn2.triton.l2norm import l2norm
from gdn2.ops.gdn2.triton.state import chunk_state_fwd


def stage(name, fn):
    out = fn()
    torch.cuda.synchronize()
    print(f"ok  {name}", flush=True)
    return out


def main(B=1, T=200):
    x = make_inputs(B, T)
    q, k = stage("l2norm", lambda: (l2norm(x["q"]), l2norm(x["k"])))
    s = stage_inputs(x, q, k)
    A, Aqk, gated = stage("intra", lambda: chunk_intra_fwd(s.q, s.k, s.g, s.b, s.scale, s.chunks, *s.modes[:2]))
    stage("state fwd", lambda: chunk_state_fwd(gated, s.v, s.w, A, Aqk, None, s.cu, s.chunks, s.modes, True))
    stage("backward", lambda: chunk_bwd(s.q, s.k, s.v, s.g, s.b, s.w, None, s.scale, s.cu, s.chunks,
                                        torch.randn_like(s.v), None))


if __name__ == "__main__":
    main()
    main(2, 8192)
