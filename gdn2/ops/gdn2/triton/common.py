"""Shared pieces of the Triton pipeline: gate modes, tile loads, the chunk table."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

# How a gate is given; each mode is a compile-time specialisation of the same kernels.
GATE_NONE: tl.constexpr = tl.constexpr(0)     # absent: g = 0, b = 1, w = 1
GATE_SCALAR: tl.constexpr = tl.constexpr(1)   # one value per head and token
GATE_CHANNEL: tl.constexpr = tl.constexpr(2)  # one value per channel
GATE_ZERO: tl.constexpr = tl.constexpr(3)     # b = 0: no erase (GLA / linear attention)

# The whole-chunk form of the intra and key kernels (attempts 24-25), as their compile-time FORM:
# the sub-block walk alone; both forms in one program (the walk where a decay span forbids the
# whole form); or two launches over the same grid, one compiled with the whole form alone (its
# programs return where the span forbids it) and one with the walk alone for the rest, so that
# neither holds the other's registers (both in one program cost the key kernel ~6 KB of spills).
FORM_WALK: tl.constexpr = tl.constexpr(0)
FORM_BOTH: tl.constexpr = tl.constexpr(1)
FORM_WHOLE: tl.constexpr = tl.constexpr(2)
FORM_REST: tl.constexpr = tl.constexpr(3)
# host setting -> the FORM of each launch
WHOLE_FORMS = {"off": (0,), "inline": (1,), "split": (2, 3)}


@triton.jit
def walk_needed(b_wide, DIAG_SPAN: tl.constexpr, FORM: tl.constexpr):
    """Whether a program of this FORM walks a chunk (or key tile) of decay span ``b_wide``: where
    the whole form is not taken, a NaN span included; in the split form's second launch also at
    spans within 1e-4 of the bound, because the two launches compute the span in separate
    compilations that may round it an ulp apart (a chunk at the bound is then made twice, by
    launches in order: the walk's result stays). So no chunk is left unmade."""
    bound = DIAG_SPAN
    if FORM == FORM_REST:
        bound = DIAG_SPAN * (1.0 - 1e-4)
    return (b_wide > bound) | (b_wide != b_wide)


@triton.jit
def mma(a, b, PREC: tl.constexpr):
    """``a @ b`` accumulated in float32. ``PREC`` as ``tl.dot``'s input precision, or "f16": both
    operands rounded to float16 first, one tensor-core pass at twice TF32's rate and half its
    operand registers, with TF32's 10 mantissa bits (so one-pass TF32's accuracy); or "f16x3":
    each operand split into float16 hi + lo, three passes (hi hi, hi lo, lo hi) of ~22 bits, as
    three-pass TF32's. The lo parts are carried 2^11 up, so they sit where their hi parts do and
    not in float16's subnormals (unscaled, a lo part under 6e-5 keeps an absolute error of 6e-8:
    1.3e-5 relative error in dh0 on an H100, against 1.8e-7 three-pass TF32). For operands under
    65504: the caller scales them there and guards the rest, as ``state.chunk_state_fwd`` does."""
    if PREC == "f16":
        return tl.dot(a.to(tl.float16), b.to(tl.float16))
    elif PREC == "f16x3":
        a_hi = a.to(tl.float16)
        b_hi = b.to(tl.float16)
        a_lo = ((a - a_hi.to(tl.float32)) * 2048.0).to(tl.float16)
        b_lo = ((b - b_hi.to(tl.float32)) * 2048.0).to(tl.float16)
        small = tl.dot(a_lo, b_hi, tl.dot(a_hi, b_lo))
        return tl.dot(a_hi, b_hi, small * 0.00048828125)   # 2^-11, exact
    else:
        return tl.dot(a, b, input_precision=PREC)


@triton.jit
def guard_start(flag, scale, i_n, i_hv, i_v, HV: tl.constexpr, V: tl.constexpr, BV: tl.constexpr,
                GUARD: tl.constexpr):
    """A walk program's part in the range guard of float16 products (``state.F16_PRODUCTS``): its
    flag's index; whether it walks (GUARD 2: only where its first walk recorded a non-finite
    value); the power-of-two scale of its sequence and value head in the first walk (GUARD 1) and
    the scale's inverse (exact). Outside GUARD 1 both are the constant 1.0, so a walk multiplies by
    them unconditionally: the products fold away (the same PTX as without them, Triton 3.6)."""
    i_flag = (i_n * HV + i_hv) * tl.cdiv(V, BV) + i_v
    run = True
    if GUARD == 2:
        run = tl.load(flag + i_flag) != 0
    sc = 1.0
    if GUARD == 1:
        sc = tl.load(scale + i_n * HV + i_hv)
    return i_flag, run, sc, 1.0 / sc


@triton.jit
def guard_record(flag, i_flag, b_bad, b_S):
    """The first walk's record: whether anything accumulated in ``b_bad`` (as x * 0: 0 for finite
    x, NaN for inf and NaN) or the final state ``b_S`` left the finite range."""
    b_check = tl.sum(tl.sum(b_bad, 1), 0) + tl.sum(tl.sum(b_S * 0.0, 1), 0)
    tl.store(flag + i_flag, (b_check != b_check).to(tl.int32))


@triton.jit
def sequence_scales(chunk_seq, doscale, zscale, i_c, i_h, HV: tl.constexpr, GQ: tl.constexpr,
                    GQP: tl.constexpr, GUARD: tl.constexpr):
    """The gradient-side and value-side power-of-two scales of chunk ``i_c``'s sequence for key
    head ``i_h``, each the smallest over the head's ``GQ`` value heads (``state.power_of_two_scale``
    of dO and of z), for the parallel kernels' float16 hi/lo products (``backward.PARALLEL_PRODUCTS``):
    every product there is bilinear in one value-side and one gradient-side operand, so with both
    scaled its tiles sit in float16's range, and one scale a group keeps sums over its value heads
    exact (over the group only: one head's large values would push other groups' under the range).
    The constant 1.0 twice without the guard (the multiplications fold away)."""
    sd = 1.0
    sz = 1.0
    if GUARD != 0:
        n = tl.load(chunk_seq + i_c)
        o = tl.arange(0, GQP)
        p = n * HV + i_h * GQ + o
        sd = tl.min(tl.load(doscale + p, mask=o < GQ, other=float("inf")), axis=0)
        sz = tl.min(tl.load(zscale + p, mask=o < GQ, other=float("inf")), axis=0)
    return sd, sz


@triton.jit
def record_if_bad(flag, x, GUARD: tl.constexpr):
    """The guard's first launch (GUARD 1): set ``flag`` (a scalar pointer, zeroed before) where the
    [M, N] tile ``x`` holds a value that is not finite (as x * 0: NaN there); set only, never
    cleared, so that any of a chunk's programs flags it."""
    if GUARD == 1:
        bad = tl.sum(tl.sum(x * 0.0, 1), 0)
        if bad != bad:
            tl.store(flag, 1)


@functools.lru_cache(maxsize=16)
def multiprocessors(device: torch.device):
    """The CUDA card's multiprocessor count (tilings that depend on how many programs run at once);
    None elsewhere (the interpreter)."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).multi_processor_count


def on_device_of(x: torch.Tensor):
    """The CUDA device of ``x`` made current for the launches inside, when it is not already:
    Triton launches on the current device, so a tensor on another card would be read from the
    wrong one (a no-op on the common path, one index comparison)."""
    if x.is_cuda and x.device.index != torch.cuda.current_device():
        return torch.cuda.device(x.device)
    return contextlib.nullcontext()


def dot_precision(dtype, float32_outputs: bool) -> str:
    """Tensor-core precision of the kernels' products.

    Tiles are float32 whatever the input, and three-pass TF32 keeps float32 accuracy. One pass
    (a third of the tensor-core work, no register spills from split operands) rounds the float32
    intermediates (A, the gated operands, the state) to 10 mantissa bits: measured on an H100,
    about 1e-3 relative error in o, under the 2^-9 rounding of a bfloat16 output but 3x that of a
    float16 one, and far above float32 outputs (final state, dg). So one pass only where every
    output is bfloat16: the forward of bfloat16 inputs without the final state.
    """
    return "tf32" if dtype == torch.bfloat16 and not float32_outputs else "tf32x3"


def diag_span(prec: str) -> float:
    """Largest per-channel span of the log-decay over one 16-row sub-block (the sum of its g) for
    which the kernels form the block's own pairs as one matrix product of centred operands,
    ``exp(G_r - c)`` and ``exp(c - G_s)`` with c the middle of the span, instead of a pairwise-decay
    tile (a [16, 16, BK] tensor of exponentials, half of the intra and key kernels' time).

    The centred exponents are differences of in-block sums, so their rounding grows with the span
    where the tile's interval sums do not: 16 keeps it at float32's own level (three-pass
    products); one-pass TF32 products carry 2^-11 errors anyway, and 80 keeps ``exp(span)`` of the
    masked upper pairs finite; two-term float16 ("f16x3") takes 16 as three-pass does (its split
    keeps 2^-35 of an operand down to float16's normal range, 6e-5, and e^-8 stays above it). Wider
    spans (fast-forgetting channels) take the tile.
    """
    return 80.0 if prec == "tf32" else 16.0


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) in plain Python: triton.cdiv is a JIT function, and calling one from the host
    costs microseconds, a visible share of a one-token decode step."""
    return -(-a // b)


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (plain Python, like ``cdiv``)."""
    return 1 << max(n - 1, 0).bit_length()


def register_cap(x: torch.Tensor, n: int) -> dict:
    """Launch option capping a kernel at ``n`` registers a thread (NVIDIA only; other backends and
    the interpreter take no such option): fewer registers let more programs share a
    multiprocessor, worth a few spilled bytes where the kernel waits on memory."""
    return {"maxnreg": n} if x.is_cuda and torch.version.hip is None else {}


MIN_TILE = 32  # 16-wide tiles in the state kernels fault on an H100 with Triton 3.6 (illegal address)


def gate_mode(x, full_ndim: int = 4) -> int:
    if x is None:
        return 0
    if isinstance(x, float):
        return 3 if x == 0.0 else 1
    return 2 if x.ndim == full_ndim else 1


@triton.jit
def chunk_rows(chunk_start, chunk_end, i_c):
    """First row (int64, so offsets past 2^31 elements stay exact) and length of chunk ``i_c``."""
    t0 = tl.load(chunk_start + i_c).to(tl.int64)
    return t0, (tl.load(chunk_end + i_c) - t0).to(tl.int32)


@triton.jit
def value_tile(t0, o_t, m_t, i_hv, HV: tl.constexpr, V: tl.constexpr, i_v, BV: tl.constexpr):
    """Columns, mask and offsets of one [BT, BV] tile of value head ``i_hv`` of a [T, HV, V] tensor."""
    o_v = i_v * BV + tl.arange(0, BV)
    return o_v, m_t[:, None] & (o_v < V)[None, :], (t0 + o_t[:, None]) * HV * V + i_hv * V + o_v[None, :]


@triton.jit
def load_rows(ptr, t0, rows, L, i_h, H: tl.constexpr, o_k, K: tl.constexpr):
    """Rows ``t0 + rows`` (only ``0 <= rows < L``) of head ``i_h`` of a ``[T, H, K]`` tensor,
    columns ``o_k``, as float32 (zeros outside)."""
    p = ptr + (t0 + rows[:, None]) * (H * K) + i_h * K + o_k[None, :]
    m = ((rows >= 0) & (rows < L))[:, None] & (o_k < K)[None, :]
    return tl.load(p, mask=m, other=0.0).to(tl.float32)


@triton.jit
def load_scalar_rows(ptr, t0, rows, L, i_h, H: tl.constexpr):
    """Rows ``t0 + rows`` of head ``i_h`` of a ``[T, H]`` per-head gate, as float32 ``[BT]``."""
    return tl.load(ptr + (t0 + rows) * H + i_h, mask=(rows >= 0) & (rows < L), other=0.0).to(tl.float32)


@triton.jit
def chunk_gates(g, b, k, t0, o_t, L, i_h, H: tl.constexpr, o_k, K: tl.constexpr,
                BT: tl.constexpr, BK: tl.constexpr, G_MODE: tl.constexpr, B_MODE: tl.constexpr):
    """Per-chunk gate factors (float32): exp(G_r) [BT, BK|1], exp(G_C - G_r) [BT, BK|1],
    exp(G_C) [BK|1] and the erase direction e = b * k. All exponents are sums formed by
    additions (G_C - G_r = sum over (r, C] of the next rows' g)."""
    b_k = load_rows(k, t0, o_t, L, i_h, H, o_k, K)
    if G_MODE == GATE_CHANNEL:
        b_g = load_rows(g, t0, o_t, L, i_h, H, o_k, K)
        b_gn = load_rows(g, t0, o_t + 1, L, i_h, H, o_k, K)
        b_gam = tl.exp(tl.cumsum(b_g, axis=0))
        b_tail = tl.exp(tl.cumsum(b_gn, axis=0, reverse=True))
        b_dec = tl.exp(tl.sum(b_g, axis=0))
    elif G_MODE == GATE_SCALAR:
        b_g = load_scalar_rows(g, t0, o_t, L, i_h, H)
        b_gn = load_scalar_rows(g, t0, o_t + 1, L, i_h, H)
        b_gam = tl.exp(tl.cumsum(b_g, axis=0))[:, None]
        b_tail = tl.exp(tl.cumsum(b_gn, axis=0, reverse=True))[:, None]
        b_dec = tl.exp(tl.sum(b_g, axis=0)) + tl.zeros([BK], dtype=tl.float32)
    else:
        b_gam = tl.full([BT, 1], 1.0, tl.float32)
        b_tail = tl.full([BT, 1], 1.0, tl.float32)
        b_dec = tl.full([BK], 1.0, tl.float32)
    return b_k, apply_erase(b_k, b, t0, o_t, L, i_h, H, o_k, K, B_MODE), b_gam, b_tail, b_dec


@triton.jit
def apply_erase(b_k, b, t0, rows, L, i_h, H: tl.constexpr, o_k, K: tl.constexpr, B_MODE: tl.constexpr):
    """e = b * k for rows ``t0 + rows`` of key head ``i_h`` (``b_k`` already loaded); k without b."""
    b_e = b_k
    if B_MODE == GATE_CHANNEL:
        b_e = b_k * load_rows(b, t0, rows, L, i_h, H, o_k, K)
    elif B_MODE == GATE_SCALAR:
        b_e = b_k * load_scalar_rows(b, t0, rows, L, i_h, H)[:, None]
    return b_e


@triton.jit
def load_write(v, w, t0, o_t, L, i_hv, HV: tl.constexpr, o_v, V: tl.constexpr, W_MODE: tl.constexpr):
    """z = w * v for one chunk and block of value columns, float32 [BT, BV]."""
    b_z = load_rows(v, t0, o_t, L, i_hv, HV, o_v, V)
    if W_MODE == GATE_CHANNEL:
        b_z = b_z * load_rows(w, t0, o_t, L, i_hv, HV, o_v, V)
    elif W_MODE == GATE_SCALAR:
        b_z = b_z * load_scalar_rows(w, t0, o_t, L, i_hv, HV)[:, None]
    return b_z


@dataclass
class Chunks:
    """The chunk table of a (packed) batch: global start and end row of every chunk."""

    start: torch.Tensor   # int32 [count]
    end: torch.Tensor     # int32 [count]
    seq: torch.Tensor     # int32 [count]: the sequence of each chunk
    first: torch.Tensor   # int32 [N]: index of each sequence's first chunk
    count: int


def make_chunks(offsets: list, BT: int, device) -> Chunks:
    starts, ends, first, seq = [], [], [], []
    for n, (s, e) in enumerate(zip(offsets, offsets[1:])):
        first.append(len(starts))
        for c in range(s, e, BT):
            starts.append(c)
            ends.append(min(c + BT, e))
            seq.append(n)
    count = len(starts)
    # kernels get a valid pointer even without chunks
    starts, ends, seq = starts or [0], ends or [0], seq or [0]
    # one page-locked copy: a pageable host-to-device copy waits for the stream, three of them per
    # call made every layer's forward and backward wait for the GPU
    table = torch.tensor(starts + ends + seq + first, dtype=torch.int32)
    if torch.device(device).type == "cuda":
        table = table.pin_memory().to(device, non_blocking=True)
    else:
        table = table.to(device)
    n = len(starts)
    return Chunks(start=table[:n], end=table[n:2 * n], seq=table[2 * n:3 * n], first=table[3 * n:], count=count)
