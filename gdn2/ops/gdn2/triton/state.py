"""Inter-chunk stage: the state recurrence across chunks with the chunk output fused in, so
the state stays on chip. PyTorch reference: ``chunk.chunk_step`` (after ``A`` and ``Aqk``).

One program per (sequence, value head, block of V columns) walks its sequence's chunks in
order; per chunk it forms ``R = A Z - Y S``, ``O = Q_γ S + Aqk R`` and
``S <- exp(G_C) S + K_tail^T R`` from the gated operands the intra stage wrote.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import GATE_ZERO, MIN_TILE, cdiv, chunk_rows, load_rows, load_write, mma, next_pow2


@triton.jit
def store_output(qg, Aqk, o, b_S, b_R, t0, o_t, L, i_h, i_hv, o_k, o_v,
                 H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr,
                 PREC: tl.constexpr, oin=None, FOLDED: tl.constexpr = False):
    """``O = Q_γ S + Aqk R`` of one chunk's rows and value columns ``o_v``, stored (``b_S``: the
    state entering the chunk, ``b_R``: the chunk's R): in the walk, or after it (``chunk_out_kernel``).
    ``FOLDED``: ``qg`` holds ``Q_γ - Aqk Y`` and ``oin`` the chunk's ``Aqk U`` (``chunk_fold_kernel``),
    so that ``O = qg S + oin``: the same output, one product instead of two."""
    if not FOLDED:
        b_Aqk = load_rows(Aqk, t0, o_t, L, i_h, H, tl.arange(0, BT), BT)
        b_o = mma(load_rows(qg, t0, o_t, L, i_h, H, o_k, K), b_S, PREC) \
            + mma(b_Aqk, b_R, PREC)
    else:
        b_o = mma(load_rows(qg, t0, o_t, L, i_h, H, o_k, K), b_S, PREC) \
            + load_rows(oin, t0, o_t, L, i_hv, HV, o_v, V)
    tl.store(o + (t0 + o_t[:, None]) * HV * V + i_hv * V + o_v[None, :], b_o.to(o.dtype.element_ty),
             mask=(o_t < L)[:, None] & (o_v < V)[None, :])
    return b_o


@triton.jit
def state_fwd(
    qg, kt, y, dec, v, w, A, Aqk, o, h0, ht, h, r, cu_seqlens, chunk_first, i_n, i_hv, i_v,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, B_MODE: tl.constexpr, W_MODE: tl.constexpr,
    USE_H0: tl.constexpr, STORE_HT: tl.constexpr, STORE_O: tl.constexpr, STORE_H: tl.constexpr,
    STORE_R: tl.constexpr, PREC: tl.constexpr, u=None, oin=None, FOLDED: tl.constexpr = False,
    flag=None, GUARD: tl.constexpr = 0,
):
    """One (sequence ``i_n`` (int64), value head, block ``i_v`` of V columns) walk over the chunks.
    ``FOLDED`` (with erase): ``u`` holds ``U = A Z`` and the output is folded (``store_output``), so
    the walk runs three products a chunk instead of five and loads neither A, v, w nor Aqk.
    ``GUARD`` (float16 products, ``F16_PRODUCTS``): 1 records in ``flag`` whether any output or the
    state left the finite range, 2 walks again only the programs so recorded."""
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
    i_flag = (i_n * HV + i_hv) * tl.cdiv(V, BV) + i_v
    run = True
    if GUARD == 2:   # a walk of no chunks, and no final state, where the first walk stayed finite
        run = tl.load(flag + i_flag) != 0
        eos = tl.where(run, eos, bos)
    if GUARD == 1:   # x * 0 is 0 for finite x, NaN for inf and NaN: one accumulator catches every output
        b_bad = tl.zeros([BT, BV], dtype=tl.float32)

    b_S = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_S = tl.load(h0 + (i_n * HV + i_hv) * K * V + p_kv, mask=m_kv, other=0.0).to(tl.float32)
    for t0 in range(bos, eos, BT):
        L = tl.minimum(eos - t0, BT).to(tl.int32)
        i_c = c0 + (t0 - bos) // BT
        if STORE_H:
            tl.store(h + (i_c * HV + i_hv) * K * V + p_kv, b_S, mask=m_kv)
        # the unfolded branch first: benchmarks/stage_variants.py patches the first load of each kind
        if not FOLDED:
            b_z = load_write(v, w, t0, o_t, L, i_hv, HV, o_v, V, W_MODE)
            if ERASE:
                b_A = load_rows(A, t0, o_t, L, i_h, H, o_c, BT)
                b_Y = load_rows(y, t0, o_t, L, i_h, H, o_k, K)
                b_R = mma(b_A, b_z, PREC) - mma(b_Y, b_S, PREC)
            else:
                b_R = b_z
        else:
            b_Y = load_rows(y, t0, o_t, L, i_h, H, o_k, K)
            b_R = load_rows(u, t0, o_t, L, i_hv, HV, o_v, V) - mma(b_Y, b_S, PREC)
        if STORE_R:
            tl.store(r + (t0 + o_t[:, None]) * HV * V + i_hv * V + o_v[None, :], b_R,
                     mask=(o_t < L)[:, None] & (o_v < V)[None, :])
        if STORE_O:
            b_o = store_output(qg, Aqk, o, b_S, b_R, t0, o_t, L, i_h, i_hv, o_k, o_v, H, HV, K, V, BT, PREC, oin,
                               FOLDED)
            if GUARD == 1:
                b_bad += b_o * 0.0
        b_dec = tl.load(dec + (i_c * H + i_h) * K + o_k, mask=o_k < K, other=0.0)
        b_S = b_S * b_dec[:, None] + mma(tl.trans(load_rows(kt, t0, o_t, L, i_h, H, o_k, K)), b_R, PREC)
    if STORE_HT:
        tl.store(ht + (i_n * HV + i_hv) * K * V + p_kv, b_S, mask=m_kv & run)
    if GUARD == 1:
        b_check = tl.sum(tl.sum(b_bad, 1), 0) + tl.sum(tl.sum(b_S * 0.0, 1), 0)
        tl.store(flag + i_flag, (b_check != b_check).to(tl.int32))


@triton.jit
def chunk_state_fwd_kernel(
    qg, kt, y, dec, v, w, A, Aqk, o, h0, ht, h, r, cu_seqlens, chunk_first,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, B_MODE: tl.constexpr, W_MODE: tl.constexpr,
    USE_H0: tl.constexpr, STORE_HT: tl.constexpr, STORE_O: tl.constexpr, STORE_H: tl.constexpr,
    STORE_R: tl.constexpr, PREC: tl.constexpr, u=None, oin=None, FOLDED: tl.constexpr = False,
    flag=None, GUARD: tl.constexpr = 0,
):
    # int64: offsets of N x HV x K x V states may pass 2^31
    state_fwd(qg, kt, y, dec, v, w, A, Aqk, o, h0, ht, h, r, cu_seqlens, chunk_first,
              tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2), H, HV, K, V, BT, BK, BV,
              B_MODE, W_MODE, USE_H0, STORE_HT, STORE_O, STORE_H, STORE_R, PREC, u, oin, FOLDED, flag, GUARD)


@triton.jit
def value_program(chunk_start, chunk_end, H: tl.constexpr, HV: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr):
    """The (chunk, value head, block of V columns) of a program on the grid (chunks, HV, V blocks):
    its indices (chunk as int64), key head, rows and columns."""
    i_c, i_hv, i_v = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    t0, L = chunk_rows(chunk_start, chunk_end, i_c)
    return i_c, i_hv, i_hv // (HV // H), t0, L, tl.arange(0, BT), i_v * BV + tl.arange(0, BV)


@triton.jit
def chunk_fold_kernel(
    A, Aqk, v, w, u, second, chunk_start, chunk_end,
    H: tl.constexpr, HV: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr,
    W_MODE: tl.constexpr, PREC: tl.constexpr, do=None, BACKWARD: tl.constexpr = False,
):
    """What the folded walks read instead of A, v, w and Aqk, one program per (chunk, value head,
    block of V columns), float32: ``U = A Z`` and, for the forward walk, ``Aqk U``, or for the
    reverse walk (``BACKWARD``), ``Aqk^T dO``."""
    _, i_hv, i_h, t0, L, o_t, o_v = value_program(chunk_start, chunk_end, H, HV, BT, BV)
    o_c = tl.arange(0, BT)
    b_U = mma(load_rows(A, t0, o_t, L, i_h, H, o_c, BT), load_write(v, w, t0, o_t, L, i_hv, HV, o_v, V, W_MODE), PREC)
    b_Aqk = load_rows(Aqk, t0, o_t, L, i_h, H, o_c, BT)
    if BACKWARD:
        b_2 = mma(tl.trans(b_Aqk), load_rows(do, t0, o_t, L, i_hv, HV, o_v, V), PREC)
    else:
        b_2 = mma(b_Aqk, b_U, PREC)
    p = (t0 + o_t[:, None]) * HV * V + i_hv * V + o_v[None, :]
    m = (o_t < L)[:, None] & (o_v < V)[None, :]
    tl.store(u + p, b_U, mask=m)
    tl.store(second + p, b_2, mask=m)


@triton.jit
def chunk_out_kernel(
    qg, Aqk, h, r, o, chunk_start, chunk_end,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
):
    """The walk's output out of the walk, one program per (chunk, value head, block of V columns):
    ``O = Q_γ S + Aqk R`` from the state entering the chunk and the chunk's R, both stored by the
    walk, so that the serial walk carries only what the next chunk needs."""
    i_c, i_hv, i_h, t0, L, o_t, o_v = value_program(chunk_start, chunk_end, H, HV, BT, BV)
    o_k = tl.arange(0, BK)
    b_S = tl.load(h + (i_c * HV + i_hv) * K * V + o_k[:, None] * V + o_v[None, :],
                  mask=(o_k < K)[:, None] & (o_v < V)[None, :], other=0.0)
    b_R = tl.load(r + (t0 + o_t[:, None]) * HV * V + i_hv * V + o_v[None, :],
                  mask=(o_t < L)[:, None] & (o_v < V)[None, :], other=0.0)
    store_output(qg, Aqk, o, b_S, b_R, t0, o_t, L, i_h, i_hv, o_k, o_v, H, HV, K, V, BT, PREC)


def state_tiles(K: int):
    """Tile of the sequential (state) kernels, forward and backward: all key rows (the state is
    carried across chunks in registers), ``MIN_TILE`` value columns per program."""
    return max(MIN_TILE, next_pow2(K)), MIN_TILE


# Pipeline stages of the walk over float16 operands (the one-pass forward): 2 loads the next
# chunk's operands while this chunk's products run, in 112 KB of shared memory (ptxas, sm_90a; with
# float32 operands it needs 288 KB and does not fit). Timed on an H100 (2026-12-06 16:05, quick
# phase of scripts/gpu_session.sh): the walk 0.716 -> 0.655 ms at 2x8K, the inference forward
# 1.758 -> 1.695 ms at 2x8K and 2.386 -> 2.165 ms at 1x16K; test_triton_float16_walk_two_stages
# passed in the same call.
F16_WALK_STAGES = 2
# The output out of the walk (attempt 29, FLA's split): the walk stores every chunk's entering state
# and R (float32) and a parallel kernel makes o, so the serial loop runs three products a chunk
# instead of five. For sequences long against the batch (1x16K: 64 programs walk 256 chunks each)
# where the walk's latency is the forward's. Memory: the states and R of the whole batch, float32
# (0.4 GB at 2x8K, H = 16, K = V = 128), alive until o is made. Off: slower on an H100 (2026-12-06
# 16:05): inference forward 1.758 -> 2.103 ms at 2x8K, 2.386 -> 2.633 ms at 1x16K (the walk without
# o saves only 0.716 -> 0.699 ms; storing and re-reading h and R costs more than the two products).
SPLIT_OUTPUT = False
# Value columns per program of the one-pass float16 walk. 16 doubles the programs (256 at 2x8K
# for 132 multiprocessors; two fit one, by registers (254) and shared memory (96 KB at two stages,
# ptxas, sm_90a, Triton 3.6)), so a second program can hide the walk's latency; each still reads all of Q_γ,
# K_tail and Y, so their traffic doubles. 32: on an H100 (2026-12-06 18:50, before float16
# products) 16 made the walk 0.656 -> 1.096 ms and the inference forward 1.699 -> 2.134 ms at 2x8K,
# 2.196 -> 2.130 ms at 1x16K (64 programs); the GPU tests passed with 16 (16:05).
F16_WALK_COLUMNS = 32
# The one-pass walk's products on float16 operands (attempt 33): the state, R, A and z rounded to
# float16 as the gated operands already are. Same 10 mantissa bits as the one-pass TF32 products
# it replaces, so the same accuracy, at twice the tensor-core rate and with half the operand
# registers and shared memory: on an H100 (2026-12-06 18:50, "walk anatomy: float16 products",
# benchmarks/stage_variants.py) the walk 0.656 -> 0.439 ms at 2x8K, FLA's bfloat16 walk's form
# with two more mantissa bits. Range: the state's and z's entries must stay under 65504 (float16's
# largest). The walk runs so only where the gated operands are float16 (bfloat16 inputs, unit q and
# k, no float32 output). Past that range a product turns o or the state into inf or NaN (never into
# finite garbage): the walk records it per program (GUARD 1) and a second launch walks those
# programs again with one-pass TF32 products (GUARD 2; its other programs return at once, ~5 us),
# so that the result never depends on the range, and no host synchronisation is needed. Only with
# ``F16_WALK_STAGES`` 2 (see ``chunk_state_fwd``). Timed with the guard in the kernel benchmark on an
# H100 (2026-12-06 19:05, benchmarks/results/2026-12-06-1905-H100-80GB-HBM3.md): inference forward
# 1.698 -> 1.484 ms at 2x8K, 2.195 -> 1.784 ms at 1x16K; forward+backward 8.949 -> 8.700 ms at 2x8K.
F16_PRODUCTS = True
# The walk's output folded (attempt 30): O = Q_γ S + Aqk (U - Y S) = (Q_γ - Aqk Y) S + Aqk U, with
# U = A Z. The gated-operands kernel stores Q_γ - Aqk Y in Q_γ's place and ``chunk_fold_kernel``
# makes U and Aqk U in parallel, so the walk runs three products a chunk instead of five (two on
# the state's dependency chain, as FLA's walk) and loads U, Aqk U (float32, 8 KB each a program and
# chunk) instead of A, Aqk (16 KB each), v and w. Memory: U and Aqk U, float32 [T, HV, V]. Read by
# ``chunk._chunk_fwd_op`` (it decides the gated operands too). Off: slower on an H100 (2026-12-06
# 18:50, before float16 products): inference forward 1.699 -> 2.015 ms at 2x8K, 2.196 -> 2.438 ms at
# 1x16K (the fold kernel and U, Aqk U's float32 traffic cost more than the two products saved).
FOLD_OUTPUT = False


def chunk_fold(A, Aqk, v, w, chunks, w_mode, BT=64, prec="tf32x3", do=None):
    """Launch ``chunk_fold_kernel``: (U = A Z, Aqk U) for the folded forward walk, or with ``do``
    (U, Aqk^T dO) for the backward's two folded walks; float32 ``[T, HV, V]`` each."""
    T, HV, V = v.shape
    u, second = (torch.empty(T, HV, V, dtype=torch.float32, device=v.device) for _ in range(2))
    # 32 columns on 8 warps: no spills with Triton 3.6 (the H100's) in either form, where 64 columns
    # on 4 warps spill 76 (forward) and 368 bytes (backward, three-pass) (ptxas, sm_90a)
    if chunks.count:
        chunk_fold_kernel[(chunks.count, HV, cdiv(V, MIN_TILE))](
            A, Aqk, v, w if isinstance(w, torch.Tensor) else v, u, second, chunks.start, chunks.end,
            H=Aqk.shape[1], HV=HV, V=V, BT=BT, BV=MIN_TILE, W_MODE=w_mode, PREC=prec, num_warps=8, num_stages=1,
            **(dict(do=do, BACKWARD=True) if do is not None else {}))
    return u, second


def chunk_state_fwd(gated, v, w, A, Aqk, h0, cu_seqlens, chunks, modes, output_final_state,
                    store_o=True, store_h=False, store_r=False, BT=64, prec="tf32x3", folded=False):
    """Launch the inter-chunk stage over the flattened layout; ``gated`` = (Q_γ, K_tail, Y,
    exp(G_C)) from the intra stage (``folded``: Q_γ - Aqk Y in Q_γ's place, see ``FOLD_OUTPUT``;
    only with erase and the output, o in the walk). Returns (o, final_state, h, r)."""
    qg, kt, y, dec = gated
    T, H, K = kt.shape
    HV, V = v.shape[1], v.shape[2]
    N = cu_seqlens.numel() - 1
    dev = v.device
    BK, BV = state_tiles(K)
    split = store_o and SPLIT_OUTPUT
    guard = False
    if qg.dtype == torch.float16:
        BV = F16_WALK_COLUMNS
        # float16 products only at two stages: at one, Triton 3.6 made finite garbage of o on an H100
        # (test_triton_float16_walk_two_stages, 2026-12-06 19:14; two stages passed every GPU test)
        guard = F16_PRODUCTS and F16_WALK_STAGES > 1 and not (split or folded)
    wanted = store_h, store_r
    if split:   # the walk stores what the output kernel needs instead of the output
        store_o, store_h, store_r = False, True, True
    o = torch.empty(T, HV, V, dtype=v.dtype, device=dev) if store_o or split else None
    ht = torch.empty(N, HV, K, V, dtype=torch.float32, device=dev) if output_final_state else None
    h = torch.empty(max(chunks.count, 1), HV, K, V, dtype=torch.float32, device=dev) if store_h else None
    r = torch.empty(T, HV, V, dtype=torch.float32, device=dev) if store_r else None
    dummy = kt
    _, b_mode, w_mode = modes
    if folded:
        if not (store_o and not split and A is not None):
            raise ValueError("chunk_state_fwd: folded gated operands need erase and the output made in the walk")
        u, oin = chunk_fold(A, Aqk, v, w, chunks, w_mode, BT=BT, prec=prec)
        folding = dict(u=u, oin=oin, FOLDED=True)
    else:
        folding = {}
    grid = (N, HV, cdiv(V, BV))
    if guard:   # float16 products, then the programs whose outputs or state left the range walk again
        folding = dict(flag=torch.empty(grid[0] * grid[1] * grid[2], dtype=torch.int32, device=dev), GUARD=1)
    walk = lambda prec, **kw: chunk_state_fwd_kernel[grid](  # noqa: E731
        qg, kt, y if y is not None else dummy, dec, v, w if isinstance(w, torch.Tensor) else dummy,
        A if A is not None else dummy, Aqk, o if o is not None else dummy, h0 if h0 is not None else dummy,
        ht if ht is not None else dummy, h if h is not None else dummy, r if r is not None else dummy,
        cu_seqlens, chunks.first,
        H=H, HV=HV, K=K, V=V, BT=BT, BK=BK, BV=BV, B_MODE=b_mode, W_MODE=w_mode,
        USE_H0=h0 is not None, STORE_HT=output_final_state, STORE_O=store_o, STORE_H=store_h,
        STORE_R=store_r, PREC=prec, num_warps=4, num_stages=F16_WALK_STAGES if qg.dtype == torch.float16 else 1,
        **kw)
    walk("f16" if guard else prec, **folding)
    if guard:
        walk(prec, flag=folding["flag"], GUARD=2)
    if split:
        if chunks.count:
            chunk_out_kernel[(chunks.count, HV, cdiv(V, BV))](
                qg, Aqk, h, r, o, chunks.start, chunks.end, H=H, HV=HV, K=K, V=V, BT=BT, BK=BK, BV=BV, PREC=prec,
                num_warps=4, num_stages=1)
        h, r = (x if want else None for x, want in zip((h, r), wanted))   # only what the caller asked for
    return o, ht, h, r
