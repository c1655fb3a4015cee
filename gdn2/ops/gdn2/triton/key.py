"""Key side of the backward (spec section 5): the gradients of q, k, b and g.

``chunk_bwd_value_kernel`` leaves, per chunk and key head, dQ_γ, dY, dK_tail [BT, K], dG_C [K],
dAqk and the value part of dA [BT, BT] in the scratch buffer. Then:
  ``chunk_bwd_dt_kernel``   dA += dY Ē^T and dT = -(A^T dA A^T) strictly below the diagonal;
                            dAqk masked to the lower triangle; both written back in place.
  ``chunk_bwd_key_kernel``  per block of key columns, walks the chunk's 16-row sub-blocks:
                            apply(dAqk, k), apply_t(dAqk, q), apply(dT, k), apply_t(dT, e) and
                            A^T dY, then dq, dk, db and dg.
with ``apply(M, y)_r = sum_s M_rs y_s exp(G_r - G_s)`` and ``apply_t(M, x)_s = sum_r M_rs x_r
exp(G_r - G_s)``. Every product between two sub-blocks is a [16, 16] x [16, BK] matrix product
of tiles loaded from the scratch buffer: no tensor-core work on masked rows (the earlier design
multiplied masked [64, BK] tiles, four times the work), and a program holds [16, BK] tiles.

Numerics as in ``intra.py``: every exponent is a sum of log-decays formed by additions. For r in
sub-block i and s in an earlier sub-block j the exponent sum over (s, r] splits at the end of
block j and the start of block i into three non-positive sums: inside j, the blocks between,
inside i. Each sub-block's own pairs are products of centred operands where the decay's span
allows (``diag_span``, as in ``intra.py``), else one pairwise-decay tile.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import (FORM_REST, FORM_WALK, FORM_WHOLE, GATE_CHANNEL, GATE_NONE, GATE_SCALAR, GATE_ZERO, apply_erase,
                     chunk_gates, chunk_rows, load_rows, load_scalar_rows, mma, record_if_bad, sequence_scales,
                     walk_needed)
from .decay import centred_factors, in_block_decay


@triton.jit
def gate_rows(g, t0, rows, L, i_h, H: tl.constexpr, o_k, K: tl.constexpr, N: tl.constexpr, BK: tl.constexpr,
              G_MODE: tl.constexpr):
    """Log-decays of rows ``t0 + rows`` as a float32 [N, BK] tile: a per-head gate broadcast over
    the columns, zeros without a decay or outside ``0 <= rows < L``."""
    if G_MODE == GATE_CHANNEL:
        x = load_rows(g, t0, rows, L, i_h, H, o_k, K)
    elif G_MODE == GATE_SCALAR:
        x = load_scalar_rows(g, t0, rows, L, i_h, H)[:, None] + tl.zeros([N, BK], dtype=tl.float32)
    else:
        x = tl.zeros([N, BK], dtype=tl.float32)
    return x


@triton.jit
def next_gate_rows(g, t0, a, L, i_h, H: tl.constexpr, o_k, K: tl.constexpr, SUB: tl.constexpr, BK: tl.constexpr,
                   G_MODE: tl.constexpr):
    """Log-decay of the next row inside the sub-block starting at ``a`` (zero on its last row), so
    a reverse cumulative sum gives the sum over (s, end of block]."""
    o_s = tl.arange(0, SUB)
    return tl.where((o_s + 1 < SUB)[:, None], gate_rows(g, t0, a + o_s + 1, L, i_h, H, o_k, K, SUB, BK, G_MODE), 0.0)


@triton.jit
def block_sum(b_bs, o_b, lo, hi):
    """Sum of the per-block log-decay sums of blocks lo <= j < hi (additions only), [BK]."""
    return tl.sum(tl.where(((o_b >= lo) & (o_b < hi))[:, None], b_bs, 0.0), axis=0)


@triton.jit
def chunk_bwd_dt_kernel(
    k, g, b, A, scratch, chunk_start, chunk_end,
    H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, SCRATCH: tl.constexpr,
    G_MODE: tl.constexpr, B_MODE: tl.constexpr, PREC: tl.constexpr,
):
    """dT = -(A^T dA A^T) below the diagonal, with dA = dR Z^T (from the value kernel) + dY Ē^T."""
    i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1)
    t0, L = chunk_rows(chunk_start, chunk_end, i_c)
    o_t = tl.arange(0, BT)
    o_c = tl.arange(0, BT)
    p_scr = scratch + (i_c * H + i_h) * SCRATCH
    p_sq = p_scr + (3 * BT + 1) * K + o_t[:, None] * BT + o_c[None, :]
    tl.store(p_sq, tl.where(o_t[:, None] >= o_c[None, :], tl.load(p_sq), 0.0))
    if B_MODE != GATE_ZERO:
        b_dA = tl.load(p_sq + BT * BT)
        for i_k in range(0, tl.cdiv(K, BK)):
            o_k = i_k * BK + tl.arange(0, BK)
            b_k, b_e, b_gam, b_tail, b_dec = chunk_gates(g, b, k, t0, o_t, L, i_h, H, o_k, K, BT, BK, G_MODE, B_MODE)
            b_dY = tl.load(p_scr + BT * K + o_t[:, None] * K + o_k[None, :], mask=(o_k < K)[None, :], other=0.0)
            b_dA += mma(b_dY, tl.trans(b_e * b_gam), PREC)
        b_A = load_rows(A, t0, o_t, L, i_h, H, o_c, BT)
        b_dT = mma(mma(tl.trans(b_A), b_dA, PREC), tl.trans(b_A), PREC)
        tl.store(p_sq + BT * BT, tl.where(o_t[:, None] > o_c[None, :], -b_dT, 0.0))


@triton.jit
def key_gradients(b_pq, b_pk, b_pe, b_pke, b_ady, b_qs, b_k, b_e, b_gam, b_tl, b_dQg, b_dKt, b_carry,
                  b, dq, dk, dg, db, t0, rows, m_rk, L, i_h, i_k, o_k, scale, unsc, flag,
                  H: tl.constexpr, K: tl.constexpr, NK: tl.constexpr, G_MODE: tl.constexpr, B_MODE: tl.constexpr,
                  GUARD: tl.constexpr):
    """dq, dk, db and dg of rows ``rows`` from the decayed products (pq, pk, pe, pke: apply and
    apply_t of dAqk and dT; ady: A^T dY) and the state-side tiles dQ_γ, dK_tail. Returns the
    carry of dg (a reverse cumulative sum) to the rows before these. ``m_rk``: the rows' mask,
    made by the caller at the top of its row block. ``unsc``: the inverse of the scratch's scale
    (1.0 unscaled), applied to what is stored; the carry stays in the scratch's units."""
    b_dk = b_pk + b_dKt * b_tl
    b_dE = b_pe + b_ady * b_gam                                          # dĒ ⊙ γ + the decayed product
    p_out = (t0 + rows[:, None]) * H * K + i_h * K + o_k[None, :]
    if G_MODE != GATE_NONE:
        b_dG = b_qs * b_pq - b_k * b_pk + b_dQg * b_qs * b_gam - b_dKt * b_k * b_tl
        if B_MODE != GATE_ZERO:
            b_dG += b_e * b_dE - b_k * b_pke
        b_dg = tl.cumsum(b_dG, axis=0, reverse=True) + b_carry[None, :]
        b_carry += tl.sum(b_dG, axis=0)
        if G_MODE == GATE_CHANNEL:
            tl.store(dg + p_out, b_dg * unsc, mask=m_rk)
        else:
            tl.store(dg + ((t0 + rows) * H + i_h) * NK + i_k, tl.sum(b_dg, axis=1) * unsc, mask=rows < L)
    tl.store(dq + p_out, ((b_pq + b_dQg * b_gam) * (scale * unsc)).to(dq.dtype.element_ty), mask=m_rk)
    if B_MODE != GATE_ZERO:
        b_dk += b_pke
        if B_MODE == GATE_CHANNEL:
            b_dk += b_dE * load_rows(b, t0, rows, L, i_h, H, o_k, K)
            tl.store(db + p_out, b_dE * b_k * unsc, mask=m_rk)
        elif B_MODE == GATE_SCALAR:
            b_dk += b_dE * load_scalar_rows(b, t0, rows, L, i_h, H)[:, None]
            tl.store(db + ((t0 + rows) * H + i_h) * NK + i_k, tl.sum(b_dE * b_k, axis=1) * unsc, mask=rows < L)
        else:
            b_dk += b_dE
    tl.store(dk + p_out, (b_dk * unsc).to(dk.dtype.element_ty), mask=m_rk)
    # every product reaches dk or dq (dE through dk: e = b * k), the carry dg's next rows
    record_if_bad(flag, b_dk + b_pq, GUARD)
    return b_carry


@triton.jit
def key_carry(k, g, b_gw, p_scr, t0, o_t, L, i_h, o_k, m_k, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr,
              BK: tl.constexpr, SUB: tl.constexpr, G_MODE: tl.constexpr):
    """From the chunk's log-decays ``b_gw`` [BT, BK]: per-block sums of them [NB, BK], the whole
    chunk's k, dK_tail and exp(G_C - G_r) (sum over (r, last row]) [BT, BK], and the carry of dg
    from the state-side terms of G_C, which reach every row's dg. The tiles serve the carry and
    the whole-chunk form (unused loads are dropped where neither needs them)."""
    NB: tl.constexpr = BT // SUB
    b_bs = tl.sum(tl.reshape(b_gw, (NB, SUB, BK)), axis=1)
    b_kall = load_rows(k, t0, o_t, L, i_h, H, o_k, K)
    b_dkt = tl.load(p_scr + 2 * BT * K + o_t[:, None] * K + o_k[None, :], mask=m_k[None, :], other=0.0)
    b_tail = tl.exp(tl.cumsum(gate_rows(g, t0, o_t + 1, L, i_h, H, o_k, K, BT, BK, G_MODE), axis=0, reverse=True))
    b_carry = tl.zeros([BK], dtype=tl.float32)
    if G_MODE != GATE_NONE:
        b_dGC = tl.load(p_scr + 3 * BT * K + o_k, mask=m_k, other=0.0)
        b_carry = b_dGC * tl.exp(tl.sum(b_bs, axis=0)) + tl.sum(b_dkt * b_kall * b_tail, axis=0)
    return b_bs, b_kall, b_dkt, b_tail, b_carry


@triton.jit
def key_whole(q, b, A, p_scr, dq, dk, dg, db, t0, o_t, L, i_h, i_k, o_k, m_k, scale, unsc, flag, b_gw, b_lw, b_rw,
              b_kall, b_dkt, b_tail, b_carry, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr,
              BK: tl.constexpr, NK: tl.constexpr, G_MODE: tl.constexpr, B_MODE: tl.constexpr, PREC: tl.constexpr,
              GUARD: tl.constexpr):
    """The whole-chunk form: every pair of the chunk at once as [BT, BT] x [BT, BK] products of
    operands centred on each channel's middle decay (``b_lw``, ``b_rw``), for a key tile whose
    decay span over the chunk allows them."""
    ERASE: tl.constexpr = B_MODE != GATE_ZERO
    p_dy = p_scr + BT * K
    p_dqk = p_scr + (3 * BT + 1) * K      # dAqk [BT, BT], lower triangle
    p_dt = p_dqk + BT * BT                # dT [BT, BT], strictly lower
    o_c = tl.arange(0, BT)
    p_sq = o_t[:, None] * BT + o_c[None, :]
    b_k = b_kall
    b_qs = load_rows(q, t0, o_t, L, i_h, H, o_k, K) * scale
    b_e = apply_erase(b_k, b, t0, o_t, L, i_h, H, o_k, K, B_MODE)
    b_dqk = tl.load(p_dqk + p_sq)
    b_kc = b_k * b_rw
    b_pq = b_lw * mma(b_dqk, b_kc, PREC)
    b_pk = b_rw * mma(tl.trans(b_dqk), b_qs * b_lw, PREC)
    b_pe = tl.zeros([BT, BK], dtype=tl.float32)
    b_pke = tl.zeros([BT, BK], dtype=tl.float32)
    b_ady = tl.zeros([BT, BK], dtype=tl.float32)
    if ERASE:
        b_dt = tl.load(p_dt + p_sq)
        b_pe = b_lw * mma(b_dt, b_kc, PREC)
        b_pke = b_rw * mma(tl.trans(b_dt), b_e * b_lw, PREC)
        b_ady = mma(tl.trans(load_rows(A, t0, o_t, L, i_h, H, o_c, BT)),
                    tl.load(p_dy + o_t[:, None] * K + o_k[None, :], mask=m_k[None, :], other=0.0), PREC)
    # exp(G_r): the sum over [first row, r], additions only
    b_gam = tl.exp(tl.cumsum(b_gw, axis=0))
    key_gradients(b_pq, b_pk, b_pe, b_pke, b_ady, b_qs, b_k, b_e, b_gam, b_tail,
                  tl.load(p_scr + o_t[:, None] * K + o_k[None, :], mask=m_k[None, :], other=0.0), b_dkt, b_carry,
                  b, dq, dk, dg, db, t0, o_t, (o_t < L)[:, None] & m_k[None, :], L, i_h, i_k, o_k, scale, unsc,
                  flag, H, K, NK, G_MODE, B_MODE, GUARD)


@triton.jit
def key_walk(q, k, g, b, A, p_scr, dq, dk, dg, db, t0, L, i_h, i_k, o_k, m_k, scale, unsc, flag, b_bs, b_carry,
             lower, below, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, SUB: tl.constexpr,
             NK: tl.constexpr, G_MODE: tl.constexpr, B_MODE: tl.constexpr, PREC: tl.constexpr,
             DIAG_SPAN: tl.constexpr, GUARD: tl.constexpr):
    """The sub-block walk, from the last sub-block to the first so that dg (a reverse cumulative
    sum over the chunk) is carried, not stored twice. ``lower``, ``below``: [SUB, SUB, 1] masks of
    r >= s and r > s."""
    NB: tl.constexpr = BT // SUB
    ERASE: tl.constexpr = B_MODE != GATE_ZERO
    o_s = tl.arange(0, SUB)
    o_b = tl.arange(0, NB)
    p_dy = p_scr + BT * K
    p_dkt = p_scr + 2 * BT * K
    p_dqk = p_scr + (3 * BT + 1) * K      # dAqk [BT, BT], lower triangle
    p_dt = p_dqk + BT * BT                # dT [BT, BT], strictly lower
    for i_r in range(0, NB):
        i = NB - 1 - i_r
        rows = i * SUB + o_s
        m_rk = (rows < L)[:, None] & m_k[None, :]
        b_g = gate_rows(g, t0, rows, L, i_h, H, o_k, K, SUB, BK, G_MODE)
        b_lc = tl.cumsum(b_g, axis=0)                                       # sum over [a_i, r]
        b_lrx = tl.cumsum(next_gate_rows(g, t0, i * SUB, L, i_h, H, o_k, K, SUB, BK, G_MODE),
                          axis=0, reverse=True)                             # sum over (s, end of block i]
        b_gam = tl.exp(block_sum(b_bs, o_b, 0, i)[None, :] + b_lc)           # exp(G_r)
        b_tl = tl.exp(b_lrx + block_sum(b_bs, o_b, i + 1, NB)[None, :])     # exp(G_C - G_r)
        b_k = load_rows(k, t0, rows, L, i_h, H, o_k, K)
        b_qs = load_rows(q, t0, rows, L, i_h, H, o_k, K) * scale
        b_e = apply_erase(b_k, b, t0, rows, L, i_h, H, o_k, K, B_MODE)

        # pairs inside block i: where the decay's span allows (``diag_span``), products of centred
        # operands; else one pairwise-decay tile, exponent a cumulative sum down r of g_r (r > s)
        p_ii = rows[:, None] * BT + rows[None, :]
        b_dqk = tl.load(p_dqk + p_ii)
        b_dt = tl.load(p_dt + p_ii) if ERASE else b_dqk
        b_pe = tl.zeros([SUB, BK], dtype=tl.float32)
        b_pke = tl.zeros([SUB, BK], dtype=tl.float32)
        b_lft, b_rgt, b_span = centred_factors(in_block_decay(b_g))
        if b_span <= DIAG_SPAN:
            b_kc = b_k * b_rgt
            b_pq = b_lft * mma(b_dqk, b_kc, PREC)
            b_pk = b_rgt * mma(tl.trans(b_dqk), b_qs * b_lft, PREC)
            if ERASE:
                b_pe = b_lft * mma(b_dt, b_kc, PREC)
                b_pke = b_rgt * mma(tl.trans(b_dt), b_e * b_lft, PREC)
        else:
            b_D = tl.where(lower, tl.exp(tl.cumsum(tl.where(below, b_g[:, None, :], 0.0), axis=0)), 0.0)
            b_M = b_dqk[:, :, None] * b_D
            b_pq = tl.sum(b_M * b_k[None, :, :], axis=1)
            b_pk = tl.sum(b_M * b_qs[:, None, :], axis=0)
            if ERASE:
                b_M = b_dt[:, :, None] * b_D
                b_pe = tl.sum(b_M * b_k[None, :, :], axis=1)
                b_pke = tl.sum(b_M * b_e[:, None, :], axis=0)
        b_ady = tl.zeros([SUB, BK], dtype=tl.float32)
        if ERASE:
            b_ady = mma(tl.trans(load_rows(A, t0, rows, L, i_h, H, rows, BT)),
                        tl.load(p_dy + rows[:, None] * K + o_k[None, :], mask=m_k[None, :], other=0.0), PREC)

        # earlier blocks j < i (rows of i): exp(G_r - G_s) = exp(sum in i) * exp(sum in j + between)
        b_aq = tl.zeros([SUB, BK], dtype=tl.float32)
        b_ae = tl.zeros([SUB, BK], dtype=tl.float32)
        b_mid = tl.zeros([BK], dtype=tl.float32)
        for i_j in range(0, i):
            j = i - 1 - i_j
            rj = j * SUB + o_s
            b_col = tl.exp(tl.cumsum(next_gate_rows(g, t0, j * SUB, L, i_h, H, o_k, K, SUB, BK, G_MODE),
                                     axis=0, reverse=True) + b_mid[None, :])
            b_right = load_rows(k, t0, rj, L, i_h, H, o_k, K) * b_col
            p_ij = rows[:, None] * BT + rj[None, :]
            b_aq += mma(tl.load(p_dqk + p_ij), b_right, PREC)
            if ERASE:
                b_ae += mma(tl.load(p_dt + p_ij), b_right, PREC)
            b_mid += block_sum(b_bs, o_b, j, j + 1)
        b_pq += b_aq * tl.exp(b_lc)
        b_pe += b_ae * tl.exp(b_lc)

        # later blocks j > i (columns of i): exp(G_r - G_s) = exp(sum in i + between) * exp(sum in j)
        b_ak = tl.zeros([SUB, BK], dtype=tl.float32)
        b_ake = tl.zeros([SUB, BK], dtype=tl.float32)
        b_mid = tl.zeros([BK], dtype=tl.float32)
        for j in range(i + 1, NB):
            rj = j * SUB + o_s
            b_left = tl.exp(tl.cumsum(gate_rows(g, t0, rj, L, i_h, H, o_k, K, SUB, BK, G_MODE), axis=0)
                            + b_mid[None, :])
            p_ji = rj[:, None] * BT + rows[None, :]
            b_ak += mma(tl.trans(tl.load(p_dqk + p_ji)),
                        load_rows(q, t0, rj, L, i_h, H, o_k, K) * scale * b_left, PREC)
            if ERASE:
                b_kj = load_rows(k, t0, rj, L, i_h, H, o_k, K)
                b_ej = apply_erase(b_kj, b, t0, rj, L, i_h, H, o_k, K, B_MODE)
                b_ake += mma(tl.trans(tl.load(p_dt + p_ji)), b_ej * b_left, PREC)
                b_ady += mma(tl.trans(load_rows(A, t0, rj, L, i_h, H, rows, BT)),
                             tl.load(p_dy + rj[:, None] * K + o_k[None, :], mask=m_k[None, :], other=0.0), PREC)
            b_mid += block_sum(b_bs, o_b, j, j + 1)
        b_pk += b_ak * tl.exp(b_lrx)
        b_pke += b_ake * tl.exp(b_lrx)

        # gradients of the chunk's inputs from the products and the state-side tiles
        p_rk = rows[:, None] * K + o_k[None, :]
        b_carry = key_gradients(b_pq, b_pk, b_pe, b_pke, b_ady, b_qs, b_k, b_e, b_gam, b_tl,
                                tl.load(p_scr + p_rk, mask=m_k[None, :], other=0.0),
                                tl.load(p_dkt + p_rk, mask=m_k[None, :], other=0.0), b_carry,
                                b, dq, dk, dg, db, t0, rows, m_rk, L, i_h, i_k, o_k, scale, unsc, flag, H, K, NK,
                                G_MODE, B_MODE, GUARD)


@triton.jit
def chunk_bwd_key_kernel(
    q, k, g, b, A, scratch, dq, dk, dg, db, chunk_start, chunk_end, scale,
    H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, SUB: tl.constexpr,
    SCRATCH: tl.constexpr, G_MODE: tl.constexpr, B_MODE: tl.constexpr, PREC: tl.constexpr,
    DIAG_SPAN: tl.constexpr, FORM: tl.constexpr = 0,
    chunk_seq=None, doscale=None, zscale=None, flag=None, HV: tl.constexpr = 1, GQP: tl.constexpr = 1,
    GUARD: tl.constexpr = 0,
):
    """One chunk, key head and block of key columns: the sub-block walk, or the whole-chunk form
    where the tile's decay span over the chunk allows (``diag_span``; FORM, see common). Per-head
    gates write one partial sum per column block ([T, H, NK]; the launcher adds them). ``GUARD``
    as in ``chunk_bwd_value_kernel``: the scratch holds its values times the sequence's sd * sz,
    unscaled as they are stored; flags in ``flag`` per chunk and key head. GUARD 3: the scaled
    scratch at ``PREC`` for every chunk, nothing flagged (``backward.KEY_WALK_PRODUCTS``)."""
    i_c, i_h, i_k = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    flag = flag + i_c * H + i_h if GUARD != 0 else flag
    if GUARD == 2:
        if tl.load(flag) == 0:
            return
    sd, sz = sequence_scales(chunk_seq, doscale, zscale, i_c, i_h, HV, HV // H, GQP, GUARD)
    unsc = (1.0 / sd) * (1.0 / sz)   # exact, and no overflow of sd * sz
    t0, L = chunk_rows(chunk_start, chunk_end, i_c)
    NK: tl.constexpr = (K + BK - 1) // BK
    o_t = tl.arange(0, BT)
    o_k = i_k * BK + tl.arange(0, BK)
    m_k = o_k < K
    p_scr = scratch + (i_c * H + i_h) * SCRATCH
    # the walk's triangle masks, made here before any load: made inside the walk they cost it 56
    # bytes more of spill stores (ptxas, sm_90a, 64 columns, 4 warps)
    o_s = tl.arange(0, SUB)
    lower = (o_s[:, None] >= o_s[None, :])[:, :, None]
    below = (o_s[:, None] > o_s[None, :])[:, :, None]
    b_gw = gate_rows(g, t0, o_t, L, i_h, H, o_k, K, BT, BK, G_MODE)
    walk = True   # the walk alone (FORM_WALK) needs no branch
    if FORM != FORM_WALK:
        # the form is decided from the log-decays alone, before the carry's loads, so a split launch's
        # programs that leave their tile to the other launch return at once (with the carry loaded
        # first, the walk launch after whole-form tiles everywhere cost 0.34 ms at 2x8K, H100)
        b_wide = centred_factors(in_block_decay(b_gw))[2]
        walk = walk_needed(b_wide, DIAG_SPAN, FORM)
        if FORM != FORM_REST:
            if b_wide <= DIAG_SPAN:
                b_bs, b_kall, b_dkt, b_tail, b_carry = key_carry(k, g, b_gw, p_scr, t0, o_t, L, i_h, o_k, m_k, H, K,
                                                                 BT, BK, SUB, G_MODE)
                # the factors made again after the carry's loads (held across them: 188 bytes more
                # of spill stores at 32 columns, 4 warps; ptxas, sm_90a, Triton 3.7)
                b_lw, b_rw, _ = centred_factors(in_block_decay(b_gw))
                key_whole(q, b, A, p_scr, dq, dk, dg, db, t0, o_t, L, i_h, i_k, o_k, m_k, scale, unsc, flag, b_gw,
                          b_lw, b_rw, b_kall, b_dkt, b_tail, b_carry, H, K, BT, BK, NK, G_MODE, B_MODE, PREC, GUARD)
    if FORM != FORM_WHOLE:
        if walk:
            b_bs, b_kall, b_dkt, b_tail, b_carry = key_carry(k, g, b_gw, p_scr, t0, o_t, L, i_h, o_k, m_k, H, K, BT,
                                                             BK, SUB, G_MODE)
            key_walk(q, k, g, b, A, p_scr, dq, dk, dg, db, t0, L, i_h, i_k, o_k, m_k, scale, unsc, flag, b_bs,
                     b_carry, lower, below, H, K, BT, BK, SUB, NK, G_MODE, B_MODE, PREC, DIAG_SPAN, GUARD)
