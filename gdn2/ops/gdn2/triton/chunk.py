"""The Triton backend of ``gated_delta_rule2``: launcher, autograd function, public entry.

Pipeline (forward): ``intra`` (per chunk: Aqk, A = (I + T)^-1) -> ``state`` (per sequence:
the state recurrence with the output fused in).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..checks import Gate
from .common import Chunks, gate_mode, make_chunks
from .intra import chunk_intra_fwd, dot_precision
from .state import chunk_state_fwd

BT = 64


def _as_gate_tensor(x: Gate, shape, device, dtype) -> Gate:
    """A constant other than 0 becomes a per-head tensor; 0 and None stay compile-time modes."""
    if isinstance(x, float) and x != 0.0:
        return torch.full(shape, x, device=device, dtype=dtype)
    return x


def _flat(x):
    """[B, T, H, ...] -> contiguous [B*T, H, ...] (gates in float32)."""
    if not isinstance(x, torch.Tensor):
        return x
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]).contiguous()


def _layout(q, cu_seqlens):
    B, T = q.shape[:2]
    if cu_seqlens is None:
        offsets = [i * T for i in range(B + 1)]
        cu = torch.tensor(offsets, dtype=torch.int32, device=q.device)
    else:
        offsets = cu_seqlens.tolist()
        cu = cu_seqlens.to(torch.int32)
    return cu, make_chunks(offsets, BT, q.device)


def chunk_fwd(q, k, v, g, b, w, scale, h0, cu, chunks: Chunks, output_final_state):
    """Forward over the flattened layout ``[T_total, H, K]``; returns (o, final_state)."""
    modes = (gate_mode(g, 3), gate_mode(b, 3), gate_mode(w, 3))
    prec = dot_precision(q.dtype)
    A, Aqk = chunk_intra_fwd(q, k, g, b, scale, chunks, modes[0], modes[1], BT=BT)
    o, ht, _, _ = chunk_state_fwd(q, k, v, g, b, w, A if modes[1] != 3 else None, Aqk, scale, h0, cu,
                                  chunks, modes, prec, output_final_state)
    return o, ht


class TritonGDN2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, b, w, h0, scale, cu, chunks, output_final_state):
        o, ht = chunk_fwd(q, k, v, g, b, w, scale, h0, cu, chunks, output_final_state)
        ctx.save_for_backward(q, k, v, g if isinstance(g, torch.Tensor) else None,
                              b if isinstance(b, torch.Tensor) else None,
                              w if isinstance(w, torch.Tensor) else None, h0, cu)
        ctx.consts = (scale, b if not isinstance(b, torch.Tensor) else None,
                      w if not isinstance(w, torch.Tensor) else None, chunks)
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        from .backward import chunk_bwd
        q, k, v, g, b, w, h0, cu = ctx.saved_tensors
        scale, b_const, w_const, chunks = ctx.consts
        b = b if b is not None else b_const
        w = w if w is not None else w_const
        grads = chunk_bwd(q, k, v, g, b, w, h0, scale, cu, chunks, do, dht)
        return (*grads, None, None, None, None)


def triton_gdn2(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: Gate, b: Gate, w: Gate,
                scale: float, initial_state: Optional[torch.Tensor], output_final_state: bool,
                cu_seqlens: Optional[torch.Tensor]):
    """Chunkwise GDN-2 in Triton over validated inputs; shapes as in ``gated_delta_rule2``."""
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    gate_dtype = torch.float32
    b = _as_gate_tensor(b, (B, T, H), q.device, gate_dtype)
    w = _as_gate_tensor(w, (B, T, HV), q.device, gate_dtype)
    cu, chunks = _layout(q, cu_seqlens)
    g = g.float() if isinstance(g, torch.Tensor) else g
    h0 = initial_state.float().contiguous() if initial_state is not None else None
    o, ht = TritonGDN2.apply(_flat(q), _flat(k), _flat(v), _flat(g), _flat(b), _flat(w), h0, scale, cu,
                             chunks, output_final_state)
    o = o.reshape(B, T, HV, V)
    if ht is not None and initial_state is not None and initial_state.dtype == torch.float64:
        ht = ht.double()
    return o, ht
