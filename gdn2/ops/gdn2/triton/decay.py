"""Decay helpers of the intra-chunk stage: the anchor factors of the off-diagonal sub-blocks and
the centred factors of the diagonal ones (numerics in ``intra.py``; the backward's sub-block
products are in ``key.py``)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def anchor_factor(b_gn, a_i, BT: tl.constexpr):
    """``exp(sum over (s, a_i] of g)`` for rows ``s < a_i``, zero elsewhere; ``b_gn`` holds g of
    the next row."""
    o_t = tl.arange(0, BT)
    b_sum = tl.cumsum(tl.where((o_t + 1 <= a_i)[:, None], b_gn, 0.0), axis=0, reverse=True)
    return tl.where((o_t < a_i)[:, None], tl.exp(b_sum), 0.0)


@triton.jit
def in_block_decay(b_g):
    """Cumulative log-decay of a [SUB, BK] tile of one sub-block's ``b_g`` from its first row,
    *without* that row's own g: the exponent of row r against the block's anchor, sum over (a, r].
    No pair inside the block decays by the first row's g; left in, a -1e4 or -inf there would sit
    in every entry and swamp the differences the centred factors take."""
    o_s = tl.arange(0, b_g.shape[0])
    return tl.cumsum(tl.where((o_s > 0)[:, None], b_g, 0.0), axis=0)


@triton.jit
def centred_factors(b_lc):
    """``exp(b_lc - c)``, ``exp(c - b_lc)`` and the largest column span for a tile of
    ``in_block_decay``, c the middle of each column's range: the first factor at row r times the
    second at row s is the pair's decay exp(sum of g over (s, r]), each factor within
    exp(span / 2) of 1 (``diag_span`` in ``common.py`` bounds the span)."""
    b_hi = tl.max(b_lc, axis=0)
    b_lo = tl.min(b_lc, axis=0)
    b_c = (b_hi + b_lo) * 0.5
    return tl.exp(b_lc - b_c[None, :]), tl.exp(b_c[None, :] - b_lc), tl.max(b_hi - b_lo, axis=0)
