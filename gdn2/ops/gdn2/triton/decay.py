"""Decayed products inside one chunk, the stable way (shared by the backward stages).

For a lower-triangular ``M [BT, BT]`` and the chunk's log-decays:
  ``apply(M, y)_r   = sum_s M_rs y_s exp(G_r - G_s)``
  ``apply_t(M, x)_s = sum_r M_rs x_r exp(G_r - G_s)``
Off-diagonal 16-row sub-blocks go through the anchor ``a_i`` (first row of block i) as two
matrix products; diagonal sub-blocks use one pairwise-decay tile each. Every exponent is a
sum of log-decays formed by additions, as in ``intra.py``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import apply_erase, load_rows

@triton.jit
def block_cumsum(x, BT: tl.constexpr, SUB: tl.constexpr, BK: tl.constexpr, REVERSE: tl.constexpr):
    """Cumulative sum down the rows of each SUB-row block of a [BT, BK] tile."""
    return tl.reshape(tl.cumsum(tl.reshape(x, (BT // SUB, SUB, BK)), axis=1, reverse=REVERSE), (BT, BK))


@triton.jit
def anchor_factor(b_gn, a_i, BT: tl.constexpr):
    """``exp(sum over (s, a_i] of g)`` for rows ``s < a_i``, zero elsewhere; ``b_gn`` holds g of
    the next row."""
    o_t = tl.arange(0, BT)
    b_sum = tl.cumsum(tl.where((o_t + 1 <= a_i)[:, None], b_gn, 0.0), axis=0, reverse=True)
    return tl.where((o_t < a_i)[:, None], tl.exp(b_sum), 0.0)


@triton.jit
def decay_offdiag(M1, M2, b_k, b_x1, b_x2, b_g, b_gn, BT: tl.constexpr, BK: tl.constexpr,
                  SUB: tl.constexpr, PREC: tl.constexpr, SECOND: tl.constexpr):
    """Off-diagonal sub-blocks of ``apply(M1, k)``, ``apply_t(M1, x1)`` and, when SECOND,
    ``apply(M2, k)``, ``apply_t(M2, x2)`` for channel decays. The anchor factors depend on the
    gates only, so each is formed once and serves all four products."""
    o_t = tl.arange(0, BT)
    off = o_t % SUB
    blk = o_t // SUB
    b_row = tl.exp(block_cumsum(tl.where((off == 0)[:, None], 0.0, b_g), BT, SUB, BK, False))
    b_l1 = b_x1 * b_row
    b_p1 = tl.zeros([BT, BK], dtype=tl.float32)
    b_t1 = tl.zeros([BT, BK], dtype=tl.float32)
    b_p2 = tl.zeros([BT, BK], dtype=tl.float32)
    b_t2 = tl.zeros([BT, BK], dtype=tl.float32)
    if SECOND:
        b_l2 = b_x2 * b_row
    for i_b in range(1, BT // SUB):
        b_f = anchor_factor(b_gn, i_b * SUB, BT)
        b_right = b_k * b_f
        in_blk = (blk == i_b)[:, None]
        b_M = tl.where(in_blk, M1, 0.0)
        b_p1 += tl.dot(b_M, b_right, input_precision=PREC)
        b_t1 += tl.dot(tl.trans(b_M), b_l1, input_precision=PREC) * b_f
        if SECOND:
            b_M = tl.where(in_blk, M2, 0.0)
            b_p2 += tl.dot(b_M, b_right, input_precision=PREC)
            b_t2 += tl.dot(tl.trans(b_M), b_l2, input_precision=PREC) * b_f
    return b_p1 * b_row, b_t1, b_p2 * b_row, b_t2


@triton.jit
def decay_diag_blocks(p_M1, p_M2, p_out, q, k, g, b, t0, L, i_h, scale, o_k,
                      H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                      SUB: tl.constexpr, B_MODE: tl.constexpr, ERASE: tl.constexpr):
    """Diagonal sub-blocks of the four products of the backward, from one pairwise-decay tile
    per sub-block: with ``M1 = dAqk``, ``M2 = dT`` (row-major [BT, BT] at p_M1, p_M2),
    ``apply(M1, k)``, ``apply_t(M1, scale q)``, ``apply(M2, k)``, ``apply_t(M2, e)``, written
    as four [BT, BK] tiles at p_out. The exponent of pair (r, s) is the sum over (s, r],
    a cumulative sum down r of g_r masked to r > s (additions only)."""
    o_s = tl.arange(0, SUB)
    o_kk = tl.arange(0, BK)
    lower = (o_s[:, None] >= o_s[None, :])[:, :, None]
    below = (o_s[:, None] > o_s[None, :])[:, :, None]
    for i_b in range(0, BT // SUB):
        a = i_b * SUB
        rows = a + o_s
        b_g = load_rows(g, t0, rows, L, i_h, H, o_k, K)
        b_D = tl.where(lower, tl.exp(tl.cumsum(tl.where(below, b_g[:, None, :], 0.0), axis=0)), 0.0)
        b_k = load_rows(k, t0, rows, L, i_h, H, o_k, K)
        b_q = load_rows(q, t0, rows, L, i_h, H, o_k, K) * scale
        p_blk = rows[:, None] * BT + rows[None, :]
        p_o = p_out + rows[:, None] * BK + o_kk[None, :]
        b_M = tl.load(p_M1 + p_blk)[:, :, None] * b_D
        tl.store(p_o, tl.sum(b_M * b_k[None, :, :], axis=1))
        tl.store(p_o + BT * BK, tl.sum(b_M * b_q[:, None, :], axis=0))
        if ERASE:
            b_e = apply_erase(b_k, b, t0, rows, L, i_h, H, o_k, K, B_MODE)
            b_M = tl.load(p_M2 + p_blk)[:, :, None] * b_D
            tl.store(p_o + 2 * BT * BK, tl.sum(b_M * b_k[None, :, :], axis=1))
            tl.store(p_o + 3 * BT * BK, tl.sum(b_M * b_e[:, None, :], axis=0))
