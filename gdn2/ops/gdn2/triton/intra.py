"""Intra-chunk stage: the decayed products ``T`` (erase side) and ``Aqk`` (query side) of one
chunk, and ``A = (I + T)^-1``. PyTorch reference: ``chunk.decayed_products`` and the solve in
``chunk.chunk_step``.

Numerics: every exponent is an interval sum of log-decays formed by additions only (never a
difference of two cumulative sums), so per-token log-decays of -1e4 cost no precision:
  rows:     sum over (a(r), r]   with a(r) the first row of r's 16-row sub-block,
  columns:  sum over (s, a_i]    for s in sub-blocks before block i,
  diagonal: sum over (s, r]      inside one sub-block.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import DOT_PRECISION, GATE_CHANNEL, GATE_SCALAR, GATE_ZERO, load_rows, load_scalar_rows


@triton.jit
def _block_cumsum(x, BT: tl.constexpr, SUB: tl.constexpr, BK: tl.constexpr):
    """Inclusive cumulative sum down the rows of each SUB-row block of a [BT, BK] tile."""
    return tl.reshape(tl.cumsum(tl.reshape(x, (BT // SUB, SUB, BK)), axis=1), (BT, BK))


@triton.jit
def chunk_intra_fwd_kernel(
    q, k, g, b, A, Aqk, chunk_start, chunk_end, scale,
    H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, SUB: tl.constexpr,
    G_MODE: tl.constexpr, B_MODE: tl.constexpr, PREC: tl.constexpr,
):
    i_c, i_h = tl.program_id(0), tl.program_id(1)
    t0 = tl.load(chunk_start + i_c).to(tl.int64)
    L = (tl.load(chunk_end + i_c) - t0).to(tl.int32)
    o_t = tl.arange(0, BT)
    o_c = tl.arange(0, BT)
    off = o_t % SUB                      # row offset inside its sub-block
    blk = o_t // SUB
    ERASE: tl.constexpr = B_MODE != GATE_ZERO

    b_T = tl.zeros([BT, BT], dtype=tl.float32)
    b_Aqk = tl.zeros([BT, BT], dtype=tl.float32)
    if G_MODE == GATE_CHANNEL:
        for i_k in range(0, tl.cdiv(K, BK)):
            o_k = i_k * BK + tl.arange(0, BK)
            b_q = load_rows(q, t0, o_t, L, i_h, H, o_k, K) * scale
            b_k = load_rows(k, t0, o_t, L, i_h, H, o_k, K)
            b_g = load_rows(g, t0, o_t, L, i_h, H, o_k, K)
            b_gn = load_rows(g, t0, o_t + 1, L, i_h, H, o_k, K)     # g of the next row
            b_e = b_k
            if B_MODE == GATE_CHANNEL:
                b_e = b_k * load_rows(b, t0, o_t, L, i_h, H, o_k, K)
            if B_MODE == GATE_SCALAR:
                b_e = b_k * load_scalar_rows(b, t0, o_t, L, i_h, H)[:, None]
            # rows: exp of sum over (a(r), r]
            b_gloc = _block_cumsum(tl.where((off == 0)[:, None], 0.0, b_g), BT, SUB, BK)
            b_lq = b_q * tl.exp(b_gloc)
            b_le = b_e * tl.exp(b_gloc)
            # off-diagonal sub-blocks, through the anchor a_i = first row of block i
            for i_b in range(1, BT // SUB):
                a_i = i_b * SUB
                b_sum = tl.cumsum(tl.where((o_t + 1 <= a_i)[:, None], b_gn, 0.0), axis=0, reverse=True)
                b_right = tl.where((o_t < a_i)[:, None], b_k * tl.exp(b_sum), 0.0)
                in_blk = (blk == i_b)[:, None]
                b_Aqk += tl.where(in_blk, tl.dot(b_lq, tl.trans(b_right), input_precision=PREC), 0.0)
                if ERASE:
                    b_T += tl.where(in_blk, tl.dot(b_le, tl.trans(b_right), input_precision=PREC), 0.0)
            # diagonal sub-blocks: column s = a(r) + j, exp of sum over (s, r]
            for j in range(0, SUB):
                b_seg = _block_cumsum(tl.where((off > j)[:, None], b_g, 0.0), BT, SUB, BK)
                s_row = blk * SUB + j
                b_ks = load_rows(k, t0, s_row, L, i_h, H, o_k, K) * tl.exp(b_seg)
                at_col = o_c[None, :] == s_row[:, None]
                b_Aqk += tl.where(at_col & (off >= j)[:, None], tl.sum(b_q * b_ks, axis=1)[:, None], 0.0)
                if ERASE:
                    b_T += tl.where(at_col & (off > j)[:, None], tl.sum(b_e * b_ks, axis=1)[:, None], 0.0)
    else:
        for i_k in range(0, tl.cdiv(K, BK)):
            o_k = i_k * BK + tl.arange(0, BK)
            b_q = load_rows(q, t0, o_t, L, i_h, H, o_k, K) * scale
            b_k = load_rows(k, t0, o_t, L, i_h, H, o_k, K)
            b_Aqk += tl.dot(b_q, tl.trans(b_k), input_precision=PREC)
            if ERASE:
                b_e = b_k
                if B_MODE == GATE_CHANNEL:
                    b_e = b_k * load_rows(b, t0, o_t, L, i_h, H, o_k, K)
                if B_MODE == GATE_SCALAR:
                    b_e = b_k * load_scalar_rows(b, t0, o_t, L, i_h, H)[:, None]
                b_T += tl.dot(b_e, tl.trans(b_k), input_precision=PREC)
        if G_MODE == GATE_SCALAR:
            # exp of sum over (s, r]: cumulative sum down the rows of g_r masked to r > s
            b_g = load_scalar_rows(g, t0, o_t, L, i_h, H)
            b_seg = tl.cumsum(tl.where(o_t[:, None] > o_c[None, :], b_g[:, None], 0.0), axis=0)
            b_decay = tl.exp(b_seg)
            b_Aqk *= b_decay
            b_T *= b_decay
        b_Aqk = tl.where(o_t[:, None] >= o_c[None, :], b_Aqk, 0.0)
        b_T = tl.where(o_t[:, None] > o_c[None, :], b_T, 0.0)

    p_row = (t0 + o_t[:, None]) * H * BT + i_h * BT + o_c[None, :]
    m_row = (o_t < L)[:, None]
    tl.store(Aqk + p_row, b_Aqk, mask=m_row)
    if ERASE:
        # A = (I + T)^-1 by forward substitution: row i = e_i - sum_{s<i} T_is A_s.
        # T goes through memory so each row can be read back as a vector.
        tl.store(A + p_row, b_T, mask=m_row)
        tl.debug_barrier()
        b_A = tl.where(o_t[:, None] == o_c[None, :], 1.0, 0.0)
        for i in range(1, BT):
            b_t = tl.load(A + (t0 + i) * H * BT + i_h * BT + o_c, mask=(o_c < i) & (i < L), other=0.0)
            b_a = -tl.sum(b_t[:, None] * b_A, axis=0)
            b_A = tl.where(o_t[:, None] == i, b_a[None, :] + tl.where(o_c == i, 1.0, 0.0)[None, :], b_A)
        tl.debug_barrier()
        tl.store(A + p_row, b_A, mask=m_row)


def chunk_intra_fwd(q, k, g, b, scale, chunks, g_mode, b_mode, BT=64):
    """Launch the intra-chunk stage. q, k, g, b in the flattened layout ``[T_total, H, K]``."""
    import torch
    T, H, K = k.shape
    A = torch.empty(T, H, BT, dtype=torch.float32, device=k.device)
    Aqk = torch.empty(T, H, BT, dtype=torch.float32, device=k.device)
    BK = min(32, max(16, triton.next_power_of_2(K)))
    chunk_intra_fwd_kernel[(chunks.count, H)](
        q, k, g if g is not None else k, b if isinstance(b, torch.Tensor) else k, A, Aqk,
        chunks.start, chunks.end, scale,
        H=H, K=K, BT=BT, BK=BK, SUB=16, G_MODE=g_mode, B_MODE=b_mode, PREC=DOT_PRECISION,
        num_warps=4, num_stages=1)
    return A, Aqk

