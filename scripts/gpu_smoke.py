"""Run each stage of the Triton pipeline once at a paper shape, synchronising after each, so a
faulting kernel is named (a fault otherwise surfaces at some later call).

    CUDA_LAUNCH_BLOCKING=1 python scripts/gpu_smoke.py
"""

import torch

from gdn2.bench.gpu import make_inputs
from gdn2.ops.gdn2.triton.backward import chunk_bwd
from gdn2.ops.gdn2.triton.chunk import _chunks, _prepare
from gdn2.ops.gdn2.triton.common import gate_mode
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
    qf, kf, vf, gf, bf, wf, h0, cu, uT, _ = _prepare(q, k, x["v"], x["g"], x["b"], x["w"], None, None)
    chunks = _chunks(cu, uT)
    modes = (gate_mode(gf, 3), gate_mode(bf, 3), gate_mode(wf, 3))
    scale = qf.shape[-1] ** -0.5
    A, Aqk, gated = stage("intra", lambda: chunk_intra_fwd(qf, kf, gf, bf, scale, chunks, modes[0], modes[1]))
    stage("state fwd", lambda: chunk_state_fwd(gated, vf, wf, A, Aqk, None, cu, chunks, modes, True))
    stage("backward", lambda: chunk_bwd(qf, kf, vf, gf, bf, wf, None, scale, cu, chunks, torch.randn_like(vf), None))


if __name__ == "__main__":
    main()
    main(2, 8192)
