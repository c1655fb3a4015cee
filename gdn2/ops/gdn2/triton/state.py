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

from .common import (GATE_ZERO, MIN_TILE, cdiv, chunk_rows, gate_mode, guard_record, guard_start, load_rows, load_write,
                     mma, multiprocessors, next_pow2)


@triton.jit
def state_fwd(
    qg, kt, y, dec, v, w, A, Aqk, o, h0, ht, h, r, cu_seqlens, chunk_first, i_n, i_hv, i_v,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, B_MODE: tl.constexpr, W_MODE: tl.constexpr,
    USE_H0: tl.constexpr, STORE_HT: tl.constexpr, STORE_O: tl.constexpr, STORE_H: tl.constexpr,
    STORE_R: tl.constexpr, PREC: tl.constexpr, flag=None, zscale=None, GUARD: tl.constexpr = 0,
):
    """One (sequence ``i_n`` (int64), value head, block ``i_v`` of V columns) walk over the chunks.
    ``GUARD`` (float16 products, ``F16_PRODUCTS``): 1 records in ``flag`` whether any output or the
    state left the finite range, 2 walks again only the programs so recorded (unscaled: the safe
    walk depends on no scale). In the first walk z and the initial state are multiplied by
    ``zscale`` (a power of two: o and the state are linear in them, so the walk runs in units where
    the largest |z| is near 1, and float16's range sits around the values) and everything stored is
    divided by it again."""
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
    i_flag, run, sc, unsc = guard_start(flag, zscale, i_n, i_hv, i_v, HV, V, BV, GUARD)
    if GUARD == 2:   # a walk of no chunks, and no final state, where the first walk stayed finite
        eos = tl.where(run, eos, bos)
    if GUARD == 1:   # every output (or R) as x * 0: see guard_record
        b_bad = tl.zeros([BT, BV], dtype=tl.float32)

    b_S = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_S = tl.load(h0 + (i_n * HV + i_hv) * K * V + p_kv, mask=m_kv, other=0.0).to(tl.float32)
        b_S *= sc
    for t0 in range(bos, eos, BT):
        L = tl.minimum(eos - t0, BT).to(tl.int32)
        i_c = c0 + (t0 - bos) // BT
        if STORE_H:
            tl.store(h + (i_c * HV + i_hv) * K * V + p_kv, b_S * unsc, mask=m_kv)
        b_z = load_write(v, w, t0, o_t, L, i_hv, HV, o_v, V, W_MODE)
        b_z *= sc
        if ERASE:
            b_A = load_rows(A, t0, o_t, L, i_h, H, o_c, BT)
            b_Y = load_rows(y, t0, o_t, L, i_h, H, o_k, K)
            b_R = mma(b_A, b_z, PREC) - mma(b_Y, b_S, PREC)
        else:
            b_R = b_z
        m_tv = (o_t < L)[:, None] & (o_v < V)[None, :]
        if GUARD == 1:
            if not STORE_O:   # the recompute walk (no o): R carries the state's products
                b_bad += b_R * 0.0
        if STORE_R:
            tl.store(r + (t0 + o_t[:, None]) * HV * V + i_hv * V + o_v[None, :], b_R * unsc, mask=m_tv)
        if STORE_O:   # O = Q_γ S + Aqk R, S the state entering the chunk
            b_Aqk = load_rows(Aqk, t0, o_t, L, i_h, H, o_c, BT)
            b_o = mma(load_rows(qg, t0, o_t, L, i_h, H, o_k, K), b_S, PREC) + mma(b_Aqk, b_R, PREC)
            b_o *= unsc
            tl.store(o + (t0 + o_t[:, None]) * HV * V + i_hv * V + o_v[None, :], b_o.to(o.dtype.element_ty),
                     mask=m_tv)
            if GUARD == 1:
                b_bad += b_o * 0.0
        b_dec = tl.load(dec + (i_c * H + i_h) * K + o_k, mask=o_k < K, other=0.0)
        b_S = b_S * b_dec[:, None] + mma(tl.trans(load_rows(kt, t0, o_t, L, i_h, H, o_k, K)), b_R, PREC)
    if STORE_HT:
        if run:   # a walk of no chunks writes nothing
            tl.store(ht + (i_n * HV + i_hv) * K * V + p_kv, b_S * unsc, mask=m_kv)
    if GUARD == 1:
        guard_record(flag, i_flag, b_bad, b_S)


@triton.jit
def chunk_state_fwd_kernel(
    qg, kt, y, dec, v, w, A, Aqk, o, h0, ht, h, r, cu_seqlens, chunk_first,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, B_MODE: tl.constexpr, W_MODE: tl.constexpr,
    USE_H0: tl.constexpr, STORE_HT: tl.constexpr, STORE_O: tl.constexpr, STORE_H: tl.constexpr,
    STORE_R: tl.constexpr, PREC: tl.constexpr, flag=None, zscale=None, GUARD: tl.constexpr = 0,
):
    # int64: offsets of N x HV x K x V states may pass 2^31
    state_fwd(qg, kt, y, dec, v, w, A, Aqk, o, h0, ht, h, r, cu_seqlens, chunk_first,
              tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2), H, HV, K, V, BT, BK, BV,
              B_MODE, W_MODE, USE_H0, STORE_HT, STORE_O, STORE_H, STORE_R, PREC, flag, zscale, GUARD)


def state_tiles(K: int):
    """Tile of the sequential (state) kernels, forward and backward: all key rows (the state is
    carried across chunks in registers), ``MIN_TILE`` value columns per program."""
    return max(MIN_TILE, next_pow2(K)), MIN_TILE


# The float16 walk's tiling: value columns per program and pipeline stages, ``None`` for the rule of
# ``f16_walk_tiling`` (a number sets it for every shape: the tests and benchmarks do).
# - Two stages load the next chunk's operands while this chunk's products run, and are where the
#   walk takes float16 products (at one stage Triton 3.6 made finite garbage of o with them on an
#   H100: test_triton_float16_walk_two_stages, 2026-12-06 19:14), so one stage runs one-pass TF32
#   products, in less shared memory.
# - 16 columns double the programs; each still reads all of Q_γ, K_tail and Y, so their traffic
#   doubles.
F16_WALK_STAGES = None
F16_WALK_COLUMNS = None


def f16_walk_tiling(programs: int, multiprocessors) -> tuple:
    """(value columns, pipeline stages) of the float16 walk, by ``programs``, the walk's programs
    at 32 columns (sequences x value heads x V / 32), against the card's ``multiprocessors`` (None
    off CUDA: 32 columns, two stages). Timed on an H100 (132 multiprocessors, 2026-12-07 00:22,
    ``benchmarks/walk_settings.py``, inference forward in ms, 32 columns and two stages first):
    more programs than multiprocessors (8x2K: 512, 4x4K: 256): one stage, 1.780 -> 1.586 and
    1.657 -> 1.514 (more programs share a multiprocessor); at most half (1x16K: 64): 16 columns,
    1.936 -> 1.827; between (2x8K: 128), 32 columns at two stages, 1.576 (one stage 1.737, 16
    columns 1.840)."""
    columns, stages = 32, 2
    if multiprocessors is not None:
        if programs > multiprocessors:
            stages = 1
        elif 2 * programs <= multiprocessors:
            columns = 16
    return F16_WALK_COLUMNS or columns, F16_WALK_STAGES or stages


# Warps per program of the float16 walk. 4: two programs a multiprocessor (255 registers each), the
# first walk spilling 264 bytes; 8: one program, no spills (ptxas, sm_90a, Triton 3.6, K = V = 128).
# At 8 on an H100 (2026-12-07, benchmarks/walk_settings.py, one run): 2x8K 1.576 -> 1.545 ms,
# 8x2K 1.780 -> 1.725 (both before the tiling rule); left at 4 until a second run agrees.
F16_WALK_WARPS = 4
# The one-pass walk's products on float16 operands (attempt 33): the state, R, A and z rounded to
# float16 as the gated operands already are. Same 10 mantissa bits as the one-pass TF32 products
# it replaces, so the same accuracy, at twice the tensor-core rate and with half the operand
# registers and shared memory: on an H100 (2026-12-06 18:50, "walk anatomy: float16 products",
# benchmarks/stage_variants.py) the walk 0.656 -> 0.439 ms at 2x8K, FLA's bfloat16 walk's form
# with two more mantissa bits. Only where the gated operands are float16 (bfloat16 inputs, unit q
# and k, no float32 output) and at two pipeline stages (``f16_walk_tiling``: where the walk has at
# most one program a multiprocessor). Range, float16's normal one being 6e-5 to 65504:
# - the walk runs on z and the initial state scaled by a power of two that brings z's largest
#   magnitude near 1, per sequence and value head (``power_of_two_scale``: two small kernels that
#   replaced ~18 PyTorch launches; o and the state are linear in them), so small values keep their bits;
# - what still passes 65504 (a state grown far past the largest z) turns o or the state into inf or
#   NaN, never into finite garbage: the walk records it per program (GUARD 1) and a second launch
#   walks those programs again with one-pass TF32 products (GUARD 2; the others return at once).
# So the result depends on neither end of the range, with no host synchronisation. Timed (before
# the scale) in the kernel benchmark on an H100 (2026-12-06 19:05,
# benchmarks/results/2026-12-06-1905-H100-80GB-HBM3.md): inference forward 1.698 -> 1.484 ms at
# 2x8K, 2.195 -> 1.784 ms at 1x16K; forward+backward 8.949 -> 8.700 ms at 2x8K. With the scale
# and the guard, every GPU test passed on an H100 (2026-12-06 20:55,
# benchmarks/results/2026-12-06-2055-H100-80GB-HBM3-tests.log); not yet timed with the scale.
F16_PRODUCTS = True


@triton.jit
def chunk_zmax_kernel(v, w, zmax, chunk_start, chunk_end, HV: tl.constexpr, V: tl.constexpr, BT: tl.constexpr,
                      BV: tl.constexpr, W_MODE: tl.constexpr):
    """max |z| of one chunk, value head and block of V columns, z = w v as the walk forms it (float32).
    The blocks on the grid, not in a loop: a loop over two blocks took 255 registers and spilled
    (ptxas, sm_90a, Triton 3.6), one block of 128 columns at 8 warps 80."""
    i_c, i_hv, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    t0, L = chunk_rows(chunk_start, chunk_end, i_c)
    b_z = load_write(v, w, t0, tl.arange(0, BT), L, i_hv, HV, i_v * BV + tl.arange(0, BV), V, W_MODE)
    tl.store(zmax + (i_c * HV + i_hv) * tl.num_programs(2) + i_v, tl.max(tl.max(tl.abs(b_z), 1), 0))


@triton.jit
def sequence_scale_kernel(zmax, h0, zscale, cu_seqlens, chunk_first, HV: tl.constexpr, K: tl.constexpr,
                          V: tl.constexpr, BT: tl.constexpr, NV: tl.constexpr, BJ: tl.constexpr,
                          BC: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, USE_H0: tl.constexpr):
    """``2^-e`` for one (sequence, value head) from its chunks' maxima, e the exponent of the
    largest (from the initial state where z is zero); 1.0 where that maximum is zero, subnormal
    or not finite (the guard then decides)."""
    i_n, i_hv = tl.program_id(0).to(tl.int64), tl.program_id(1)
    bos = tl.load(cu_seqlens + i_n)
    n_c = tl.cdiv(tl.load(cu_seqlens + i_n + 1) - bos, BT)
    c0 = tl.load(chunk_first + i_n).to(tl.int64)
    o_j = tl.arange(0, BJ)
    m = tl.zeros([BC, BJ], dtype=tl.float32)
    for c in range(0, n_c, BC):
        o_c = c + tl.arange(0, BC)
        p = zmax + ((c0 + o_c) * HV + i_hv)[:, None] * NV + o_j[None, :]
        m = tl.maximum(m, tl.load(p, mask=(o_c < n_c)[:, None] & (o_j < NV)[None, :], other=0.0))
    top = tl.max(tl.max(m, 1), 0)
    if USE_H0:
        if top == 0.0:
            b_m = tl.zeros([BK, BV], dtype=tl.float32)
            for k0 in range(0, K, BK):
                for v0 in range(0, V, BV):
                    o_k, o_v = k0 + tl.arange(0, BK), v0 + tl.arange(0, BV)
                    p = h0 + (i_n * HV + i_hv) * K * V + o_k[:, None] * V + o_v[None, :]
                    b_h = tl.load(p, mask=(o_k < K)[:, None] & (o_v < V)[None, :], other=0.0)
                    b_m = tl.maximum(b_m, tl.abs(b_h))
            top = tl.max(tl.max(b_m, 1), 0)
    # float32 bits: a normal top lies in [2^(E-127), 2^(E-126)) for its exponent field E, so
    # 2^(126-E), exponent field 253-E, puts it in [0.5, 1); a normal scale needs 1 <= E <= 252
    E = (top.to(tl.int32, bitcast=True) >> 23) & 255
    sc = ((253 - E) << 23).to(tl.float32, bitcast=True)
    tl.store(zscale + i_n * HV + i_hv, tl.where((E >= 1) & (E <= 252), sc, 1.0))


def power_of_two_scale(v, w, h0, cu_seqlens, chunks, BT=64):
    """Per (sequence, value head), float32 ``[N, HV]`` on the device (no synchronisation, two
    launches): ``2^-e`` with ``e`` the exponent of the largest magnitude of that sequence's
    z = w v, so that the largest scaled value lies in [0.5, 1). Per sequence, so that one
    sequence's large values do not push another's under float16's range. From z, not the initial
    state ``h0``: a state far above z then overflows and the guard walks it again, where scaling by
    the state would push z under the range unnoticed; from ``h0`` only where z is zero, and 1
    where both are zero or not finite (then the guard decides). A NaN in z is passed over by the
    maxima (the walk's o is NaN there whatever the scale, and the guard walks it again). The
    backward passes dO and the final-state cotangent in their places. ``chunks``: the table of
    ``cu_seqlens`` at chunk size ``BT``."""
    if w is not None and not isinstance(w, torch.Tensor):
        raise TypeError(f"power_of_two_scale: w must be a tensor or None (number gates are made tensors "
                        f"before the kernels), got {type(w).__name__}")
    T, HV, V = v.shape
    N = cu_seqlens.numel() - 1
    K = h0.shape[-2] if h0 is not None else V
    BV = min(128, next_pow2(V))
    NV = cdiv(V, BV)
    zmax = torch.empty(max(chunks.count, 1), HV, NV, dtype=torch.float32, device=v.device)
    scale = torch.empty(N, HV, dtype=torch.float32, device=v.device)
    chunk_zmax_kernel[(max(chunks.count, 1), HV, NV)](
        v, w if isinstance(w, torch.Tensor) else v, zmax, chunks.start, chunks.end, HV=HV, V=V, BT=BT, BV=BV,
        W_MODE=gate_mode(w, 3), num_warps=8)
    if N > 0:
        sequence_scale_kernel[(N, HV)](
            zmax, h0 if h0 is not None else zmax, scale, cu_seqlens, chunks.first, HV=HV, K=K, V=V, BT=BT, NV=NV,
            BJ=next_pow2(NV), BC=128, BK=min(32, next_pow2(K)), BV=min(64, BV), USE_H0=h0 is not None, num_warps=4)
    return scale


def chunk_state_fwd(gated, v, w, A, Aqk, h0, cu_seqlens, chunks, modes, output_final_state,
                    store_o=True, store_h=False, store_r=False, BT=64, prec="tf32x3"):
    """Launch the inter-chunk stage over the flattened layout; ``gated`` = (Q_γ, K_tail, Y,
    exp(G_C)) from the intra stage. Returns (o, final_state, h, r)."""
    qg, kt, y, dec = gated
    T, H, K = kt.shape
    HV, V = v.shape[1], v.shape[2]
    N = cu_seqlens.numel() - 1
    dev = v.device
    BK, BV = state_tiles(K)
    guard, stages = False, 1
    if qg.dtype == torch.float16:
        BV, stages = f16_walk_tiling(N * HV * cdiv(V, 32), multiprocessors(dev))
        # float16 products only at two stages (see F16_WALK_STAGES)
        guard = F16_PRODUCTS and stages > 1 and prec == "tf32"   # in place of one-pass TF32 only
    o = torch.empty(T, HV, V, dtype=v.dtype, device=dev) if store_o else None
    ht = torch.empty(N, HV, K, V, dtype=torch.float32, device=dev) if output_final_state else None
    h = torch.empty(max(chunks.count, 1), HV, K, V, dtype=torch.float32, device=dev) if store_h else None
    r = torch.empty(T, HV, V, dtype=torch.float32, device=dev) if store_r else None
    dummy = kt
    _, b_mode, w_mode = modes
    grid = (N, HV, cdiv(V, BV))
    # float16 products, then the programs whose outputs or state left their range walk again
    flag = torch.empty(grid[0] * grid[1] * grid[2], dtype=torch.int32, device=dev) if guard else None
    zscale = power_of_two_scale(v, w, h0, cu_seqlens, chunks, BT) if guard else None
    walk = lambda prec, **kw: chunk_state_fwd_kernel[grid](  # noqa: E731
        qg, kt, y if y is not None else dummy, dec, v, w if isinstance(w, torch.Tensor) else dummy,
        A if A is not None else dummy, Aqk, o if o is not None else dummy, h0 if h0 is not None else dummy,
        ht if ht is not None else dummy, h if h is not None else dummy, r if r is not None else dummy,
        cu_seqlens, chunks.first,
        H=H, HV=HV, K=K, V=V, BT=BT, BK=BK, BV=BV, B_MODE=b_mode, W_MODE=w_mode,
        USE_H0=h0 is not None, STORE_HT=output_final_state, STORE_O=store_o, STORE_H=store_h,
        STORE_R=store_r, PREC=prec, num_warps=F16_WALK_WARPS if qg.dtype == torch.float16 else 4,
        num_stages=stages,
        **kw)
    if guard:
        walk("f16", flag=flag, zscale=zscale, GUARD=1)
        walk(prec, flag=flag, zscale=zscale, GUARD=2)
    else:
        walk(prec)
    return o, ht, h, r
