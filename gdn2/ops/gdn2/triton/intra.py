"""Intra-chunk stage: the decayed products ``T`` (erase side) and ``Aqk`` (query side) of one
chunk, and ``A = (I + T)^-1``. PyTorch reference: ``chunk.decayed_products`` and the solve in
``chunk.chunk_step``.

Numerics: every exponent is an interval sum of log-decays formed by additions only (never a
difference of two cumulative sums), so per-token log-decays of -1e4 cost no precision:
  rows:     sum over (a(r), r]   with a(r) the first row of r's 16-row sub-block,
  columns:  sum over (s, a_i]    for s in sub-blocks before block i,
  diagonal: sum over (s, r]      inside one sub-block,
except the diagonal sub-blocks whose decay spans at most ``diag_span``: there the pair's decay is
exp(G_r - c) exp(c - G_s) with in-block sums centred on c, a difference whose rounding the bound
keeps at the products' own level.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import (FORM_REST, FORM_WALK, FORM_WHOLE, GATE_CHANNEL, GATE_SCALAR, GATE_ZERO, MIN_TILE, WHOLE_FORMS,
                     apply_erase, cdiv, chunk_gates, chunk_rows, diag_span, load_rows, load_scalar_rows, mma,
                     register_cap, walk_needed)
from .decay import anchor_factor, centred_factors, in_block_decay


@triton.jit
def gated_tile(q, k, g, b, qg, kt, y, dec, b_A, t0, o_t, L, i_c, i_h, o_k, scale,
               H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
               G_MODE: tl.constexpr, B_MODE: tl.constexpr, PREC: tl.constexpr):
    """The sequential stages' gated operands for key columns ``o_k`` of one chunk: Q_γ, K_tail,
    Y = A Ē and exp(G_C) (``b_A`` = A of the chunk, ignored without erase)."""
    b_k, b_e, b_gam, b_tail, b_dec = chunk_gates(g, b, k, t0, o_t, L, i_h, H, o_k, K, BT, BK, G_MODE, B_MODE)
    p_tk = (t0 + o_t[:, None]) * H * K + i_h * K + o_k[None, :]
    m_tk = (o_t < L)[:, None] & (o_k < K)[None, :]
    tl.store(qg + p_tk, load_rows(q, t0, o_t, L, i_h, H, o_k, K) * scale * b_gam, mask=m_tk)
    tl.store(kt + p_tk, b_k * b_tail, mask=m_tk)
    tl.store(dec + (i_c * H + i_h) * K + o_k, b_dec, mask=o_k < K)
    if B_MODE != GATE_ZERO:
        tl.store(y + p_tk, mma(b_A, b_e * b_gam, PREC), mask=m_tk)


@triton.jit
def chunk_span(g, t0, o_t, L, i_h, H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr):
    """Largest per-channel span of the log-decays over the chunk, sums over (first row, r]."""
    b_wide = tl.zeros([], dtype=tl.float32)
    for i_k in range(0, tl.cdiv(K, BK)):
        b_G = in_block_decay(load_rows(g, t0, o_t, L, i_h, H, i_k * BK + tl.arange(0, BK), K))
        b_wide = tl.maximum(b_wide, tl.max(tl.max(b_G, axis=0) - tl.min(b_G, axis=0), axis=0))
    return b_wide


@triton.jit
def whole_products(q, k, g, b, A, Aqk, t0, o_t, o_c, L, i_h, p_row, m_row, scale,
                   H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                   B_MODE: tl.constexpr, PREC: tl.constexpr, KEEP_T: tl.constexpr = False):
    """T and Aqk of a whole chunk whose decay span allows centred operands (the whole-chunk form).
    Returns T, unmasked (``invert_by_halving`` reads only entries below the diagonal); with ``KEEP_T``
    it is not stored (the caller inverts it in registers)."""
    ERASE: tl.constexpr = B_MODE != GATE_ZERO
    b_T = tl.zeros([BT, BT], dtype=tl.float32)
    b_Aqk = tl.zeros([BT, BT], dtype=tl.float32)
    for i_k in range(0, tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        b_k = load_rows(k, t0, o_t, L, i_h, H, o_k, K)
        b_lft, b_rgt, _ = centred_factors(in_block_decay(load_rows(g, t0, o_t, L, i_h, H, o_k, K)))
        b_kc = tl.trans(b_k * b_rgt)
        b_Aqk += mma(load_rows(q, t0, o_t, L, i_h, H, o_k, K) * scale * b_lft, b_kc, PREC)
        if ERASE:
            b_e = apply_erase(b_k, b, t0, o_t, L, i_h, H, o_k, K, B_MODE)
            b_T += mma(b_e * b_lft, b_kc, PREC)
    store_products(A, Aqk, p_row, m_row, b_T, b_Aqk, o_t, o_c, ERASE and not KEEP_T)
    return b_T


@triton.jit
def walk_products(q, k, g, b, A, Aqk, t0, o_t, o_c, L, i_h, scale,
                  H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, SUB: tl.constexpr,
                  B_MODE: tl.constexpr, PREC: tl.constexpr, DIAG_SPAN: tl.constexpr):
    """T and Aqk of a chunk by the sub-block walk (any decay span)."""
    ERASE: tl.constexpr = B_MODE != GATE_ZERO
    o_s = tl.arange(0, SUB)
    # one block of rows i at a time, every K tile loaded once for both parts:
    # - pairs with earlier blocks as [SUB, BK] x [BK, BT] products through the anchor a_i = first
    #   row of block i (rows: exp of the sum over (a_i, r]; columns s < a_i: exp of the sum over
    #   (s, a_i]); a [BT, BK] left operand masked to one block's rows would spend four times
    #   the tensor-core work;
    # - pairs inside the block: where the decay's span allows (``diag_span``), one product of
    #   centred operands; else a pairwise-decay tile whose exponent for (r, s) is the sum over
    #   (s, r], a cumulative sum down r of g_r masked to r > s (additions only)
    lower = (o_s[:, None] >= o_s[None, :])[:, :, None]
    below = (o_s[:, None] > o_s[None, :])[:, :, None]
    for i_b in range(0, BT // SUB):
        rows = i_b * SUB + o_s
        b_aq = tl.zeros([SUB, BT], dtype=tl.float32)
        b_at = tl.zeros([SUB, BT], dtype=tl.float32)
        b_dqk = tl.zeros([SUB, SUB], dtype=tl.float32)
        b_dt = tl.zeros([SUB, SUB], dtype=tl.float32)
        for i_k in range(0, tl.cdiv(K, BK)):
            o_k = i_k * BK + tl.arange(0, BK)
            b_g = load_rows(g, t0, rows, L, i_h, H, o_k, K)
            b_kr = load_rows(k, t0, rows, L, i_h, H, o_k, K)
            b_qr = load_rows(q, t0, rows, L, i_h, H, o_k, K) * scale
            b_e = apply_erase(b_kr, b, t0, rows, L, i_h, H, o_k, K, B_MODE)
            b_lc = in_block_decay(b_g)
            if i_b > 0:
                b_right = load_rows(k, t0, o_t, L, i_h, H, o_k, K) \
                    * anchor_factor(load_rows(g, t0, o_t + 1, L, i_h, H, o_k, K), i_b * SUB, BT)
                b_fac = tl.exp(b_lc)
                b_aq += mma(b_qr * b_fac, tl.trans(b_right), PREC)
                if ERASE:
                    b_at += mma(b_e * b_fac, tl.trans(b_right), PREC)
            b_lft, b_rgt, b_span = centred_factors(b_lc)
            if b_span <= DIAG_SPAN:
                # one product of centred operands (masked to the lower triangle when stored)
                b_kc = tl.trans(b_kr * b_rgt)
                b_dqk += mma(b_qr * b_lft, b_kc, PREC)
                if ERASE:
                    b_dt += mma(b_e * b_lft, b_kc, PREC)
            else:
                b_D = tl.where(lower, tl.exp(tl.cumsum(tl.where(below, b_g[:, None, :], 0.0), axis=0)), 0.0)
                b_kD = b_kr[None, :, :] * b_D
                b_dqk += tl.sum(b_qr[:, None, :] * b_kD, axis=2)
                if ERASE:
                    b_dt += tl.sum(b_e[:, None, :] * b_kD, axis=2)
        # the rows' columns outside the block (zero right of it), then the block itself
        p_blk = (t0 + rows[:, None]) * H * BT + i_h * BT + o_c[None, :]
        m_out = (rows < L)[:, None] & (o_c // SUB != i_b)[None, :]
        p_dia = (t0 + rows[:, None]) * H * BT + i_h * BT + rows[None, :]
        m_dia = (rows < L)[:, None]
        tl.store(Aqk + p_blk, b_aq, mask=m_out)
        tl.store(Aqk + p_dia, tl.where(o_s[:, None] >= o_s[None, :], b_dqk, 0.0), mask=m_dia)
        if ERASE:
            tl.store(A + p_blk, b_at, mask=m_out)
            tl.store(A + p_dia, tl.where(o_s[:, None] > o_s[None, :], b_dt, 0.0), mask=m_dia)


@triton.jit
def store_products(A, Aqk, p_row, m_row, b_T, b_Aqk, o_t, o_c, ERASE: tl.constexpr):
    """Aqk (lower triangle with the diagonal) and T (strictly lower) of a whole chunk."""
    tl.store(Aqk + p_row, tl.where(o_t[:, None] >= o_c[None, :], b_Aqk, 0.0), mask=m_row)
    if ERASE:
        tl.store(A + p_row, tl.where(o_t[:, None] > o_c[None, :], b_T, 0.0), mask=m_row)


@triton.jit
def invert_by_halving(b_T, BT: tl.constexpr, PREC: tl.constexpr):
    """(I + T)^-1 of a strictly lower ``[BT, BT]`` T (only its entries below the diagonal are read),
    blocks of size s merged into blocks of 2s:
    for [[X_a, 0], [C, X_b]] with X_a, X_b the inverses of the two halves' diagonal blocks, the
    inverse is [[X_a, 0], [-X_b C X_a, X_b]], so with X block diagonal of size s and C the
    lower-left s-blocks of T, X <- X - X C X. Every step is two products and log2(BT) - 1 steps
    follow the first (size 2, elementwise), where the substitution of the "blocks" form is 15
    dependent steps through memory; the recursive triangular inverse keeps its accuracy (unlike
    powers of T, no intermediate grows past the inverse's own entries)."""
    o_r = tl.arange(0, BT)[:, None]
    o_c = tl.arange(0, BT)[None, :]
    b_X = tl.where(o_r == o_c, 1.0, 0.0) - tl.where((o_r == o_c + 1) & (o_r % 2 == 1), b_T, 0.0)
    for lg in tl.static_range(1, 16):
        if (2 << lg) <= BT:
            lower_left = (o_r >> (lg + 1) == o_c >> (lg + 1)) & ((o_r >> lg) % 2 == 1) & ((o_c >> lg) % 2 == 0)
            b_X -= mma(mma(b_X, tl.where(lower_left, b_T, 0.0), PREC), b_X, PREC)
    return b_X


@triton.jit
def solve_chunk(A, t0, L, i_h, p_row, m_row, o_c, H: tl.constexpr, BT: tl.constexpr, SUB: tl.constexpr,
                PREC: tl.constexpr, SOLVE_FORM: tl.constexpr = "blocks"):
    """A = (I + T)^-1 of one chunk, in place of T, which is read back from ``A`` where the products
    were just stored; returns A. ``SOLVE_FORM``: "blocks" (two steps: the 16x16 diagonal blocks by
    substitution, then the blocks below them as a finite Neumann series) or "halving"
    (``invert_by_halving``)."""
    blk = tl.arange(0, BT) // SUB
    tl.debug_barrier()
    if SOLVE_FORM == "halving":
        b_H = invert_by_halving(tl.load(A + p_row, mask=m_row, other=0.0), BT, PREC)
        tl.debug_barrier()
        tl.store(A + p_row, b_H, mask=m_row)
        return b_H
    # 1) P = (I + D)^-1 for the 16x16 diagonal blocks D, all blocks at once as [NB, SUB, SUB]
    #    tiles, by forward substitution P_j = e_j - sum_s D_js P_s (elementwise: a chain of
    #    matrix products would spend 16 dependent tensor-core steps on 4 useful rows each)
    NB: tl.constexpr = BT // SUB
    o_b = tl.arange(0, NB)
    o_s = tl.arange(0, SUB)
    e_s = tl.where(o_s[:, None] == o_s[None, :], 1.0, 0.0)
    b_P3 = tl.zeros([NB, SUB, SUB], dtype=tl.float32) + e_s[None, :, :]
    p_diag = A + (t0 + o_b[:, None] * SUB) * H * BT + i_h * BT + o_b[:, None] * SUB + o_s[None, :]
    for j in range(1, SUB):
        b_d = tl.load(p_diag + j * H * BT, mask=(o_b * SUB + j < L)[:, None], other=0.0)
        b_x = tl.sum(b_d[:, :, None] * b_P3, axis=1)
        b_new = tl.where(o_s == j, 1.0, 0.0)[None, :] - b_x
        b_P3 = tl.where((o_s == j)[None, :, None], b_new[:, None, :], b_P3)
    tl.debug_barrier()
    p_P3 = A + (t0 + o_b[:, None, None] * SUB + o_s[None, :, None]) * H * BT + i_h * BT \
        + o_b[:, None, None] * SUB + o_s[None, None, :]
    tl.store(p_P3, b_P3, mask=(o_b[:, None, None] * SUB + o_s[None, :, None]) < L)
    tl.debug_barrier()
    # 2) (I + T)^-1 = (I + N)^-1 P with N = P T_low strictly block-lower, so N^4 = 0
    same = blk[:, None] == (o_c // SUB)[None, :]
    b_M = tl.load(A + p_row, mask=m_row, other=0.0)
    b_P = tl.where(same, b_M, 0.0)
    b_N = mma(b_P, tl.where(same, 0.0, b_M), PREC)
    b_Z = mma(b_N, b_P, PREC)
    b_A = b_P - b_Z
    b_Z = mma(b_N, b_Z, PREC)
    b_A += b_Z
    b_A -= mma(b_N, b_Z, PREC)
    tl.debug_barrier()
    tl.store(A + p_row, b_A, mask=m_row)
    return b_A


@triton.jit
def chunk_intra_fwd_kernel(
    q, k, g, b, A, Aqk, qg, kt, y, dec, chunk_start, chunk_end, scale,
    H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, SUB: tl.constexpr,
    G_MODE: tl.constexpr, B_MODE: tl.constexpr, PREC: tl.constexpr, DIAG_SPAN: tl.constexpr,
    FUSE_GATED: tl.constexpr = True, FORM: tl.constexpr = 0, SOLVE_PREC: tl.constexpr = "",
    SOLVE_FORM: tl.constexpr = "blocks",
):
    """T, Aqk and A = (I + T)^-1 of one chunk and key head (and with ``FUSE_GATED`` the gated
    operands). ``PREC``: of the products T and Aqk; ``SOLVE_PREC`` (``PREC`` where empty): of the
    solve and of Y = A Ē, whose operand A has no bound (``FLOAT16_PRODUCTS``)."""
    SOLVE: tl.constexpr = PREC if SOLVE_PREC == "" else SOLVE_PREC
    i_c, i_h = tl.program_id(0).to(tl.int64), tl.program_id(1)
    t0, L = chunk_rows(chunk_start, chunk_end, i_c)
    o_t = tl.arange(0, BT)
    o_c = tl.arange(0, BT)
    ERASE: tl.constexpr = B_MODE != GATE_ZERO

    p_row = (t0 + o_t[:, None]) * H * BT + i_h * BT + o_c[None, :]
    m_row = (o_t < L)[:, None]
    # the whole-chunk form (FORM, see common): where the chunk's span of log-decays allows
    # (``diag_span``, as for one sub-block), all of its pairs as two [BT, BK] x [BK, BT] products of
    # operands centred on each channel's middle decay, instead of the sub-block scheme below (its
    # anchors, pairs and pairwise tiles). ``mine``: this launch makes the chunk (always, except in
    # the two launches of the split form)
    mine = True
    # the halving solve of the whole form's own launch takes T from registers: T is never stored
    IN_REG: tl.constexpr = SOLVE_FORM == "halving" and FORM == FORM_WHOLE and ERASE
    b_Tw = tl.zeros([BT, BT], dtype=tl.float32)
    if G_MODE == GATE_CHANNEL:
        b_wide = tl.full([], DIAG_SPAN + 1.0, tl.float32)
        if FORM != FORM_WALK:
            b_wide = chunk_span(g, t0, o_t, L, i_h, H, K, BK)
        whole = b_wide <= DIAG_SPAN
        walk = walk_needed(b_wide, DIAG_SPAN, FORM)
        if FORM == FORM_WHOLE:
            mine = whole
        if FORM == FORM_REST:
            mine = walk
        if FORM != FORM_REST:
            if whole:
                b_Tw = whole_products(q, k, g, b, A, Aqk, t0, o_t, o_c, L, i_h, p_row, m_row, scale, H, K, BT,
                                      BK, B_MODE, PREC, IN_REG)
        if FORM != FORM_WHOLE:
            if walk:
                walk_products(q, k, g, b, A, Aqk, t0, o_t, o_c, L, i_h, scale, H, K, BT, BK, SUB, B_MODE, PREC,
                              DIAG_SPAN)
    else:
        b_T = tl.zeros([BT, BT], dtype=tl.float32)
        b_Aqk = tl.zeros([BT, BT], dtype=tl.float32)
        for i_k in range(0, tl.cdiv(K, BK)):
            o_k = i_k * BK + tl.arange(0, BK)
            b_q = load_rows(q, t0, o_t, L, i_h, H, o_k, K) * scale
            b_k = load_rows(k, t0, o_t, L, i_h, H, o_k, K)
            b_Aqk += mma(b_q, tl.trans(b_k), PREC)
            if ERASE:
                b_e = apply_erase(b_k, b, t0, o_t, L, i_h, H, o_k, K, B_MODE)
                b_T += mma(b_e, tl.trans(b_k), PREC)
        if G_MODE == GATE_SCALAR:
            # exp of sum over (s, r]: cumulative sum down the rows of g_r masked to r > s
            b_g = load_scalar_rows(g, t0, o_t, L, i_h, H)
            b_seg = tl.cumsum(tl.where(o_t[:, None] > o_c[None, :], b_g[:, None], 0.0), axis=0)
            b_decay = tl.exp(b_seg)
            b_Aqk *= b_decay
            b_T *= b_decay
        store_products(A, Aqk, p_row, m_row, b_T, b_Aqk, o_t, o_c, ERASE)
    b_A = tl.zeros([BT, BT], dtype=tl.float32)
    if ERASE:
        if mine:
            if IN_REG:
                b_A = invert_by_halving(b_Tw, BT, SOLVE)
                tl.store(A + p_row, b_A, mask=m_row)
            else:
                b_A = solve_chunk(A, t0, L, i_h, p_row, m_row, o_c, H, BT, SUB, SOLVE, SOLVE_FORM)

    if FUSE_GATED:
        if mine:
            for i_k in range(0, tl.cdiv(K, BK)):
                gated_tile(q, k, g, b, qg, kt, y, dec, b_A, t0, o_t, L, i_c, i_h, i_k * BK + tl.arange(0, BK),
                           scale, H, K, BT, BK, G_MODE, B_MODE, SOLVE)


@triton.jit
def chunk_gated_kernel(
    q, k, g, b, A, qg, kt, y, dec, chunk_start, chunk_end, scale,
    H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    G_MODE: tl.constexpr, B_MODE: tl.constexpr, PREC: tl.constexpr,
):
    """The gated operands in their own launch, one program per (chunk, key head, BK columns):
    small programs, many a multiprocessor, where inside the intra kernel (255 registers, two
    programs a multiprocessor) the same work waited on its loads. A is read back (L2: the
    programs of one chunk are neighbours on the flat first grid axis)."""
    NK: tl.constexpr = (K + BK - 1) // BK
    pid = tl.program_id(0)
    i_c, i_k = (pid // NK).to(tl.int64), pid % NK
    i_h = tl.program_id(1)
    t0, L = chunk_rows(chunk_start, chunk_end, i_c)
    o_t = tl.arange(0, BT)
    b_A = tl.zeros([BT, BT], dtype=tl.float32)
    if B_MODE != GATE_ZERO:
        p_row = (t0 + o_t[:, None]) * H * BT + i_h * BT + o_t[None, :]
        b_A = tl.load(A + p_row, mask=(o_t < L)[:, None], other=0.0)
    gated_tile(q, k, g, b, qg, kt, y, dec, b_A, t0, o_t, L, i_c, i_h, i_k * BK + tl.arange(0, BK), scale,
               H, K, BT, BK, G_MODE, B_MODE, PREC)


# the whole-chunk form of channel-gate chunks ("off", "inline" or "split": ``WHOLE_FORMS`` in
# common); "split" since the GPU tests passed with it on an H100 (2026-12-06-1403 results). H100,
# 2x8K, stage_variants (2026-12-06): one-pass, capped, float16 gated operands 0.958 ms split, the
# walk 1.491 (capped, float32 gated operands, an earlier run); three-pass 1.454 against 2.215
WHOLE_CHUNK = "split"
# The products T and Aqk on two-term float16 (hi/lo, ``common.mma``) where ``prec`` is three-pass
# TF32 (the training forward, the backward's recompute); the solve and Y = A Ē keep ``prec``. Only
# for L2-normalised q and k: the operands are then q scale, k and b k times decay factors of at most
# e^8 (the centred forms' span bound 16, the same as three-pass TF32's, so no chunk changes form),
# under 6000, and no guard is needed. H100, 2026-12-07 04:45, 2x8K, stage profile: the training
# forward's intra stage 1.448 -> 1.301 ms; its GPU tests passed at all three dtypes. The one-pass
# forward keeps one-pass TF32: one float16 pass gained only 1.603 -> 1.591 ms there (1x16K 1.858 ->
# 1.844), because one float16 pass needs a span bound of 8 (operands down to e^-4 times q scale,
# out of float16's subnormals, whose fixed 6e-8 would be 2% of it at e^-8) where one-pass TF32
# takes 80, so chunks and sub-blocks of spans 8-80 (fast-forgetting channels) would leave the
# centred product for the walk and the pairwise tiles.
FLOAT16_PRODUCTS = True
# The solve A = (I + T)^-1: "blocks" or "halving" (``solve_chunk``) everywhere, or "one-pass halving":
# halving where the solve is one-pass TF32 (the inference forward), blocks where it is three-pass.
# H100, 2026-12-08 (stage profile, one process): the inference forward 1.607 -> 1.481 ms at 2x8K,
# 1.588 -> 1.460 at 8x2K, 1.869 -> 1.746 at 1x16K; the three-pass intra stage of a training forward
# 1.327 -> 1.777 (ten three-pass products cost more than the substitution saves), so it keeps
# blocks. GPU tests with halving forced everywhere passed (24 cases, three dtypes).
SOLVE_FORM = "one-pass halving"
SOLVE_FORMS = ("blocks", "halving", "one-pass halving")
# One-pass and split from the gated operands the kernel needs 202 registers (ptxas, sm_90a): capped
# at 168, three programs fit a multiprocessor instead of two; 1.735 -> 1.491 ms at 2x8K (H100,
# 2026-12-06, stage_variants, blocks solve). With the halving solve the capped whole form spills 856
# bytes (688 with blocks), uncapped 48 (ptxas, Triton 3.6, float16 Aqk): the stage profile times it
# uncapped (None) too. The three-pass form is
# not capped.
ONE_PASS_REGISTERS = 168


def solve_form(prec: str) -> str:
    """The solve's form (the kernel's ``SOLVE_FORM``) for a solve of precision ``prec``."""
    if SOLVE_FORM not in SOLVE_FORMS:
        raise ValueError(f"intra.SOLVE_FORM must be one of {SOLVE_FORMS}, got {SOLVE_FORM!r}")
    if SOLVE_FORM == "one-pass halving":
        return "halving" if prec == "tf32" else "blocks"
    return SOLVE_FORM


def chunk_intra_fwd(q, k, g, b, scale, chunks, g_mode, b_mode, BT=64, prec="tf32x3", fuse_gated=False,
                    gated_dtype=None, normalized=False, aqk_dtype=None):
    """Launch the intra-chunk stage over the flattened layout ``[T_total, H, K]``. Returns
    ``A`` (None without erase), ``Aqk`` and the gated operands ``(Q_γ, K_tail, Y, exp(G_C))``,
    made by a second launch (``chunk_gated_fwd``) unless ``fuse_gated``; ``gated_dtype`` as there.
    ``normalized``: q and k are L2-normalised (``FLOAT16_PRODUCTS``' precondition).

    ``aqk_dtype``: of Aqk (float32 by default). float16 for the one-pass walk, on the argument of
    ``chunk_gated_fwd``: with unit q and k, |Aqk| is at most the scale (decays at most 1), and
    that walk's products round it to float16 (or TF32's 10 bits) anyway; half the bytes written
    here and read by each of the walk's value blocks."""
    import torch
    T, H, K = k.shape
    erase = b_mode != 3
    A = torch.empty(T, H, BT, dtype=torch.float32, device=k.device) if erase else None
    Aqk = torch.empty(T, H, BT, dtype=aqk_dtype or torch.float32, device=k.device)
    # without fuse_gated the kernel never touches the gated operands: any pointer will do
    qg, kt, y, dec = gated = _gated_buffers(k, chunks, erase, gated_dtype) if fuse_gated else (Aqk, Aqk, None, Aqk)
    cap = register_cap(k, ONE_PASS_REGISTERS) if prec == "tf32" and not fuse_gated and ONE_PASS_REGISTERS else {}
    products = "f16x3" if prec == "tf32x3" and FLOAT16_PRODUCTS and normalized else prec
    for form in WHOLE_FORMS[WHOLE_CHUNK] if g_mode == GATE_CHANNEL else (FORM_WALK,):
        chunk_intra_fwd_kernel[(chunks.count, H)](
            q, k, g if g is not None else k, b if isinstance(b, torch.Tensor) else k, A if erase else Aqk, Aqk,
            qg, kt, y if y is not None else qg, dec, chunks.start, chunks.end, scale,
            H=H, K=K, BT=BT, BK=MIN_TILE, SUB=16, G_MODE=g_mode, B_MODE=b_mode, PREC=products,
            DIAG_SPAN=diag_span(products), FUSE_GATED=fuse_gated, FORM=form,
            SOLVE_PREC=prec, SOLVE_FORM=solve_form(prec), num_warps=4, num_stages=1, **cap)
    if not fuse_gated:
        gated = chunk_gated_fwd(q, k, g, b, A, scale, chunks, g_mode, b_mode, BT=BT, prec=prec, dtype=gated_dtype)
    return A, Aqk, gated


def chunk_gated_fwd(q, k, g, b, A, scale, chunks, g_mode, b_mode, BT=64, prec="tf32x3", dtype=None):
    """The gated operands ``(Q_γ, K_tail, Y, exp(G_C))`` from ``A`` (None without erase) in their
    own launch: after the intra kernel, or in the backward when the forward kept ``A`` and ``Aqk``.

    ``dtype``: of Q_γ, K_tail and Y (float32 by default). float16 where only one-pass TF32
    products read them: TF32 keeps 10 mantissa bits, as float16 does, so rounding to float16
    (to nearest) loses nothing those products keep, and the state walk, which reads them again
    for every block of value columns, moves half the bytes. Only for L2-normalised q and k: then
    Q_γ and K_tail are at most 1 in magnitude (q and k times decays at most 1) and Y is A times
    such a product, far inside float16's range (65504); values under its normal range (6e-5)
    keep an absolute error below 3e-8."""
    import torch
    H, K = k.shape[1], k.shape[2]
    qg, kt, y, dec = gated = _gated_buffers(k, chunks, A is not None, dtype)
    chunk_gated_kernel[(chunks.count * cdiv(K, MIN_TILE), H)](
        q, k, g if g is not None else k, b if isinstance(b, torch.Tensor) else k, A if A is not None else qg,
        qg, kt, y if y is not None else qg, dec, chunks.start, chunks.end, scale,
        H=H, K=K, BT=BT, BK=MIN_TILE, G_MODE=g_mode, B_MODE=b_mode, PREC=prec, num_warps=4, num_stages=1)
    return gated


def _gated_buffers(k, chunks, erase, dtype=None):
    """Q_γ, K_tail, Y (None without erase) ``[T, H, K]`` in ``dtype`` (float32 by default) and
    exp(G_C) ``[chunks, H, K]`` in float32."""
    import torch
    T, H, K = k.shape
    row = dict(dtype=dtype or torch.float32, device=k.device)
    y = torch.empty(T, H, K, **row) if erase else None
    return (torch.empty(T, H, K, **row), torch.empty(T, H, K, **row), y,
            torch.empty(max(chunks.count, 1), H, K, dtype=torch.float32, device=k.device))
