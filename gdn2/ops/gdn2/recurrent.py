"""The token recurrence of GDN-2 (spec section 1): the ground truth of the project.

Written for clarity, not speed: every gate is expanded to full width, every key head is
repeated to the value heads, and the loop runs one token at a time in float64.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..utils import l2norm
from .checks import Gate


def _full(x: Gate, like: torch.Tensor, fill: float) -> torch.Tensor:
    """A gate as a float64 tensor of ``like``'s shape (constants and per-head scalars broadcast)."""
    if x is None:
        return torch.full_like(like, fill)
    if isinstance(x, (int, float)):
        return torch.full_like(like, float(x))
    x = x.to(torch.float64)
    return x if x.shape == like.shape else x.unsqueeze(-1).expand_as(like)


def _recurrence(q, k, v, g, b, w, S):
    """One sequence: q, k, g, b [T, HV, K]; v, w [T, HV, V]; S [HV, K, V]. Returns o [T, HV, V], S."""
    outputs = []
    for t in range(q.shape[0]):
        S = torch.exp(g[t]).unsqueeze(-1) * S                      # decay
        r = torch.einsum("hk,hkv->hv", b[t] * k[t], S)              # read along the erase direction
        S = S + k[t].unsqueeze(-1) * (w[t] * v[t] - r).unsqueeze(-2)  # write the gated residual
        outputs.append(torch.einsum("hk,hkv->hv", q[t], S))
    o = torch.stack(outputs) if outputs else q.new_zeros(0, *v.shape[1:])
    return o, S


def recurrent_gdn2(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: Gate, b: Gate, w: Gate,
                   scale: float, initial_state: Optional[torch.Tensor], output_final_state: bool,
                   cu_seqlens: Optional[torch.Tensor], use_qk_l2norm: bool = False):
    """Float64 token loop over validated inputs; shapes as in :func:`gdn2.ops.gated_delta_rule2`."""
    if use_qk_l2norm:
        q, k = l2norm(q), l2norm(k)
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    f64 = torch.float64
    q64, k64, v64 = q.to(f64) * scale, k.to(f64), v.to(f64)
    g64 = _full(g, k64, 0.0)
    b64 = _full(b, k64, 1.0)
    w64 = _full(w, v64, 1.0)
    # value head j reads key head j // (HV // H)
    q64, k64, g64, b64 = (x.repeat_interleave(HV // H, dim=2) for x in (q64, k64, g64, b64))

    if cu_seqlens is None:
        spans = [(i, 0, T) for i in range(B)]
    else:
        offsets = cu_seqlens.tolist()
        spans = [(0, s, e) for s, e in zip(offsets, offsets[1:])]

    outputs, finals = [], []
    for n, (row, start, end) in enumerate(spans):
        S = (q64.new_zeros(HV, K, V) if initial_state is None else initial_state[n].to(f64))
        sl = (row, slice(start, end))
        o, S = _recurrence(q64[sl], k64[sl], v64[sl], g64[sl], b64[sl], w64[sl], S)
        outputs.append(o)
        finals.append(S)
    o = torch.stack(outputs) if cu_seqlens is None else torch.cat(outputs).unsqueeze(0)
    state_dtype = f64 if q.dtype == f64 else torch.float32
    final = torch.stack(finals).to(state_dtype) if output_final_state else None
    return o.to(q.dtype), final
