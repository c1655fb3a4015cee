"""Bytes moved and tensor-core FLOPs of every Triton kernel of the chunk pipeline (training forward
+ backward, inference forward), counted from the tile loads, stores and tl.dot calls as the kernels
are written (no GPU, no launch), with memory and tensor-core floors next to measured H100 times.

    python benchmarks/kernel_roofline.py [--shape B T H K V] [--bandwidth 3000] [--tf32-tflops 378]

Conventions. Bytes are what the programs load and store, tile shape x dtype x programs x trip
counts: a tile re-read by another program (another column tile) or by a later loop step counts
again, although L1/L2 may absorb part of it; "unique MB" counts each tensor element once (the
compulsory traffic). Loads whose values are never used are left out (Triton drops them; the
comment on ``key.key_carry`` relies on it). Masked rows of a full tile count (chunks are full at
these shapes). FLOPs: 2*M*N*K per tl.dot, times the TF32 passes; elementwise work is not counted.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional

from gdn2.ops.gdn2.triton import backward, intra, state
from gdn2.ops.gdn2.triton.chunk import BT as CHUNK
from gdn2.ops.gdn2.triton.common import MIN_TILE, cdiv, diag_span
from gdn2.ops.gdn2.triton.state import state_tiles

BF16, F16, F32 = 2, 2, 4        # q, k, v, b, w, do, o, dq, dk, dv: bfloat16; g, A, scratch: float32
SUB = 16                        # sub-block rows of the intra and key walks
# in TF32 passes; ieee products run on CUDA cores (not in the TC floor), float16 at twice TF32's rate
PASSES = {"tf32": 1, "tf32x3": 3, "ieee": 0, "f16": 0.5, "f16x3": 1.5}
BENCH = (2, 8192, 16, 128, 128)

# H100 80GB HBM3, 2x8K, ms. "~": not measured in exactly this configuration (see the note).
MEASURED = {
    "l2norm": (0.098, ""),                     # q and k, both launches
    "intra x3": (1.735, ""),                   # torch profiler, backward with intra recomputed
    "gated x3 f32": (0.411, ""),               # same profile
    "gated x3 f16": (0.411, "~"),              # the forward's launch writes float16: no own measurement
    "pair": (2.316, ""), "value": (1.089, ""), "dt": (0.364, ""), "key": (3.884, ""),
    "state o x1 f16": (1.03, "~"),
    "intra x1": (1.124, ""),                   # one-pass, capped at 168 registers
    "gated x1 f16": (0.353, "~"),              # measured writing float32 operands
    "state o x3 f32": (1.792, ""), "state hr x3 f32": (1.150, ""),
    # the whole-chunk forms (split launches), stage_variants 2026-12-06-1218: the intra rows are that
    # file's split rows less the gated-operands kernel beside them (three-pass 1.454 - 0.411, one-pass
    # 0.958 - 0.353); the key row its 32 columns on 4 warps, before attempt 27 (2.117 inline)
    "intra x3 whole": (1.043, "~"), "intra x1 whole": (0.605, "~"), "key whole": (2.453, "~"),
}
# the sub-block walks alone (forms off: 2026-12-06-1218) and the split whole-chunk forms (1403)
END_TO_END = {"off": {"inference": ("forward (no_grad)", 2.210, 1.436),
                      "training": ("forward+backward", 11.230, 7.055)},
              "split": {"inference": ("forward (no_grad)", 1.755, 1.454),
                        "training": ("forward+backward", 9.045, 7.068)}}


@dataclass
class Shape:
    B: int
    T: int
    H: int
    K: int
    V: int
    BT: int = CHUNK

    @property
    def HV(self):            # the benchmark has one value head per key head
        return self.H

    @property
    def NT(self):            # chunks per sequence
        return cdiv(self.T, self.BT)

    @property
    def NC(self):            # chunks in the batch
        return self.B * self.NT

    @property
    def tok(self):
        return self.B * self.T


@dataclass
class Row:
    kernel: str
    stage: str
    grid: str
    read: float              # bytes as loaded (re-reads included)
    write: float
    unique: float            # bytes of distinct elements read + written
    flops: float             # tensor-core FLOPs of one pass
    prec: str
    exps: float
    measured: Optional[str] = None   # key into MEASURED

    def floors(self, bw_GBps, tflops):
        mem = (self.read + self.write) / (bw_GBps * 1e9) * 1e3
        tc = self.flops * PASSES[self.prec] / (tflops * 1e12) * 1e3
        return mem, tc


def l2norm_rows(s):
    """q and k, one launch each: [tok*H, K] rows, BR = 4096 // K rows a program."""
    n, grid = s.tok * s.H, f"2x{cdiv(s.tok * s.H, max(1, 4096 // s.K))}"
    fwd_r, fwd_w = 2 * n * s.K * BF16, 2 * (n * s.K * BF16 + n * F32)          # x -> y, rstd
    bwd_r, bwd_w = 2 * (n * s.K * BF16 + n * F32 + n * s.K * BF16), 2 * n * s.K * BF16   # x, rstd, dy -> dx
    return (Row("l2norm_fwd_kernel", "fwd: l2norm q, k", grid, fwd_r, fwd_w, fwd_r + fwd_w, 0, "tf32", 0, "l2norm"),
            Row("l2norm_bwd_kernel", "bwd: l2norm q, k", grid, bwd_r, bwd_w, bwd_r + bwd_w, 0, "tf32", 0))


def intra_row(s, prec, stage, measured):
    """chunk_intra_fwd_kernel, FORM 0 (the walk), one program per (chunk, key head), BK = MIN_TILE.
    Per 16-row block i and key tile: g, k, q, b of the block; for i > 0 also the whole chunk's k and
    next-row g (anchor operands, re-loaded for every block); diagonal blocks in the centred form
    (spans of the benchmark's gates ~1-2 << diag_span). Then the solve reads back its own A."""
    bk, nk, nb = MIN_TILE, cdiv(s.K, MIN_TILE), s.BT // SUB
    blk, full = SUB * bk, s.BT * bk
    read = nb * nk * blk * (F32 + 3 * BF16) + (nb - 1) * nk * full * (BF16 + F32)
    flops = (nb - 1) * nk * 2 * (2 * SUB * s.BT * bk) + nb * nk * 2 * (2 * SUB * SUB * bk)
    exps = (nb - 1) * nk * (full + blk) + nb * nk * 2 * blk
    return intra_with_solve(s, f"{s.NC}x{s.H}", read, flops, exps, prec, stage, measured)


def intra_with_solve(s, grid, read, flops, exps, prec, stage, measured):
    """The intra kernel's row from its products' per-program counts, adding what both forms share:
    the stores of Aqk and T, then the solve (diagonal rows, T read back; P blocks, A written)."""
    nb = s.BT // SUB
    read += (SUB - 1) * nb * SUB * F32 + s.BT * s.BT * F32
    write = 2 * s.BT * s.BT * F32 + nb * SUB * SUB * F32 + s.BT * s.BT * F32
    flops += 4 * 2 * s.BT ** 3
    p = s.NC * s.H
    unique = s.tok * s.H * (s.K * (3 * BF16 + F32) + 2 * s.BT * F32)
    return Row("chunk_intra_fwd_kernel", stage, grid, p * read, p * write, unique, p * flops, prec, p * exps, measured)


def gated_row(s, prec, out, stage, measured):
    """chunk_gated_kernel, one program per (chunk, key head, MIN_TILE key columns): A [BT, BT]
    (re-read by every column tile), k, g, next-row g, b, q; writes Q_g, K_tail, Y (``out`` bytes)
    and exp(G_C). One dot A (e*gamma)."""
    bk, nk = MIN_TILE, cdiv(s.K, MIN_TILE)
    full = s.BT * bk
    read = s.BT * s.BT * F32 + full * (BF16 + 2 * F32 + BF16 + BF16)
    write = 3 * full * out + bk * F32
    p = s.NC * nk * s.H
    unique = s.tok * s.H * (s.K * (3 * BF16 + F32 + 3 * out) + s.BT * F32) + s.NC * s.H * s.K * F32
    return Row("chunk_gated_kernel", stage, f"{s.NC * nk}x{s.H}", p * read, p * write, unique,
               p * 2 * s.BT * s.BT * bk, prec, p * (2 * full + bk), measured)


def state_visit(s, gb, store_o, store_hr):
    """One chunk of the forward walk (state.state_fwd) for one [K, BV] state block: bytes read,
    written, FLOPs. z = w v, A, Y, K_tail, exp(G_C); with o also Aqk, Q_g."""
    _, bv = state_tiles(s.K)
    read = 2 * s.BT * bv * BF16 + s.BT * s.BT * F32 + 2 * s.BT * s.K * gb + s.K * F32
    write = 0
    flops = 2 * s.BT * bv * s.BT + 2 * s.BT * bv * s.K + 2 * s.K * bv * s.BT     # A z, Y S, K_tail^T R
    if store_o:
        read += s.BT * s.BT * F32 + s.BT * s.K * gb
        write += s.BT * bv * BF16
        flops += 2 * s.BT * bv * s.K + 2 * s.BT * bv * s.BT                     # Q_g S, Aqk R
    if store_hr:
        write += s.K * bv * F32 + s.BT * bv * F32                              # h, R
    return read, write, flops


def state_row(s, prec, gb, stage, measured, store_o=True, store_hr=False):
    """chunk_state_fwd_kernel: one program per (sequence, value head, BV value columns) walks NT
    chunks; every key-side tile (A, Aqk, the gated operands) is re-read by each of the V / BV
    programs of a head."""
    _, bv = state_tiles(s.K)
    nv = cdiv(s.V, bv)
    r, w, f = state_visit(s, gb, store_o, store_hr)
    visits = s.B * s.HV * nv * s.NT
    unique = (s.tok * s.H * (3 * s.K * gb + s.BT * F32 * (1 + store_o)) + s.NC * s.H * s.K * F32
              + s.tok * s.HV * s.V * 2 * BF16 + store_o * s.tok * s.HV * s.V * BF16
              + store_hr * (s.NC * s.HV * s.K * s.V + s.tok * s.HV * s.V) * F32)
    return Row("chunk_state_fwd_kernel", stage, f"{s.B}x{s.HV}x{nv}", visits * r, visits * w, unique,
               visits * f, prec, 0, measured)


def pair_row(s, prec):
    """chunk_state_pair_kernel: the forward walk storing h and R (float32 gated operands) beside
    the reverse walk (state_bwd: do, Aqk, K_tail, exp(G_C), Q_g, Y in; dh, dR out)."""
    _, bv = state_tiles(s.K)
    nv = cdiv(s.V, bv)
    fr, fw, ff = state_visit(s, F32, False, True)
    br = s.BT * bv * BF16 + s.BT * s.BT * F32 + 3 * s.BT * s.K * F32 + s.K * F32
    bw = s.K * bv * F32 + s.BT * bv * F32
    bf = 2 * s.BT * s.BT * bv + 3 * 2 * s.BT * s.K * bv     # Aqk^T dO, K_tail dS, Q_g^T dO, Y^T dR
    visits = s.B * s.HV * nv * s.NT
    unique = (s.tok * s.H * (3 * s.K * F32 + 2 * s.BT * F32) + s.NC * s.H * s.K * F32
              + s.tok * s.HV * s.V * 3 * BF16 + 2 * (s.NC * s.HV * s.K * s.V + s.tok * s.HV * s.V) * F32)
    return Row("chunk_state_pair_kernel", "bwd: h, R / dh, dR walks", f"{s.B}x{s.HV}x{2 * nv}",
               visits * (fr + br), visits * (fw + bw), unique, visits * (ff + bf), prec, 0, "pair")


def value_row(s, prec):
    """chunk_bwd_value_kernel, one program per (chunk, key head, 64 key rows | the square part).
    Key-row programs: h, dh [64, BV], dO, dR, R [BT, BV] per value tile; the square program:
    A, then dR, R, dO, v, w (v and w loaded twice: for z and again for dv, dw). dO, dR, R are read
    by all NK + 1 programs of a chunk."""
    bkc, bv = (64 if s.K > MIN_TILE else MIN_TILE), MIN_TILE
    nk, nv, gq = cdiv(s.K, bkc), cdiv(s.V, bv), s.HV // s.H
    tv = s.BT * bv
    kr_read = gq * nv * (2 * bkc * bv * F32 + tv * (BF16 + 2 * F32))
    kr_write = 3 * s.BT * bkc * F32 + bkc * F32
    sq_read = s.BT * s.BT * F32 + gq * nv * tv * (2 * F32 + BF16 + 4 * BF16)
    sq_write = gq * nv * tv * (BF16 + F32) + 2 * s.BT * s.BT * F32           # dv, dw (float32); dAqk, dA
    flops = nk * gq * nv * 3 * 2 * s.BT * bkc * bv + gq * nv * 3 * 2 * s.BT * s.BT * bv
    p = s.NC * s.H
    stride = (3 * s.BT + 1) * s.K + 2 * s.BT * s.BT
    unique = (2 * s.NC * s.HV * s.K * s.V * F32 + s.tok * s.HV * s.V * (2 * F32 + 3 * BF16 + BF16 + F32)
              + s.tok * s.H * s.BT * F32 + p * stride * F32)
    return Row("chunk_bwd_value_kernel", "bwd: value side", f"{s.NC}x{s.H}x{nk + 1}",
               p * (nk * kr_read + sq_read), p * (nk * kr_write + sq_write), unique, p * flops, prec, 0, "value")


def dt_row(s, prec):
    """chunk_bwd_dt_kernel, one program per (chunk, key head): dAqk masked in place; dA += dY (e
    gamma)^T over MIN_TILE key tiles (k, g, b, dY); dT = -(A^T dA A^T)."""
    bk, nk = MIN_TILE, cdiv(s.K, MIN_TILE)
    sq = s.BT * s.BT * F32
    read = 3 * sq + nk * s.BT * bk * (BF16 + F32 + BF16 + F32)
    flops = nk * 2 * s.BT * s.BT * bk + 2 * 2 * s.BT ** 3
    p = s.NC * s.H
    unique = p * (4 * sq + s.BT * s.K * F32) + s.tok * s.H * (s.K * (2 * BF16 + F32) + s.BT * F32)
    return Row("chunk_bwd_dt_kernel", "bwd: dT", f"{s.NC}x{s.H}", p * read, p * 2 * sq, unique, p * flops, prec,
               p * nk * s.BT * bk, "dt")


def key_row(s, prec):
    """chunk_bwd_key_kernel, FORM 0 (the walk), one program per (chunk, key head, BK columns).
    Carry: the chunk's g, k, dK_tail, next-row g. Per 16-row block i: its g (twice: rows, next
    rows), k, q, b (b twice: e and dk), the diagonal dAqk, dT, A blocks, dY, dQ_g, dK_tail; per
    earlier block j: next-row g, k, two [16, 16] blocks; per later block j: g, q, k, b, three
    [16, 16] blocks, dY. Diagonal blocks centred (benchmark spans << diag_span)."""
    bk = backward.KEY_TILES["off"][0]       # the walk's tiles (the measured 3.884 ms ran them)
    nk, nb = cdiv(s.K, bk), s.BT // SUB
    pairs = nb * (nb - 1) // 2                              # (i, j < i) and (i, j > i) steps each
    blk, sq = SUB * bk, SUB * SUB * F32
    read = s.BT * bk * (2 * F32 + BF16 + F32) + bk * F32
    read += nb * (2 * blk * F32 + 4 * blk * BF16 + 3 * sq + 3 * blk * F32)
    read += pairs * (blk * F32 + blk * BF16 + 2 * sq)
    read += pairs * (blk * F32 + 3 * blk * BF16 + 3 * sq + blk * F32)
    write = nb * blk * (2 * F32 + 2 * BF16)                 # dg, db float32; dq, dk bfloat16
    u = 2 * SUB * SUB * bk                                  # every dot is [16, 16] x [16, BK]
    flops = nb * 5 * u + pairs * 2 * u + pairs * 3 * u
    exps = s.BT * bk + bk + nb * 6 * blk + 2 * pairs * blk
    p = s.NC * s.H * nk
    stride = (3 * s.BT + 1) * s.K + 2 * s.BT * s.BT
    unique = (s.tok * s.H * (s.K * (3 * BF16 + F32) + s.BT * F32 + s.K * (2 * BF16 + 2 * F32))
              + s.NC * s.H * stride * F32)
    return Row("chunk_bwd_key_kernel", "bwd: dq, dk, dg, db", f"{s.NC}x{s.H}x{nk}", p * read, p * write, unique,
               p * flops, prec, p * exps, "key")


def intra_whole_row(s, prec, stage, measured):
    """chunk_intra_fwd_kernel, the whole-chunk form (FORM 2 of the split launches), one program per
    (chunk, key head): the span pass reads the chunk's g; then per MIN_TILE key tile k, g, q, b
    once and two [BT, BK] x [BK, BT] products of centred operands; then the solve as in the walk.
    The split pair's walk launch (FORM 3) reads the chunk's g for its span and returns: counted."""
    bk, nk = MIN_TILE, cdiv(s.K, MIN_TILE)
    full = s.BT * bk
    read = 2 * nk * full * F32 + nk * full * (F32 + 3 * BF16)      # two span passes' g; k, g, q, b
    return intra_with_solve(s, f"2x{s.NC}x{s.H}", read, nk * 2 * (2 * s.BT * s.BT * bk), nk * 2 * full, prec,
                            stage, measured)


def key_whole_row(s, prec):
    """chunk_bwd_key_kernel, the whole-chunk form (FORM 2 of the split launches), one program per
    (chunk, key head, BK columns): g twice (rows, next rows), k, dK_tail, dG_C, q, b twice (e and
    dk), dY, dQ_g as [BT, BK] tiles, dAqk, dT and A as [BT, BT] (re-read by every column tile);
    five [BT, BT] x [BT, BK] products. The walk launch (FORM 3) reads g for its span and returns."""
    bk = backward.KEY_TILES["split"][0]
    nk, full, sq = cdiv(s.K, bk), s.BT * bk, s.BT * s.BT * F32
    read = full * (2 * F32 + BF16 + F32 + BF16 + 2 * BF16 + 2 * F32) + bk * F32 + 3 * sq
    read += full * F32                                              # the walk launch's span pass
    write = full * (2 * F32 + 2 * BF16)
    p = s.NC * s.H * nk
    stride = (3 * s.BT + 1) * s.K + 2 * s.BT * s.BT
    unique = (s.tok * s.H * (s.K * (3 * BF16 + F32) + s.BT * F32 + s.K * (2 * BF16 + 2 * F32))
              + s.NC * s.H * stride * F32)
    return Row("chunk_bwd_key_kernel", "bwd: dq, dk, dg, db (whole form)", f"2x{s.NC}x{s.H}x{nk}", p * read,
               p * write, unique, p * 5 * 2 * s.BT * s.BT * bk, prec, p * (4 * full + bk), "key whole")


def pipelines(s, forms=None):
    """Which launches run, at which precision (chunk._chunk_fwd_op, chunk_intra_fwd, chunk_bwd):
    bfloat16 without the final state gives prec = "tf32" for the state forward and float16 gated
    operands (normalised q, k) in both forwards; with gradients the intra stage runs at the
    backward's "tf32x3" (A, Aqk kept); the backward recomputes the gated operands in float32.
    ``forms``: the whole-chunk setting counted ("off": the sub-block walks; "split" or "inline": the
    whole forms, which the benchmark's gates take everywhere, counted as the split launches;
    default: the library's, intra and key each)."""
    whole = (forms or intra.WHOLE_CHUNK) != "off"
    walk_prec = "f16" if state.F16_PRODUCTS else "tf32"   # the one-pass walk's products (attempt 33)
    key_whole = (forms or backward.KEY_WHOLE) != "off"
    parallel = backward.PARALLEL_PRODUCTS   # the value and key kernels' products (normalised q, k)
    l2f, l2b = l2norm_rows(s)
    intra3 = (intra_whole_row(s, "tf32x3", "fwd: intra (A, Aqk kept; whole form)", "intra x3 whole") if whole
              else intra_row(s, "tf32x3", "fwd: intra (A, Aqk kept)", "intra x3"))
    intra1 = (intra_whole_row(s, "tf32", "fwd: intra (capped; whole form)", "intra x1 whole") if whole
              else intra_row(s, "tf32", "fwd: intra (capped)", "intra x1"))
    train = [l2f,
             intra3,
             gated_row(s, "tf32x3", F16, "fwd: gated operands (f16)", "gated x3 f16"),
             state_row(s, walk_prec, F16, "fwd: state + o (f16 operands)", "state o x1 f16"),
             gated_row(s, "tf32x3", F32, "bwd: gated operands (f32)", "gated x3 f32"),
             pair_row(s, backward.PAIR_PRODUCTS), value_row(s, parallel), dt_row(s, "tf32x3"),
             key_whole_row(s, parallel) if key_whole else key_row(s, parallel), l2b]
    infer = [l2f,
             intra1,
             gated_row(s, "tf32", F16, "fwd: gated operands (f16)", "gated x1 f16"),
             state_row(s, walk_prec, F16, "fwd: state + o (f16 operands)", "state o x1 f16")]
    variants = [state_row(s, "tf32x3", F32, "state + o, f32 operands", "state o x3 f32"),
                state_row(s, "tf32x3", F32, "state recompute h, R", "state hr x3 f32", store_o=False, store_hr=True)]
    return {"training": train, "inference": infer, "state variants (profile_stages)": variants}


def table(title, rows, args, measured_ok, totals=True):
    print(f"\n### {title}\n")
    print("| kernel | stage | grid | read MB | write MB | unique MB | TC GFLOP (passes) | exps (M) "
          "| memory floor ms | TC floor ms | measured ms | measured / floor |")
    print("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    tot = dict(r=0.0, w=0.0, u=0.0, f=0.0, e=0.0, mem=0.0, tc=0.0, floor=0.0, meas=0.0, mfloor=0.0)
    for row in rows:
        mem, tc = row.floors(args.bandwidth, args.tf32_tflops)
        ms, mark = MEASURED.get(row.measured, (None, "")) if measured_ok else (None, "")
        flop = row.flops * max(PASSES[row.prec], 1)
        meas = f"{mark}{ms:.3f}" if ms is not None else "-"
        ratio = f"{ms / max(mem, tc):.1f}" if ms is not None else "-"
        print(f"| {row.kernel} | {row.stage} | {row.grid} | {row.read / 1e6:,.0f} | {row.write / 1e6:,.0f} "
              f"| {row.unique / 1e6:,.0f} | {flop / 1e9:.1f} ({row.prec}) | {row.exps / 1e6:.0f} | {mem:.3f} "
              f"| {tc:.3f} | {meas} | {ratio} |")
        for k, v in (("r", row.read), ("w", row.write), ("u", row.unique), ("f", flop), ("e", row.exps),
                     ("mem", mem), ("tc", tc), ("floor", max(mem, tc)), ("meas", ms or 0.0),
                     ("mfloor", max(mem, tc) if ms is not None else 0.0)):
            tot[k] += v
    if not totals:
        return
    ratio = f"{tot['meas'] / tot['mfloor']:.1f}" if tot["mfloor"] else "-"
    print(f"| **total** | | | {tot['r'] / 1e6:,.0f} | {tot['w'] / 1e6:,.0f} | {tot['u'] / 1e6:,.0f} "
          f"| {tot['f'] / 1e9:.1f} | {tot['e'] / 1e6:.0f} | {tot['mem']:.3f} | {tot['tc']:.3f} "
          f"| {tot['meas']:.3f} | {ratio} |")
    print(f"\nSum of per-kernel max(floors) {tot['floor']:.3f} ms; unique bytes alone "
          f"{tot['u'] / (args.bandwidth * 1e6):.3f} ms. Measured total over measured rows only.")
    if measured_ok and title in END_TO_END[args.forms]:
        what, ours, fla = END_TO_END[args.forms][title]
        print(f"End to end {what}: {ours:.3f} ms measured ({ours / tot['floor']:.1f}x the sum of floors); "
              f"FLA 0.6.0 {fla:.3f} ms.")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=5, default=list(BENCH), metavar=("B", "T", "H", "K", "V"))
    p.add_argument("--bandwidth", type=float, default=3000.0, help="copy bandwidth, GB/s, read + write")
    p.add_argument("--tf32-tflops", type=float, default=378.0, help="dense TF32 tensor-core rate, TFLOP/s")
    p.add_argument("--forms", choices=("off", "split"), default=None,
                   help="the whole-chunk setting counted (default: the library's)")
    args = p.parse_args()
    args.forms = args.forms or ("off" if intra.WHOLE_CHUNK == "off" else "split")
    s = Shape(*args.shape)
    print(f"Whole-chunk forms counted: {args.forms} (the library's: {intra.WHOLE_CHUNK!r} / "
          f"{backward.KEY_WHOLE!r}); whole forms where every chunk and key tile takes them, as the "
          "benchmark's gates do.")
    print(f"Shape B={s.B} T={s.T} H=HV={s.H} K={s.K} V={s.V} BT={s.BT}; {args.bandwidth:g} GB/s, "
          f"{args.tf32_tflops:g} TF32 TFLOP/s; diagonal blocks centred (span <= {diag_span('tf32x3'):g} three-pass,"
          f" {diag_span('tf32'):g} one-pass). \"~\": measured in a nearby configuration.")
    measured_ok = tuple(args.shape) == BENCH
    for title, rows in pipelines(s, args.forms).items():
        table(title, rows, args, measured_ok, totals=title in END_TO_END[args.forms])


if __name__ == "__main__":
    main()
