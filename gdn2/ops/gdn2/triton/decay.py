"""Decayed products inside one chunk, the stable way (shared by the backward stages).

For a lower-triangular ``M [BT, BT]`` and the chunk's log-decays:
  ``apply(M, y)_r   = sum_s M_rs y_s exp(G_r - G_s)``
  ``apply_t(M, x)_s = sum_r M_rs x_r exp(G_r - G_s)``
Off-diagonal 16-row sub-blocks go through the anchor ``a_i`` (first row of block i) as two
matrix products; diagonal sub-blocks use per-pair interval sums. Every exponent is a sum of
log-decays formed by additions, as in ``intra.py``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import GATE_CHANNEL, GATE_SCALAR, load_rows, load_scalar_rows

OPERAND_Q: tl.constexpr = tl.constexpr(0)   # scale * q
OPERAND_K: tl.constexpr = tl.constexpr(1)   # k
OPERAND_E: tl.constexpr = tl.constexpr(2)   # b * k


@triton.jit
def block_cumsum(x, BT: tl.constexpr, SUB: tl.constexpr, BK: tl.constexpr, REVERSE: tl.constexpr):
    """Cumulative sum down the rows of each SUB-row block of a [BT, BK] tile."""
    return tl.reshape(tl.cumsum(tl.reshape(x, (BT // SUB, SUB, BK)), axis=1, reverse=REVERSE), (BT, BK))


@triton.jit
def load_operand(q, k, b, t0, rows, L, i_h, H: tl.constexpr, o_k, K: tl.constexpr, scale,
                 WHICH: tl.constexpr, B_MODE: tl.constexpr):
    """Rows of scale * q, k or e = b * k (float32, zeros outside the chunk)."""
    if WHICH == OPERAND_Q:
        x = load_rows(q, t0, rows, L, i_h, H, o_k, K) * scale
    else:
        x = load_rows(k, t0, rows, L, i_h, H, o_k, K)
        if WHICH == OPERAND_E:
            if B_MODE == GATE_CHANNEL:
                x = x * load_rows(b, t0, rows, L, i_h, H, o_k, K)
            elif B_MODE == GATE_SCALAR:
                x = x * load_scalar_rows(b, t0, rows, L, i_h, H)[:, None]
    return x


@triton.jit
def decay_apply(M, p_M, b_y, b_g, b_gn, q, k, g, b, t0, L, i_h, scale, o_k,
                H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                SUB: tl.constexpr, WHICH: tl.constexpr, B_MODE: tl.constexpr, PREC: tl.constexpr):
    """``sum_s M_rs y_s exp(G_r - G_s)`` for channel decays. M is given as a tile and as a
    row-major [BT, BT] float32 copy at ``p_M`` (for element gathers); b_y is the operand tile."""
    o_t = tl.arange(0, BT)
    off = o_t % SUB
    blk = o_t // SUB
    b_gloc = block_cumsum(tl.where((off == 0)[:, None], 0.0, b_g), BT, SUB, BK, False)
    b_p = tl.zeros([BT, BK], dtype=tl.float32)
    for i_b in range(1, BT // SUB):
        a_i = i_b * SUB
        b_sum = tl.cumsum(tl.where((o_t + 1 <= a_i)[:, None], b_gn, 0.0), axis=0, reverse=True)
        b_right = tl.where((o_t < a_i)[:, None], b_y * tl.exp(b_sum), 0.0)
        b_p += tl.where((blk == i_b)[:, None], tl.dot(M, b_right, input_precision=PREC), 0.0)
    b_p = b_p * tl.exp(b_gloc)
    # diagonal sub-blocks, partner column s = a(r) + j for j = SUB-1 .. 0; the exponent
    # sum over (s, r] grows by one gathered row per step (additions only)
    b_seg = tl.zeros([BT, BK], dtype=tl.float32)
    for jj in range(0, SUB):
        j = SUB - 1 - jj
        b_seg += load_rows(g, t0, tl.where(off >= j + 1, blk * SUB + j + 1, -1), L, i_h, H, o_k, K)
        s_row = blk * SUB + j
        b_ys = load_operand(q, k, b, t0, s_row, L, i_h, H, o_k, K, scale, WHICH, B_MODE)
        m_col = tl.load(p_M + o_t * BT + s_row)
        b_p += tl.where((off >= j)[:, None], m_col[:, None] * b_ys * tl.exp(b_seg), 0.0)
    return b_p


@triton.jit
def decay_apply_t(M, p_M, b_x, b_g, b_gn, q, k, g, b, t0, L, i_h, scale, o_k,
                  H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                  SUB: tl.constexpr, WHICH: tl.constexpr, B_MODE: tl.constexpr, PREC: tl.constexpr):
    """``sum_r M_rs x_r exp(G_r - G_s)`` for channel decays; M as in :func:`decay_apply`."""
    o_t = tl.arange(0, BT)
    off = o_t % SUB
    blk = o_t // SUB
    b_gloc = block_cumsum(tl.where((off == 0)[:, None], 0.0, b_g), BT, SUB, BK, False)
    b_left = b_x * tl.exp(b_gloc)
    b_p = tl.zeros([BT, BK], dtype=tl.float32)
    for i_b in range(1, BT // SUB):
        a_i = i_b * SUB
        b_sum = tl.cumsum(tl.where((o_t + 1 <= a_i)[:, None], b_gn, 0.0), axis=0, reverse=True)
        b_Mi = tl.where((blk == i_b)[:, None], M, 0.0)
        b_part = tl.dot(tl.trans(b_Mi), b_left, input_precision=PREC)
        b_p += tl.where((o_t < a_i)[:, None], b_part * tl.exp(b_sum), 0.0)
    # diagonal sub-blocks: s is the tile row, its partner r = a(s) + j for j = 0 .. SUB-1; the
    # exponent sum over (s, r] grows by one gathered row per step
    b_seg = tl.zeros([BT, BK], dtype=tl.float32)
    for j in range(0, SUB):
        r_row = blk * SUB + j
        b_seg += load_rows(g, t0, tl.where(off < j, r_row, -1), L, i_h, H, o_k, K)
        b_xr = load_operand(q, k, b, t0, r_row, L, i_h, H, o_k, K, scale, WHICH, B_MODE)
        m_row = tl.load(p_M + r_row * BT + o_t)
        b_p += tl.where((off <= j)[:, None], m_row[:, None] * b_xr * tl.exp(b_seg), 0.0)
    return b_p
