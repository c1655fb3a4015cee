"""The Triton backend of ``gated_delta_rule2``: launchers, ``torch.library`` custom ops with
fake implementations and registered autograd (so ``torch.compile(fullgraph=True)`` traces
through), and the public entry points.

Forward: ``intra`` (per chunk: Aqk and A = (I + T)^-1) -> ``state`` (per sequence: the state
recurrence with the output fused in). Backward: see ``backward.py``. Decoding: ``decode.py``.
"""

from __future__ import annotations

import contextlib
import functools

from typing import Iterator, List, Optional

import torch

from ...utils import last_tensor_cache
from ..checks import Gate
from . import backward, intra
from .backward import chunk_bwd
from .common import WHOLE_FORMS, Chunks, dot_precision, gate_mode, make_chunks, on_device_of
from .decode import fused_recurrent_fwd
from .intra import chunk_intra_fwd
from .l2norm import l2norm
from .state import chunk_state_fwd

BT = 64
# Head dims below this are zero-padded on the GPU. It was 64 while the H100 gave wrong key
# gradients at K = 16 (Triton 3.6, 16-wide tiles); with every tile at least MIN_TILE wide,
# scripts/head_dim_probe.py found K = V = 16 and 32 right against float64 (channel and scalar
# gates, grouped heads, packed sequences with initial states, float32 and bfloat16; H100,
# Triton 3.6, 2026-12-06). Narrower heads are padded: the products need 16 rows.
MIN_HEAD_DIM = 16
DECODE_MAX_T = 16  # up to this many tokens per sequence without gradients, the token loop wins
# Aqk as float16 where the walk's operands are (``intra.chunk_intra_fwd``'s ``aqk_dtype``): half its
# bytes written by the intra kernel and read by every value block of the walk, the walk's float16
# products bit for bit unchanged. H100, 2026-12-08 (stage profile, one process), inference forward
# with the one-pass halving solve: 1.481 -> 1.415 ms at 2x8K, 1.460 -> 1.439 at 8x2K, 1.746 -> 1.731
# at 1x16K (alone, with the blocks solve: -0.058, -0.012, +0.022 ms); its GPU tests passed (7 cases).
AQK_FLOAT16 = True


@contextlib.contextmanager
def whole_chunk_forms(mode: str) -> Iterator[None]:
    """The intra and key kernels' whole-chunk setting (``"off"``, ``"inline"`` or ``"split"``,
    see ``common.WHOLE_FORMS``) for the duration of a block: how the GPU tests and the benchmark
    check and time a setting before it becomes the default. Process-wide, not thread-safe."""
    if mode not in WHOLE_FORMS:
        raise ValueError(f"whole_chunk_forms: mode must be one of {sorted(WHOLE_FORMS)}, got {mode!r}")
    saved = intra.WHOLE_CHUNK, backward.KEY_WHOLE
    intra.WHOLE_CHUNK = backward.KEY_WHOLE = mode
    try:
        yield
    finally:
        intra.WHOLE_CHUNK, backward.KEY_WHOLE = saved


def _chunks(cu: torch.Tensor, uniform_T: int) -> Chunks:
    """The chunk table. Equal-length batches need no device-to-host copy of the offsets and reuse
    one cached table per shape instead of copying a new one to the device in every layer's
    forward and backward."""
    if uniform_T > 0:
        return _uniform_chunks(cu.numel() - 1, uniform_T, cu.device)
    return _packed_chunks(cu)


@last_tensor_cache
def _packed_chunks(cu: torch.Tensor) -> Chunks:
    # the same offsets reach every layer's forward and backward: one host copy and one table
    return make_chunks(cu.tolist(), BT, cu.device)


@functools.lru_cache(maxsize=64)
def _uniform_chunks(N: int, T: int, device: torch.device) -> Chunks:
    return make_chunks([i * T for i in range(N + 1)], BT, device)


def _opt(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return x if x is not None and x.numel() > 0 else None


@torch.library.custom_op("gdn2::chunk_fwd", mutates_args=())
def _chunk_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: Optional[torch.Tensor],
                  b: Optional[torch.Tensor], w: Optional[torch.Tensor], h0: Optional[torch.Tensor],
                  cu: torch.Tensor, uniform_T: int, scale: float, b_zero: bool,
                  output_final_state: bool, keep_intra: bool, normalized: bool) -> List[torch.Tensor]:
    """[o, final state, A, Aqk]; A and Aqk (else empty) with ``keep_intra``, made at the backward's
    precision, so the backward recomputes only the gated operands: the intra products and the
    solve are then computed once per training step instead of twice, for 2 x 64 float32 per token
    and key head of memory. ``normalized``: q and k are L2-normalised (bounds the gated operands,
    see below)."""
    chunks = _chunks(cu, uniform_T)
    b_arg = 0.0 if b_zero else b
    modes = (gate_mode(g, 3), gate_mode(b_arg, 3), gate_mode(w, 3))
    prec = dot_precision(q.dtype, float32_outputs=output_final_state)
    intra_prec = dot_precision(q.dtype, float32_outputs=True) if keep_intra else prec
    # the walk's operands in float16 when its products are one-pass (see chunk_gated_fwd) and
    # unit q and k keep them far inside its range (arbitrary ones could pass 65504)
    gated_dtype = torch.float16 if prec == "tf32" and normalized else torch.float32
    with on_device_of(q):
        A, Aqk, gated = chunk_intra_fwd(q, k, g, b_arg, scale, chunks, modes[0], modes[1], BT=BT, prec=intra_prec,
                                        gated_dtype=gated_dtype, normalized=normalized,
                                        aqk_dtype=gated_dtype if AQK_FLOAT16 and not keep_intra else None)
        o, ht, _, _ = chunk_state_fwd(gated, v, w, A, Aqk, h0, cu, chunks, modes, output_final_state, BT=BT,
                                      prec=prec)
    empty = lambda: q.new_empty(0, dtype=torch.float32)  # noqa: E731  (one each: outputs may not alias)
    kept = [A if A is not None else empty(), Aqk] if keep_intra else [empty(), empty()]
    return [o, ht if ht is not None else empty()] + kept


def _fake_outputs(q, k, v, cu, output_final_state):
    N, HV, K, V = cu.shape[0] - 1, v.shape[-2], k.shape[-1], v.shape[-1]
    ht = q.new_empty(N, HV, K, V, dtype=torch.float32) if output_final_state else q.new_empty(0, dtype=torch.float32)
    return [v.new_empty(v.shape, dtype=q.dtype), ht]


@_chunk_fwd_op.register_fake
def _(q, k, v, g, b, w, h0, cu, uniform_T, scale, b_zero, output_final_state, keep_intra, normalized):
    T, H = k.shape[0], k.shape[1]
    intra = lambda keep: q.new_empty((T, H, BT) if keep else (0,), dtype=torch.float32)  # noqa: E731
    return _fake_outputs(q, k, v, cu, output_final_state) + [intra(keep_intra and not b_zero), intra(keep_intra)]


@torch.library.custom_op("gdn2::chunk_bwd", mutates_args=())
def _chunk_bwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: Optional[torch.Tensor],
                  b: Optional[torch.Tensor], w: Optional[torch.Tensor], h0: Optional[torch.Tensor],
                  cu: torch.Tensor, uniform_T: int, scale: float, b_zero: bool, do: torch.Tensor,
                  dht: Optional[torch.Tensor], A: torch.Tensor, Aqk: torch.Tensor,
                  normalized: bool) -> List[torch.Tensor]:
    kept = (_opt(A), Aqk) if Aqk.numel() > 0 else None
    with on_device_of(q):
        grads = chunk_bwd(q, k, v, g, 0.0 if b_zero else b, w, h0, scale, cu, _chunks(cu, uniform_T), do,
                          _opt(dht), BT=BT, kept=kept, normalized=normalized)
    return [x if x is not None else q.new_empty(0) for x in grads]


@_chunk_bwd_op.register_fake
def _(q, k, v, g, b, w, h0, cu, uniform_T, scale, b_zero, do, dht, A, Aqk, normalized):
    like = lambda x, dt=None: x.new_empty(x.shape, dtype=dt or x.dtype) if x is not None else q.new_empty(0)  # noqa: E731
    return [like(q), like(k), like(v), like(g), like(b, torch.float32), like(w, torch.float32),
            like(h0, torch.float32)]


def _setup(ctx, inputs, output):
    q, k, v, g, b, w, h0, cu, uniform_T, scale, b_zero, _, _, normalized = inputs
    ctx.save_for_backward(q, k, v, g, b, w, h0, cu, output[2], output[3])
    ctx.consts = (uniform_T, scale, b_zero, normalized)


def _backward(ctx, grads):
    do, dht = grads[:2]   # A and Aqk are kept for the backward, not differentiated
    q, k, v, g, b, w, h0, cu, A, Aqk = ctx.saved_tensors
    uniform_T, scale, b_zero, normalized = ctx.consts
    # the kernels index dense memory: a cotangent may be a broadcast view (S.sum() gives one of
    # stride 0, one element of storage), which read as dense is garbage or out of bounds
    dht = dht.contiguous() if dht is not None else None
    dq, dk, dv, dg, db, dw, dh0 = _chunk_bwd_op(q, k, v, g, b, w, h0, cu, uniform_T, scale, b_zero,
                                                do.contiguous(), dht, A, Aqk, normalized)
    cast = lambda d, x: d.to(x.dtype) if x is not None else None  # noqa: E731
    return (dq, dk, dv, cast(dg, g), cast(db, b), cast(dw, w), cast(dh0, h0), None, None, None, None, None, None,
            None)


torch.library.register_autograd("gdn2::chunk_fwd", _backward, setup_context=_setup)


def _fused_recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: Optional[torch.Tensor],
                     b: Optional[torch.Tensor], w: Optional[torch.Tensor], h0: Optional[torch.Tensor],
                     cu: torch.Tensor, scale: float, b_zero: bool, output_final_state: bool,
                     use_qk_l2norm: bool) -> List[torch.Tensor]:
    o, ht = fused_recurrent_fwd(q, k, v, g, 0.0 if b_zero else b, w, scale, h0, cu, output_final_state,
                                use_qk_l2norm)
    return [o, ht if ht is not None else q.new_empty(0, dtype=torch.float32)]


# eager decoding calls _fused_recurrent itself; compiled code goes through the op
_fused_recurrent_op = torch.library.custom_op("gdn2::fused_recurrent_fwd", _fused_recurrent, mutates_args=())


@_fused_recurrent_op.register_fake
def _(q, k, v, g, b, w, h0, cu, scale, b_zero, output_final_state, use_qk_l2norm):
    return _fake_outputs(q, k, v, cu, output_final_state)


def _dense(q, k, v, g, b, w, initial_state):
    """The inputs as the kernels read them: dense, float32 g and initial state, number gates as
    per-head tensors except b = 0 (no erase: ``b_zero``, b None). Returns the seven and ``b_zero``."""
    B, T, H, _ = q.shape
    b_zero = isinstance(b, float) and b == 0.0
    if isinstance(b, float) and not b_zero:
        b = torch.full((B, T, H), b, device=q.device, dtype=torch.float32)
    if isinstance(w, float):
        w = torch.full((B, T, v.shape[2]), w, device=q.device, dtype=torch.float32)
    g = g.float() if isinstance(g, torch.Tensor) else g
    h0 = initial_state.float() if initial_state is not None else None
    return (*map(_saveable, (q, k, v, g)), None if b_zero else _saveable(b), _saveable(w), _saveable(h0), b_zero)


def _saveable(x):
    """``x`` contiguous; an inference tensor (made under ``torch.inference_mode``) is copied where
    autograd may record: the forward saves its inputs for the backward, which inference tensors
    refuse (the PyTorch backends' first op on one makes a normal tensor)."""
    if not isinstance(x, torch.Tensor):
        return x
    if torch.compiler.is_compiling():   # a traced graph holds no inference tensors (nor can ask)
        return x.contiguous()
    return x.clone(memory_format=torch.contiguous_format) if x.is_inference() and torch.is_grad_enabled() \
        else x.contiguous()


def _prepare(q, k, v, g, b, w, initial_state, cu_seqlens):
    """``_dense`` flattened to ``[B*T, ...]`` (views), with the offsets and ``uniform_T``."""
    B, T = q.shape[:2]
    *inputs, h0, b_zero = _dense(q, k, v, g, b, w, initial_state)
    flat = lambda x: x.view(B * T, *x.shape[2:]) if isinstance(x, torch.Tensor) else x  # noqa: E731
    if cu_seqlens is None:
        cu, uniform_T = _offsets(B, T, q.device), T
    else:
        cu, uniform_T = _device_offsets(cu_seqlens, q.device), 0
    return (*map(flat, inputs), h0, cu, uniform_T, b_zero)


def _final_state(ht, q, output_final_state):
    if not output_final_state:
        return None
    return ht.double() if q.dtype == torch.float64 else ht


def triton_gdn2(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: Gate, b: Gate, w: Gate,
                scale: float, initial_state: Optional[torch.Tensor], output_final_state: bool,
                cu_seqlens: Optional[torch.Tensor], use_qk_l2norm: bool = False):
    """Chunkwise GDN-2 in Triton over validated inputs; shapes as in ``gated_delta_rule2``.
    Without gradients and with at most ``DECODE_MAX_T`` tokens it runs the decode kernel."""
    needs_grad = torch.is_grad_enabled() and any(
        isinstance(x, torch.Tensor) and x.requires_grad for x in (q, k, v, g, b, w, initial_state))
    if not needs_grad and cu_seqlens is None and q.shape[1] <= DECODE_MAX_T:
        return fused_recurrent_gdn2(q, k, v, g, b, w, scale, initial_state, output_final_state, None,
                                    use_qk_l2norm)
    if use_qk_l2norm:
        q, k = l2norm(q), l2norm(k)
    K, V = q.shape[-1], v.shape[-1]
    if q.is_cuda and min(K, V) < MIN_HEAD_DIM:
        q, k, v, g, b, w, initial_state = _pad_heads(q, k, v, g, b, w, initial_state)
    qf, kf, vf, gf, bf, wf, h0, cu, uniform_T, b_zero = _prepare(q, k, v, g, b, w, initial_state, cu_seqlens)
    o, ht, _, _ = _chunk_fwd_op(qf, kf, vf, gf, bf, wf, h0, cu, uniform_T, scale, b_zero, output_final_state,
                                needs_grad, use_qk_l2norm)
    o, ht = o.reshape(*q.shape[:2], *v.shape[2:]), _final_state(ht, q, output_final_state)
    return o[..., :V], (ht[..., :K, :V] if ht is not None else None)


def _pad_heads(q, k, v, g, b, w, h0):
    """Zero-pad head dims below MIN_HEAD_DIM: a zero key/query column and a zero log-decay leave
    the real columns untouched, and zero value columns stay zero."""
    pad = lambda x, n: x if not isinstance(x, torch.Tensor) or x.shape[-1] >= n else \
        torch.nn.functional.pad(x, (0, n - x.shape[-1]))  # noqa: E731
    Kp, Vp = max(q.shape[-1], MIN_HEAD_DIM), max(v.shape[-1], MIN_HEAD_DIM)
    key = lambda x: pad(x, Kp) if isinstance(x, torch.Tensor) and x.ndim == 4 else x  # noqa: E731
    val = lambda x: pad(x, Vp) if isinstance(x, torch.Tensor) and x.ndim == 4 else x  # noqa: E731
    if h0 is not None:
        h0 = torch.nn.functional.pad(h0, (0, Vp - h0.shape[-1], 0, Kp - h0.shape[-2]))
    return key(q), key(k), val(v), key(g), key(b), val(w), h0


def fused_recurrent_gdn2(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: Gate, b: Gate, w: Gate,
                         scale: float, initial_state: Optional[torch.Tensor], output_final_state: bool,
                         cu_seqlens: Optional[torch.Tensor], use_qk_l2norm: bool = False):
    """Token-by-token GDN-2 in one Triton kernel (decoding, q/k L2 norm fused); inference only."""
    if torch.is_grad_enabled() and any(isinstance(x, torch.Tensor) and x.requires_grad
                                       for x in (q, k, v, g, b, w, initial_state)):
        raise RuntimeError("the fused recurrent (decode) kernel has no backward: call it under "
                           "torch.no_grad() / torch.inference_mode(), or use the chunk kernels for training")
    # a one-token step is host-bound (one kernel a layer), so this path does no more than it must:
    # [B, T, ...] tensors go in as they are (the kernel indexes tokens flat), offsets are cached,
    # and eager calls skip the custom-op dispatch, a large share of the step's host time
    B, T = q.shape[:2]
    *inputs, b_zero = _dense(q, k, v, g, b, w, initial_state)
    if torch.compiler.is_compiling():
        run, offsets = _fused_recurrent_op, _offsets
    else:
        run, offsets = _fused_recurrent, _cached_offsets
    cu = offsets(B, T, q.device) if cu_seqlens is None else _device_offsets(cu_seqlens, q.device)
    o, ht = run(*inputs, cu, scale, b_zero, output_final_state, use_qk_l2norm)
    # o is written in v's shape: no reshape on this host-bound path
    return o, _final_state(ht, q, output_final_state)


@last_tensor_cache
def _device_offsets(cu_seqlens: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Packed offsets as the kernels read them: int32, dense, on ``device`` (a host tensor or a
    strided view is accepted by the PyTorch backends, so it is here too). Remembered for the last
    offsets, so that int64 ones become one int32 tensor a step, whose chunk table is then cached."""
    return _saveable(cu_seqlens.to(device=device, dtype=torch.int32))


def _offsets(B: int, T: int, device: torch.device) -> torch.Tensor:
    """``[0, T, 2T, ..., B T]`` as int32, in one launch."""
    return torch.arange(0, (B + 1) * T, T, device=device, dtype=torch.int32) if T > 0 else \
        torch.zeros(B + 1, device=device, dtype=torch.int32)


def _cached_offsets(B: int, T: int, device: torch.device) -> torch.Tensor:
    """``_offsets`` made once per shape, except while a CUDA graph is captured: a tensor made then
    holds what a kernel that was recorded but never run wrote."""
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return _offsets(B, T, device)
    return _offsets_cache(B, T, device)


@functools.lru_cache(maxsize=64)
def _offsets_cache(B: int, T: int, device: torch.device) -> torch.Tensor:
    return _offsets(B, T, device)
