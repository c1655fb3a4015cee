"""Gate-aware backward of the Triton backend (spec section 5).

Stages: recompute ``A, Aqk`` (intra) -> in one launch (``chunk_state_pair_kernel``), the
chunk-start states ``h`` and residuals ``R`` (state, forward mode) beside the reverse state
recurrence, giving the state gradient at every chunk end ``dh`` and ``dR`` ->
``chunk_bwd_value``: dv, dw and the products with the value side -> ``chunk_bwd_dt`` and ``chunk_bwd_key`` (``key.py``): dq, dk, db, dg.
Everything after the state recurrence runs in parallel over chunks.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import (GATE_CHANNEL, GATE_SCALAR, GATE_ZERO, MIN_TILE, WHOLE_FORMS, cdiv, chunk_rows, diag_span,
                     dot_precision, gate_mode, guard_record, guard_start, load_rows, load_scalar_rows, load_write,
                     mma, next_pow2, record_if_bad, sequence_scales, value_tile)
from .intra import chunk_gated_fwd, chunk_intra_fwd
from .key import chunk_bwd_dt_kernel, chunk_bwd_key_kernel
from . import state
from .state import state_fwd, state_tiles


@triton.jit
def state_bwd(
    qg, kt, y, dec, Aqk, do, dht, dh, dh0, dr, cu_seqlens, chunk_first, i_n, i_hv, i_v,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, B_MODE: tl.constexpr,
    USE_DHT: tl.constexpr, STORE_DH0: tl.constexpr, PREC: tl.constexpr,
    flag=None, doscale=None, GUARD: tl.constexpr = 0,
):
    """dR = Aqk^T dO + K_tail dS_C;  dS_0 = Q_γ^T dO + exp(G_C) dS_C - Y^T dR, chunks in reverse,
    for sequence ``i_n`` (int64), value head ``i_hv`` and block ``i_v`` of V columns. ``GUARD``
    as in ``state.state_fwd`` (float16 products: dO and dS_T scaled by ``doscale``, what is stored
    unscaled, non-finite results recorded in ``flag`` and walked again, unscaled)."""
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
    i_flag, run, sc, unsc = guard_start(flag, doscale, i_n, i_hv, i_v, HV, V, BV, GUARD)
    NC = tl.cdiv(eos - bos, BT)
    if GUARD == 2:
        NC = tl.where(run, NC, 0)
    if GUARD == 1:
        b_bad = tl.zeros([BT, BV], dtype=tl.float32)

    b_dS = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_DHT:
        b_dS = tl.load(dht + (i_n * HV + i_hv) * K * V + p_kv, mask=m_kv, other=0.0).to(tl.float32)
        b_dS *= sc
    for i in range(0, NC):
        idx = NC - 1 - i
        t0 = bos + idx * BT
        L = tl.minimum(eos - t0, BT).to(tl.int32)
        tl.store(dh + ((c0 + idx) * HV + i_hv) * K * V + p_kv, b_dS * unsc, mask=m_kv)
        m_tv = (o_t < L)[:, None] & (o_v < V)[None, :]
        b_do = tl.load(do + (t0 + o_t[:, None]) * HV * V + i_hv * V + o_v[None, :], mask=m_tv, other=0.0).to(tl.float32)
        b_do *= sc
        b_Aqk = load_rows(Aqk, t0, o_t, L, i_h, H, o_c, BT)
        b_dR = mma(tl.trans(b_Aqk), b_do, PREC) + mma(load_rows(kt, t0, o_t, L, i_h, H, o_k, K), b_dS, PREC)
        if GUARD == 1:
            b_bad += b_dR * 0.0
        tl.store(dr + (t0 + o_t[:, None]) * HV * V + i_hv * V + o_v[None, :], b_dR * unsc, mask=m_tv)
        b_dec = tl.load(dec + ((c0 + idx) * H + i_h) * K + o_k, mask=o_k < K, other=0.0)
        b_dS = b_dS * b_dec[:, None] + mma(tl.trans(load_rows(qg, t0, o_t, L, i_h, H, o_k, K)), b_do, PREC)
        if B_MODE != GATE_ZERO:
            b_dS -= mma(tl.trans(load_rows(y, t0, o_t, L, i_h, H, o_k, K)), b_dR, PREC)
    if STORE_DH0:
        if run:   # a walk of no chunks writes nothing
            tl.store(dh0 + (i_n * HV + i_hv) * K * V + p_kv, b_dS * unsc, mask=m_kv)
    if GUARD == 1:
        guard_record(flag, i_flag, b_bad, b_dS)


@triton.jit
def chunk_state_bwd_kernel(
    qg, kt, y, dec, Aqk, do, dht, dh, dh0, dr, cu_seqlens, chunk_first,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, B_MODE: tl.constexpr,
    USE_DHT: tl.constexpr, STORE_DH0: tl.constexpr, PREC: tl.constexpr,
):
    # the reverse walk alone: the backward runs it paired (below); kept as the pair's baseline in
    # benchmarks/stage_variants.py. int64: offsets of N x HV x K x V states may pass 2^31
    state_bwd(qg, kt, y, dec, Aqk, do, dht, dh, dh0, dr, cu_seqlens, chunk_first,
              tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2), H, HV, K, V, BT, BK, BV,
              B_MODE, USE_DHT, STORE_DH0, PREC)


@triton.jit
def chunk_state_pair_kernel(
    qg, kt, y, dec, v, w, A, Aqk, h0, h, r, do, dht, dh, dh0, dr, cu_seqlens, chunk_first,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, B_MODE: tl.constexpr, W_MODE: tl.constexpr,
    USE_H0: tl.constexpr, USE_DHT: tl.constexpr, STORE_DH0: tl.constexpr, PREC: tl.constexpr,
    flag=None, zscale=None, doscale=None, GUARD: tl.constexpr = 0,
):
    """The backward's two sequential walks in one launch: value blocks ``0 .. NV-1`` of the third grid
    axis recompute the chunk-start states h and residuals R (forward order), blocks ``NV .. 2NV-1``
    run the reverse state recurrence. Neither reads what the other writes, and each alone leaves a
    multiprocessor one 4-warp program (a latency-bound walk), or none at 1x16K; together two
    programs share it. ``GUARD``: the walks' range guard (``PAIR_PRODUCTS``), each half's flags in
    its own half of ``flag``."""
    i_n, i_hv, i_v = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    NV: tl.constexpr = (V + BV - 1) // BV
    if i_v < NV:
        state_fwd(qg, kt, y, dec, v, w, A, Aqk, qg, h0, qg, h, r, cu_seqlens, chunk_first, i_n, i_hv, i_v,
                  H, HV, K, V, BT, BK, BV, B_MODE, W_MODE, USE_H0, False, False, True, True, PREC,
                  flag, zscale, GUARD)
    else:
        state_bwd(qg, kt, y, dec, Aqk, do, dht, dh, dh0, dr, cu_seqlens, chunk_first, i_n, i_hv, i_v - NV,
                  H, HV, K, V, BT, BK, BV, B_MODE, USE_DHT, STORE_DH0, PREC,
                  flag + tl.num_programs(0) * HV * NV if GUARD != 0 else flag, doscale, GUARD)


@triton.jit
def chunk_bwd_value_kernel(
    v, w, A, h, dh, r, dr, do, dv, dw, scratch, chunk_start, chunk_end,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, SCRATCH: tl.constexpr,
    B_MODE: tl.constexpr, W_MODE: tl.constexpr, PREC: tl.constexpr,
    chunk_seq=None, doscale=None, zscale=None, flag=None, GUARD: tl.constexpr = 0, GQP: tl.constexpr = 1,
):
    """Products with the value side of one chunk and key head (its HV // H value heads).

    Programs 0 .. NK-1 of the third grid axis each take one block of key rows and write to the
    scratch dQ_γ = dO S_0^T, dY = -dR S_0^T, dK_tail = R dS_C^T and sum_V S_0 ⊙ dS_C; program NK
    writes dv, dw, and dAqk = dO R^T, dA = dR Z^T to the scratch. Split this way no program
    holds both the [BT, BT] and the [BT, BK] accumulators (they spilled together).

    ``GUARD`` (``PARALLEL_PRODUCTS``): the gradient side (dO, dR, dS) scaled by the sequence's ``sd``
    and the value side (S_0, R, Z) by its ``sz`` (``common.sequence_scales``), so the scratch holds
    its values times sd * sz (the key kernel unscales what it writes) and dv, dw are unscaled here;
    GUARD 1 flags the chunk and key head in ``flag`` where a tile left the finite range, GUARD 2
    makes only flagged ones again (at ``PREC``, on the same scaled operands)."""
    i_c, i_h, i_k = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    flag = flag + i_c * H + i_h if GUARD != 0 else flag
    if GUARD == 2:
        if tl.load(flag) == 0:
            return
    t0, L = chunk_rows(chunk_start, chunk_end, i_c)
    GQ: tl.constexpr = HV // H
    sd, sz = sequence_scales(chunk_seq, doscale, zscale, i_c, i_h, HV, GQ, GQP, GUARD)
    NK: tl.constexpr = (K + BK - 1) // BK
    NV: tl.constexpr = (V + BV - 1) // BV
    ERASE: tl.constexpr = B_MODE != GATE_ZERO
    o_t = tl.arange(0, BT)
    o_c = tl.arange(0, BT)
    m_t = o_t < L
    p_scr = scratch + (i_c * H + i_h) * SCRATCH
    if i_k < NK:
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        b_dQg = tl.zeros([BT, BK], dtype=tl.float32)
        b_dY = tl.zeros([BT, BK], dtype=tl.float32)
        b_dKt = tl.zeros([BT, BK], dtype=tl.float32)
        b_dGC = tl.zeros([BK], dtype=tl.float32)
        for i_g in range(0, GQ):
            i_hv = i_h * GQ + i_g
            for i_v in range(0, NV):
                o_v, m_tv, p_tv = value_tile(t0, o_t, m_t, i_hv, HV, V, i_v, BV)
                m_kv = m_k[:, None] & (o_v < V)[None, :]
                p_kv = (i_c * HV + i_hv) * K * V + o_k[:, None] * V + o_v[None, :]
                b_S0 = tl.load(h + p_kv, mask=m_kv, other=0.0) * sz
                b_dSC = tl.load(dh + p_kv, mask=m_kv, other=0.0) * sd
                b_dQg += mma(tl.load(do + p_tv, mask=m_tv, other=0.0).to(tl.float32) * sd, tl.trans(b_S0), PREC)
                b_dY -= mma(tl.load(dr + p_tv, mask=m_tv, other=0.0) * sd, tl.trans(b_S0), PREC)
                b_dKt += mma(tl.load(r + p_tv, mask=m_tv, other=0.0) * sz, tl.trans(b_dSC), PREC)
                b_dGC += tl.sum(b_S0 * b_dSC, axis=1)
        p_blk = p_scr + o_t[:, None] * K + o_k[None, :]
        m_blk = (o_t < BT)[:, None] & m_k[None, :]
        tl.store(p_blk, b_dQg, mask=m_blk)
        tl.store(p_blk + BT * K, b_dY, mask=m_blk)
        tl.store(p_blk + 2 * BT * K, b_dKt, mask=m_blk)
        tl.store(p_scr + 3 * BT * K + o_k, b_dGC, mask=m_k)
        record_if_bad(flag, b_dQg + b_dY + b_dKt + b_dGC[None, :], GUARD)
    else:
        if ERASE:
            b_A = load_rows(A, t0, o_t, L, i_h, H, o_c, BT)
        b_dAqk = tl.zeros([BT, BT], dtype=tl.float32)
        b_dA = tl.zeros([BT, BT], dtype=tl.float32)
        b_bad = tl.zeros([BT, BV], dtype=tl.float32)   # the guard's (unused without it)
        unsd = 1.0 / sd
        for i_g in range(0, GQ):
            i_hv = i_h * GQ + i_g
            for i_v in range(0, NV):
                o_v, m_tv, p_tv = value_tile(t0, o_t, m_t, i_hv, HV, V, i_v, BV)
                b_dR = tl.load(dr + p_tv, mask=m_tv, other=0.0) * sd
                b_dAqk += mma(tl.load(do + p_tv, mask=m_tv, other=0.0).to(tl.float32) * sd,
                              tl.trans(tl.load(r + p_tv, mask=m_tv, other=0.0) * sz), PREC)
                if ERASE:
                    b_z = load_write(v, w, t0, o_t, L, i_hv, HV, o_v, V, W_MODE) * sz
                    b_dA += mma(b_dR, tl.trans(b_z), PREC)
                    b_dZ = mma(tl.trans(b_A), b_dR, PREC) * unsd
                else:
                    b_dZ = b_dR * unsd
                if GUARD == 1:
                    b_bad += b_dZ * 0.0
                if W_MODE == GATE_CHANNEL:
                    b_w = load_rows(w, t0, o_t, L, i_hv, HV, o_v, V)
                    tl.store(dv + p_tv, (b_dZ * b_w).to(dv.dtype.element_ty), mask=m_tv)
                    tl.store(dw + p_tv, (b_dZ * load_rows(v, t0, o_t, L, i_hv, HV, o_v, V)).to(dw.dtype.element_ty),
                             mask=m_tv)
                elif W_MODE == GATE_SCALAR:
                    b_w = load_scalar_rows(w, t0, o_t, L, i_hv, HV)
                    tl.store(dv + p_tv, (b_dZ * b_w[:, None]).to(dv.dtype.element_ty), mask=m_tv)
                    # per-head write gate: partial sums per V block, reduced by the launcher
                    tl.store(dw + ((t0 + o_t) * HV + i_hv) * NV + i_v,
                             tl.sum(b_dZ * load_rows(v, t0, o_t, L, i_hv, HV, o_v, V), axis=1), mask=m_t)
                else:
                    tl.store(dv + p_tv, b_dZ.to(dv.dtype.element_ty), mask=m_tv)
        p_sq = p_scr + (3 * BT + 1) * K + o_t[:, None] * BT + o_c[None, :]
        tl.store(p_sq, b_dAqk)
        tl.store(p_sq + BT * BT, b_dA)
        record_if_bad(flag, b_dAqk + b_dA, GUARD)
        record_if_bad(flag, b_bad, GUARD)   # dZ: A's products reach no tile above


# Key columns per program of each launch of the key kernel, per whole-chunk setting (``KEY_WHOLE``),
# all on 4 warps, measured on an H100 at 2x8K (three-pass TF32, benchmarks/stage_variants.py). The
# walk alone: 64 columns on 4 warps 3.8 ms; on 8 warps 4.7; 32 on 4 warps 4.2; 128 on 8 warps 4.2.
# The whole-chunk form with every tile whole (2026-12-06): split, 32 columns on 4 warps 2.45 ms (on
# 8 3.68); 64 on 8 warps 3.10; 16 on 4 warps 2.87; inline: 32 on 4 warps 2.12, 64 on 4 warps 5.7
# (spills). The split form's walk launch may take the walk's own 64 columns (``key_block=(32, 64)``,
# attempt 28: it walks a 64-column tile where either 32-column half failed the bound, remaking the
# other half). Default since an H100 timed it (2026-12-06 16:05, GPU tests passed): backward at 2x8K
# 7.600 -> 7.606 ms at the benchmark's gates, 13.761 -> 12.244 ms at g - 2 (every chunk walks).
KEY_TILES = {"off": (64,), "inline": (32,), "split": (32, 64)}
KEY_WARPS = 4
# The backward's two walks (``chunk_state_pair_kernel``) on two-term float16 products, "f16x3"
# (``common.mma``: ~22 bits, as three-pass TF32's, in three float16 passes at twice TF32's rate),
# with the forward walk's per-sequence power-of-two scales (z and h0; dO and dht) and range guard;
# only for L2-normalised q and k, whose gated operands (not scaled) then sit inside float16's range.
# The float16 anatomy row put the reverse walk at 0.801 ms one-pass against 1.440 three-pass TF32
# (H100, 2026-12-06). On an H100 (2026-12-06 20:55) the GPU tests passed with "f16x3" at bfloat16
# and float16 inputs and failed float32's dh0 (1.3e-5 against 1.8e-7 three-pass TF32), fixed by
# carrying the lo parts 2^11 up (``common.mma``). On with the fix: on an H100 (2026-12-07 00:16) its
# GPU tests passed at all three dtypes, and the backward at 8x2K took 5.882 ms against 6.941 with
# three-pass TF32 walks (from the forward's A and Aqk), 11.541 against 12.582 at g - 2
# (benchmarks/profile_stages.py). Without L2-normalised q and k the walks stay three-pass TF32.
PAIR_PRODUCTS = "f16x3"
# the key kernel's whole-chunk form ("off", "inline" or "split": ``WHOLE_FORMS`` in common). "split"
# since the GPU tests passed with it on an H100 (2026-12-06-1403 results): -19% forward+backward at
# the benchmark's gates; where every chunk's span exceeds the bound (g - 2) +14% while the walk ran
# at 32 columns, +3% since its launch takes 64 (``KEY_TILES``, attempt 28)
KEY_WHOLE = "split"


# The value and key kernels (``chunk_bwd_value_kernel``, ``chunk_bwd_key_kernel``) on two-term
# float16 products as the walks (``PAIR_PRODUCTS``), over operands scaled per sequence (dO's and
# z's scales: every product there pairs a gradient-side and a value-side operand) with their own
# range guard; only for L2-normalised q and k. Stage variants without the scales (H100, 2026-12-07
# 01:32, 2x8K): key 2.397 -> 2.099 ms, value 1.042 -> 0.934 against three-pass TF32. The real form
# (H100, 2026-12-07 04:45, 2x8K, stage profile): backward 5.728 -> 5.459 ms at the benchmark's gates,
# 11.364 -> 11.635 at g - 2 (every chunk walks); forward+backward with ``intra.FLOAT16_PRODUCTS``
# 8x2K 8.135 -> 7.723, 4x4K 7.838 -> 7.448; its GPU tests passed at all three dtypes.
PARALLEL_PRODUCTS = "f16x3"
# The key kernel's sub-block walk (its FORM_REST launch, the chunks whose decay span exceeds the
# whole form's bound) at the backward's precision over the same scaled scratch (GUARD 3: scales,
# no flags), while the whole form keeps float16 hi/lo products. The walk's products are 16-row
# tiles, where splitting each operand into hi and lo parts may cost more than the products save:
# at g - 2, where every chunk walks, PARALLEL_PRODUCTS cost 0.27 ms (H100, 2026-12-07 04:45).
# Its GPU tests passed (H100, 2026-12-07 07:33, 24 cases at three dtypes: results
# 2026-12-07-0733-...-tests.log); off ("f16x3": the walk as the whole form) until a card has timed
# it (profile_stages's rows).
KEY_WALK_PRODUCTS = "f16x3"


def chunk_bwd(q, k, v, g, b, w, h0, scale, cu, chunks, do, dht, BT=64, key_block=None, kept=None,
              normalized=False):
    """Gradients (dq, dk, dv, dg, db, dw, dh0) over the flattened layout ``[T_total, H, K]``.
    ``normalized``: q and k are L2-normalised (the float16 walks' precondition, ``PAIR_PRODUCTS``).
    ``kept``: ``(A, Aqk)`` from a forward that made them at this backward's precision (A None
    without erase), so only the gated operands are recomputed. ``key_block``: the key kernel's
    columns per program, for every launch or one per launch (default: ``KEY_TILES`` of the
    whole-chunk setting)."""
    T, H, K = k.shape
    HV, V = v.shape[1], v.shape[2]
    N = cu.numel() - 1
    modes = (gate_mode(g, 3), gate_mode(b, 3), gate_mode(w, 3))
    dev = k.device
    prec = dot_precision(q.dtype, float32_outputs=True)  # dg and dh0 are float32
    if kept is None:
        A, Aqk, gated = chunk_intra_fwd(q, k, g, b, scale, chunks, modes[0], modes[1], BT=BT, prec=prec,
                                        normalized=normalized)
    else:
        A, Aqk = kept
        gated = chunk_gated_fwd(q, k, g, b, A, scale, chunks, modes[0], modes[1], BT=BT, prec=prec)
    qg, kt, y, dec = gated
    BK, BV = state_tiles(K)
    f32 = dict(dtype=torch.float32, device=dev)
    h, dh = (torch.empty(max(chunks.count, 1), HV, K, V, **f32) for _ in range(2))
    r, dr = (torch.empty(T, HV, V, **f32) for _ in range(2))
    dh0 = torch.empty(N, HV, K, V, **f32) if h0 is not None else None
    do = do.contiguous()
    dummy = k
    gt = g if g is not None else dummy
    bt = b if isinstance(b, torch.Tensor) else dummy
    wt = w if isinstance(w, torch.Tensor) else dummy
    grid = (N, HV, 2 * cdiv(V, BV))
    pair = lambda prec, **kw: chunk_state_pair_kernel[grid](  # noqa: E731
        qg, kt, y if y is not None else qg, dec, v, wt, A if A is not None else dummy, Aqk,
        h0 if h0 is not None else dummy, h, r, do, dht if dht is not None else dummy, dh,
        dh0 if dh0 is not None else dummy, dr, cu, chunks.first,
        H=H, HV=HV, K=K, V=V, BT=BT, BK=BK, BV=BV, B_MODE=modes[1], W_MODE=modes[2], USE_H0=h0 is not None,
        USE_DHT=dht is not None, STORE_DH0=dh0 is not None, PREC=prec, num_warps=4, num_stages=1, **kw)
    scales = None
    if normalized and "f16x3" in (PAIR_PRODUCTS, PARALLEL_PRODUCTS):
        # per (sequence, value head): z's (and h0's) and dO's (and dht's), see state.F16_PRODUCTS
        scales = dict(zscale=state.power_of_two_scale(v, w, h0, cu, chunks, BT),
                      doscale=state.power_of_two_scale(do, None, dht, cu, chunks, BT))
    if PAIR_PRODUCTS == "f16x3" and scales is not None:
        # both walks on float16 hi/lo products over scaled operands; programs whose values left
        # float16's range walk again three-pass (see state.F16_PRODUCTS)
        guard = dict(flag=torch.empty(grid[0] * grid[1] * grid[2], dtype=torch.int32, device=dev), **scales)
        pair("f16x3", GUARD=1, **guard)
        pair(prec, GUARD=2, **guard)
    else:
        pair(prec)

    # 64 key rows a program: half the key-side programs, each reading the value tiles once for
    # twice the rows; 1.395 -> 1.128 ms at 2x8K, and two pipeline stages (the next value tile's
    # loads in flight during this one's products) 1.140 -> 1.042 (H100, 2026-12-06, stage_variants)
    BKc = 64 if K > MIN_TILE else MIN_TILE
    BVc = MIN_TILE
    NV = cdiv(V, BVc)
    forms = WHOLE_FORMS[KEY_WHOLE]
    tiles = KEY_TILES[KEY_WHOLE] if key_block is None else key_block
    tiles = (tiles,) * len(forms) if isinstance(tiles, int) else tuple(tiles)
    if len(tiles) != len(forms):
        raise ValueError(f"key_block: expected one column count or {len(forms)} (one per launch of the "
                         f"whole-chunk setting {KEY_WHOLE!r}), got {key_block!r}")
    if GATE_SCALAR in modes[:2]:
        # per-head gates add one partial sum per column block: every launch on the same blocks
        tiles = (tiles[0],) * len(forms)
    NKk = cdiv(K, tiles[0])
    dq, dk = torch.empty_like(q), torch.empty_like(k)
    dv = torch.empty_like(v)
    # per-head gates ([T, H]): one partial sum per column block of the kernel that forms them
    # (key blocks for g and b, value blocks for w), added below
    grad = lambda x, blocks: None if not isinstance(x, torch.Tensor) else torch.empty(  # noqa: E731
        *x.shape, *((blocks,) if x.ndim == 2 else ()), dtype=torch.float32, device=dev)
    dg, db, dw = grad(g, NKk), grad(b, NKk), grad(w, NV)
    # per chunk and key head: dQ_γ, dY, dK_tail [BT, K] each, dG_C [K], dAqk and dA (then dT) [BT, BT]
    stride = (3 * BT + 1) * K + 2 * BT * BT
    scratch = torch.empty(max(chunks.count, 1), H, stride, dtype=torch.float32, device=dev)
    At = A if A is not None else dummy
    # the value and key kernels' products, and their range guard: one launch each on float16 hi/lo
    # products (GUARD 1), then one that makes again at ``prec`` only the chunks it flagged (GUARD 2)
    if PARALLEL_PRODUCTS == "f16x3" and scales is not None:
        flags = torch.zeros(2, max(chunks.count, 1), H, dtype=torch.int32, device=dev)
        passes = [dict(PREC="f16x3", GUARD=1), dict(PREC=prec, GUARD=2)]
        guard = dict(chunk_seq=chunks.seq, GQP=next_pow2(HV // H), **scales)
    else:
        flags, passes, guard = (None, None), [dict(PREC=prec)], {}
    key_launches = [(form, bk, kw) for kw in passes for form, bk in zip(forms, tiles)]
    if guard and KEY_WALK_PRODUCTS != "f16x3" and KEY_WHOLE == "split":
        # the split form's walk launch once, at ``prec`` on the scaled scratch (GUARD 3), last as before
        key_launches = [launch for launch in key_launches if launch[0] == forms[0]] \
            + [(forms[1], tiles[1], dict(PREC=prec, GUARD=3))]
    for kw in passes:
        chunk_bwd_value_kernel[(chunks.count, H, cdiv(K, BKc) + 1)](
            v, wt, At, h, dh, r, dr, do, dv, dw if dw is not None else dummy, scratch, chunks.start, chunks.end,
            H=H, HV=HV, K=K, V=V, BT=BT, BK=BKc, BV=BVc, SCRATCH=stride, B_MODE=modes[1], W_MODE=modes[2],
            num_warps=4, num_stages=2, flag=flags[0], **guard, **kw)
    chunk_bwd_dt_kernel[(chunks.count, H)](
        k, gt, bt, At, scratch, chunks.start, chunks.end, H=H, K=K, BT=BT, BK=MIN_TILE, SCRATCH=stride,
        G_MODE=modes[0], B_MODE=modes[1], PREC=prec, num_warps=4, num_stages=1)
    for form, bk, kw in key_launches:
        chunk_bwd_key_kernel[(chunks.count, H, cdiv(K, bk))](
            q, k, gt, bt, At, scratch, dq, dk, dg if dg is not None else dummy,
            db if db is not None else dummy, chunks.start, chunks.end, scale, H=H, K=K, BT=BT, BK=bk, SUB=16,
            SCRATCH=stride, G_MODE=modes[0], B_MODE=modes[1], DIAG_SPAN=diag_span(prec), FORM=form,
            HV=HV, num_warps=KEY_WARPS, num_stages=1, flag=flags[1], **guard, **kw)
    dg, db, dw = (d.sum(-1) if d is not None and x.ndim == 2 else d for d, x in ((dg, g), (db, b), (dw, w)))
    return dq, dk, dv, dg, db, dw, dh0
