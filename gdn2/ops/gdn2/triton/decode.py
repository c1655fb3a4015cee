"""Fused recurrent kernel for decoding: one or a few tokens per call, the state read once and
written once. Reference: ``recurrent.py`` (the token loop)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import GATE_CHANNEL, GATE_SCALAR, GATE_ZERO, cdiv, gate_mode, next_pow2, on_device_of


@triton.jit
def fused_recurrent_fwd_kernel(
    q, k, v, g, b, w, o, h0, ht, cu_seqlens, scale,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, G_MODE: tl.constexpr, B_MODE: tl.constexpr,
    W_MODE: tl.constexpr, USE_H0: tl.constexpr, STORE_HT: tl.constexpr, L2NORM: tl.constexpr,
):
    # one flat grid, value tiles fastest: neighbouring programs read the neighbouring columns of
    # one state's rows (and the same q, k rows) together, not one tile of each sequence's state;
    # flat, so the number of sequences is not bound by a grid axis's 65535
    NV: tl.constexpr = (V + BV - 1) // BV
    pid = tl.program_id(0)
    i_v, i_nh = pid % NV, pid // NV
    i_n, i_hv = i_nh // HV, i_nh % HV
    i_h = i_hv // (HV // H)
    bos = tl.load(cu_seqlens + i_n).to(tl.int64)
    eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    p_kv = i_nh.to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :]   # int64: states past 2^31 floats
    b_S = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_S = tl.load(h0 + p_kv, mask=m_kv, other=0.0)
    for t in range(bos, eos):
        p_k = t * H * K + i_h * K + o_k
        p_v = t * HV * V + i_hv * V + o_v
        b_q = tl.load(q + p_k, mask=m_k, other=0.0).to(tl.float32) * scale
        b_k = tl.load(k + p_k, mask=m_k, other=0.0).to(tl.float32)
        b_z = tl.load(v + p_v, mask=m_v, other=0.0).to(tl.float32)
        if L2NORM:  # as gdn2.ops.l2norm
            b_q = b_q * tl.rsqrt(tl.sum(b_q * b_q) / (scale * scale) + 1e-6)
            b_k = b_k * tl.rsqrt(tl.sum(b_k * b_k) + 1e-6)
        if G_MODE == GATE_CHANNEL:
            b_S = b_S * tl.exp(tl.load(g + p_k, mask=m_k, other=0.0).to(tl.float32))[:, None]
        elif G_MODE == GATE_SCALAR:
            b_S = b_S * tl.exp(tl.load(g + t * H + i_h).to(tl.float32))
        if W_MODE == GATE_CHANNEL:
            b_z = b_z * tl.load(w + p_v, mask=m_v, other=0.0).to(tl.float32)
        elif W_MODE == GATE_SCALAR:
            b_z = b_z * tl.load(w + t * HV + i_hv).to(tl.float32)
        if B_MODE != GATE_ZERO:
            b_e = b_k
            if B_MODE == GATE_CHANNEL:
                b_e = b_k * tl.load(b + p_k, mask=m_k, other=0.0).to(tl.float32)
            elif B_MODE == GATE_SCALAR:
                b_e = b_k * tl.load(b + t * H + i_h).to(tl.float32)
            b_z = b_z - tl.sum(b_e[:, None] * b_S, axis=0)
        b_S = b_S + b_k[:, None] * b_z[None, :]
        tl.store(o + p_v, tl.sum(b_q[:, None] * b_S, axis=0).to(o.dtype.element_ty), mask=m_v)
    if STORE_HT:
        tl.store(ht + p_kv, b_S, mask=m_kv)


def fused_recurrent_fwd(q, k, v, g, b, w, scale, h0, cu, output_final_state, use_qk_l2norm=False,
                        BV=None, num_warps=None):
    """Token-by-token forward; no autograd. Inputs contiguous, ``[T_total, H, K]`` or ``[B, T, H, K]``
    (one memory layout: tokens are indexed flat through ``cu``); ``o`` takes ``v``'s shape. ``BV``
    (value columns per program) and ``num_warps`` exist for ``benchmarks/decode_variants.py``."""
    H, K = k.shape[-2], k.shape[-1]
    HV, V = v.shape[-2], v.shape[-1]
    N = cu.numel() - 1
    BK = max(16, next_pow2(K))
    BV = BV or min(32, max(16, next_pow2(V)))
    # one warp per 4096 state elements (128 registers a thread): at K = V = 128, batch 64 on an H100,
    # 1 warp ran at 1.13x the state-traffic floor, 2 at 1.22x, 4 at 1.30x (decode_variants, 2026-12-06)
    num_warps = num_warps or max(1, BK * BV // 4096)
    o = torch.empty(v.shape, dtype=q.dtype, device=q.device)
    ht = torch.empty(N, HV, K, V, dtype=torch.float32, device=q.device) if output_final_state else None
    dummy = k
    with on_device_of(q):
        fused_recurrent_fwd_kernel[(cdiv(V, BV) * HV * N,)](
            q, k, v, g if g is not None else dummy, b if isinstance(b, torch.Tensor) else dummy,
            w if isinstance(w, torch.Tensor) else dummy, o, h0 if h0 is not None else dummy,
            ht if ht is not None else dummy, cu, scale,
            H=H, HV=HV, K=K, V=V, BK=BK, BV=BV, G_MODE=gate_mode(g, k.ndim), B_MODE=gate_mode(b, k.ndim),
            W_MODE=gate_mode(w, k.ndim), USE_H0=h0 is not None, STORE_HT=output_final_state, L2NORM=use_qk_l2norm,
            num_warps=num_warps, num_stages=1)
    return o, ht
