"""Inter-chunk stage: the state recurrence across chunks with the chunk output fused in, so
the state stays on chip. PyTorch reference: ``chunk.chunk_step`` (after ``A`` and ``Aqk``).

One program per (sequence, value head, block of V columns) walks its sequence's chunks in
order; per chunk it forms ``Y = A Ē``, ``U = A Z``, ``R = U - Y S``,
``O = Q_γ S + Aqk R`` and ``S <- exp(G_C) S + K_tail^T R``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import DOT_PRECISION, GATE_CHANNEL, GATE_SCALAR, GATE_ZERO, load_rows, load_scalar_rows


@triton.jit
def chunk_gates(g, b, k, t0, o_t, L, i_h, H: tl.constexpr, o_k, K: tl.constexpr,
                BT: tl.constexpr, BK: tl.constexpr, G_MODE: tl.constexpr, B_MODE: tl.constexpr):
    """Per-chunk gate factors (float32): exp(G_r) [BT, BK|1], exp(G_C - G_r) [BT, BK|1],
    exp(G_C) [BK|1] and the erase direction e = b * k. All exponents are sums formed by
    additions (G_C - G_r = sum over (r, C] of the next rows' g)."""
    b_k = load_rows(k, t0, o_t, L, i_h, H, o_k, K)
    if G_MODE == GATE_CHANNEL:
        b_g = load_rows(g, t0, o_t, L, i_h, H, o_k, K)
        b_gn = load_rows(g, t0, o_t + 1, L, i_h, H, o_k, K)
        b_gam = tl.exp(tl.cumsum(b_g, axis=0))
        b_tail = tl.exp(tl.cumsum(b_gn, axis=0, reverse=True))
        b_dec = tl.exp(tl.sum(b_g, axis=0))
    elif G_MODE == GATE_SCALAR:
        b_g = load_scalar_rows(g, t0, o_t, L, i_h, H)
        b_gn = load_scalar_rows(g, t0, o_t + 1, L, i_h, H)
        b_gam = tl.exp(tl.cumsum(b_g, axis=0))[:, None]
        b_tail = tl.exp(tl.cumsum(b_gn, axis=0, reverse=True))[:, None]
        b_dec = tl.exp(tl.sum(b_g, axis=0)) + tl.zeros([BK], dtype=tl.float32)
    else:
        b_gam = tl.full([BT, 1], 1.0, tl.float32)
        b_tail = tl.full([BT, 1], 1.0, tl.float32)
        b_dec = tl.full([BK], 1.0, tl.float32)
    b_e = b_k
    if B_MODE == GATE_CHANNEL:
        b_e = b_k * load_rows(b, t0, o_t, L, i_h, H, o_k, K)
    elif B_MODE == GATE_SCALAR:
        b_e = b_k * load_scalar_rows(b, t0, o_t, L, i_h, H)[:, None]
    return b_k, b_e, b_gam, b_tail, b_dec


@triton.jit
def load_write(v, w, t0, o_t, L, i_hv, HV: tl.constexpr, o_v, V: tl.constexpr, W_MODE: tl.constexpr):
    """z = w * v for one chunk and block of value columns, float32 [BT, BV]."""
    b_z = load_rows(v, t0, o_t, L, i_hv, HV, o_v, V)
    if W_MODE == GATE_CHANNEL:
        b_z = b_z * load_rows(w, t0, o_t, L, i_hv, HV, o_v, V)
    elif W_MODE == GATE_SCALAR:
        b_z = b_z * load_scalar_rows(w, t0, o_t, L, i_hv, HV)[:, None]
    return b_z


@triton.jit
def chunk_state_fwd_kernel(
    q, k, v, g, b, w, A, Aqk, o, h0, ht, h, r, cu_seqlens, chunk_first, scale,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    G_MODE: tl.constexpr, B_MODE: tl.constexpr, W_MODE: tl.constexpr,
    USE_H0: tl.constexpr, STORE_HT: tl.constexpr, STORE_O: tl.constexpr, STORE_H: tl.constexpr,
    STORE_R: tl.constexpr, PREC: tl.constexpr,
):
    i_n, i_hv, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_h = i_hv // (HV // H)
    bos = tl.load(cu_seqlens + i_n).to(tl.int64)
    eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
    c0 = tl.load(chunk_first + i_n).to(tl.int64)
    o_t = tl.arange(0, BT)
    o_c = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_kv = (o_k < K)[:, None] & (o_v < V)[None, :]
    p_kv = o_k[:, None] * V + o_v[None, :]
    ERASE: tl.constexpr = B_MODE != GATE_ZERO

    b_S = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_S = tl.load(h0 + (i_n * HV + i_hv) * K * V + p_kv, mask=m_kv, other=0.0).to(tl.float32)
    for t0 in range(bos, eos, BT):
        L = tl.minimum(eos - t0, BT).to(tl.int32)
        if STORE_H:
            i_c = c0 + (t0 - bos) // BT
            tl.store(h + (i_c * HV + i_hv) * K * V + p_kv, b_S, mask=m_kv)
        b_k, b_e, b_gam, b_tail, b_dec = chunk_gates(g, b, k, t0, o_t, L, i_h, H, o_k, K, BT, BK, G_MODE, B_MODE)
        b_z = load_write(v, w, t0, o_t, L, i_hv, HV, o_v, V, W_MODE)
        if ERASE:
            b_A = load_rows(A, t0, o_t, L, i_h, H, o_c, BT)
            b_Y = tl.dot(b_A, b_e * b_gam, input_precision=PREC)
            b_R = tl.dot(b_A, b_z, input_precision=PREC) - tl.dot(b_Y, b_S, input_precision=PREC)
        else:
            b_R = b_z
        if STORE_R:
            tl.store(r + (t0 + o_t[:, None]) * HV * V + i_hv * V + o_v[None, :], b_R,
                     mask=(o_t < L)[:, None] & (o_v < V)[None, :])
        if STORE_O:
            b_q = load_rows(q, t0, o_t, L, i_h, H, o_k, K) * scale
            b_Aqk = load_rows(Aqk, t0, o_t, L, i_h, H, o_c, BT)
            b_o = tl.dot(b_q * b_gam, b_S, input_precision=PREC) + tl.dot(b_Aqk, b_R, input_precision=PREC)
            tl.store(o + (t0 + o_t[:, None]) * HV * V + i_hv * V + o_v[None, :], b_o.to(o.dtype.element_ty),
                     mask=(o_t < L)[:, None] & (o_v < V)[None, :])
        b_S = b_S * b_dec[:, None] + tl.dot(tl.trans(b_k * b_tail), b_R, input_precision=PREC)
    if STORE_HT:
        tl.store(ht + (i_n * HV + i_hv) * K * V + p_kv, b_S, mask=m_kv)


def chunk_state_fwd(q, k, v, g, b, w, A, Aqk, scale, h0, cu_seqlens, chunks, modes,
                    output_final_state, store_o=True, store_h=False, store_r=False, BT=64):
    """Launch the inter-chunk stage over the flattened layout; returns (o, final, h, r)."""
    T, H, K = k.shape
    HV, V = v.shape[1], v.shape[2]
    N = cu_seqlens.numel() - 1
    dev = k.device
    BK = max(16, triton.next_power_of_2(K))
    BV = min(32, max(16, triton.next_power_of_2(V)))
    o = torch.empty(T, HV, V, dtype=q.dtype, device=dev) if store_o else None
    ht = torch.empty(N, HV, K, V, dtype=torch.float32, device=dev) if output_final_state else None
    h = torch.empty(max(chunks.count, 1), HV, K, V, dtype=torch.float32, device=dev) if store_h else None
    r = torch.empty(T, HV, V, dtype=torch.float32, device=dev) if store_r else None
    dummy = k
    g_mode, b_mode, w_mode = modes
    chunk_state_fwd_kernel[(N, HV, triton.cdiv(V, BV))](
        q, k, v, g if g is not None else dummy, b if isinstance(b, torch.Tensor) else dummy,
        w if isinstance(w, torch.Tensor) else dummy, A if A is not None else dummy, Aqk,
        o if o is not None else dummy, h0 if h0 is not None else dummy, ht if ht is not None else dummy,
        h if h is not None else dummy, r if r is not None else dummy, cu_seqlens, chunks.first, scale,
        H=H, HV=HV, K=K, V=V, BT=BT, BK=BK, BV=BV, G_MODE=g_mode, B_MODE=b_mode, W_MODE=w_mode,
        USE_H0=h0 is not None, STORE_HT=output_final_state, STORE_O=store_o, STORE_H=store_h,
        STORE_R=store_r, PREC=DOT_PRECISION, num_warps=8, num_stages=1)
    return o, ht, h, r
