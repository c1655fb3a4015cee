"""The public GDN-2 operator, its family wrappers, and the one place a backend is chosen."""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch

from .checks import Gate, check_inputs, check_qkv
from .chunk import chunk_gdn2
from .recurrent import recurrent_gdn2

BACKENDS = ("auto", "recurrent", "chunk", "triton")
# the Triton kernels hold a chunk's [K, BV] state tile and [64, K] operand tiles on chip: widths
# past this exceed an H100's registers and shared memory (validated up to here)
TRITON_MAX_HEAD_DIM = 256


def _triton_backend() -> Optional[Callable]:
    try:
        from .triton import triton_gdn2
    except ImportError:
        return None
    return triton_gdn2


def _resolve_backend(backend: str, q: torch.Tensor, K: int, V: int) -> Callable:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    fits = max(K, V) <= TRITON_MAX_HEAD_DIM
    # the Triton kernels compute in float32: float64 inputs (a gradient check, a reference) stay
    # with the PyTorch backends, which keep their precision
    if backend == "auto":
        fast = _triton_backend() if q.is_cuda and fits and q.dtype != torch.float64 else None
        return fast if fast is not None else chunk_gdn2
    if backend == "triton":
        if q.dtype == torch.float64:
            raise ValueError("backend='triton' computes in float32 and takes float32, bfloat16 or float16 inputs, "
                             "got float64; use backend='chunk' or 'recurrent' (or 'auto', which does)")
        if not fits:
            raise ValueError(f"backend='triton' supports head dims K, V up to {TRITON_MAX_HEAD_DIM}, got K = {K}, "
                             f"V = {V}; use backend='chunk' (or 'auto', which does)")
        fast = _triton_backend()
        if fast is None:
            raise ValueError("backend='triton' needs the triton package (pip install 'gdn2[triton]')")
        return fast
    return {"recurrent": recurrent_gdn2, "chunk": chunk_gdn2}[backend]


def gated_delta_rule2(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: Gate = None,
                      b: Gate = None, w: Gate = None, *, scale: Optional[float] = None,
                      initial_state: Optional[torch.Tensor] = None, output_final_state: bool = False,
                      cu_seqlens: Optional[torch.Tensor] = None, use_qk_l2norm: bool = False,
                      backend: str = "auto"):
    """Gated DeltaNet-2: ``S_t = (I - k_t (b_t*k_t)^T) Diag(exp g_t) S_{t-1} + k_t (w_t*v_t)^T``,
    ``o_t = S_t^T (scale * q_t)``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, HV, V]`` with ``HV % H == 0`` (value head j reads
            key head ``j // (HV // H)``).
        g: log-decay (``<= 0``), ``[B, T, H, K]`` channel-wise, ``[B, T, H]`` per head, or None.
        b: erase gate, ``[B, T, H, K]``, ``[B, T, H]``, a constant (``0.0`` turns the erase off:
            linear attention / GLA) or None (= 1). Values in ``[0, 2]``.
        w: write gate, ``[B, T, HV, V]``, ``[B, T, HV]``, a constant or None (= 1).
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, HV, K, V]`` float32 (float64 allowed with float64 inputs), N = B or
            the number of packed sequences.
        output_final_state: also return the state after the last token of every sequence.
        cu_seqlens: ``[N + 1]`` int offsets of packed sequences (B must be 1); the state resets at
            every boundary.
        use_qk_l2norm: L2-normalise q and k over K first (as the GDN-2 layer does).
        backend: ``"recurrent"`` (float64 token loop, the reference), ``"chunk"`` (PyTorch),
            ``"triton"`` (CUDA kernels, K and V up to 256) or ``"auto"`` (triton on CUDA when available
            and the head dims fit, else chunk).

    Returns:
        ``o`` ``[B, T, HV, V]`` in q's dtype, and the final state ``[N, HV, K, V]`` (float32; float64
        for float64 inputs) or None.

    >>> B, T, H, K = 1, 10, 2, 8
    >>> q, k = torch.randn(B, T, H, K), torch.randn(B, T, H, K)
    >>> v = torch.randn(B, T, 2 * H, 16)
    >>> g = -torch.rand(B, T, H, K)
    >>> b, w = torch.rand(B, T, H, K), torch.rand(B, T, 2 * H, 16)
    >>> o, S = gated_delta_rule2(q, k, v, g, b, w, use_qk_l2norm=True, output_final_state=True)
    >>> o.shape, S.shape
    (torch.Size([1, 10, 4, 16]), torch.Size([1, 4, 8, 16]))
    """
    dims = check_inputs(q, k, v, g, b, w, scale, initial_state, cu_seqlens)
    fn = _resolve_backend(backend, q, dims.K, dims.V)
    scale = dims.K ** -0.5 if scale is None else float(scale)
    b, w = _constant_gate(b), _constant_gate(w)
    return fn(q, k, v, g, b, w, scale, initial_state, output_final_state, cu_seqlens, use_qk_l2norm)


def _constant_gate(x: Gate) -> Gate:
    """Numbers become floats; a constant 1 is the same as no gate."""
    if isinstance(x, (int, float)):
        return None if float(x) == 1.0 else float(x)
    return x


def _tied_write(beta: torch.Tensor, HV: int) -> torch.Tensor:
    """A key-head scalar gate as the value-head write gate (repeat only the small [B, T, H])."""
    H = beta.shape[2]
    return beta if HV == H else beta.repeat_interleave(HV // H, dim=2)


def _check_beta(beta, q, k, v) -> None:
    check_qkv(q, k, v)   # before beta's shape is read off q's
    if isinstance(beta, torch.Tensor) and not beta.is_floating_point():
        raise TypeError(f"beta must be a floating-point tensor, got dtype {beta.dtype}")
    if not isinstance(beta, torch.Tensor) or tuple(beta.shape) != tuple(q.shape[:3]):
        got = list(beta.shape) if isinstance(beta, torch.Tensor) else type(beta).__name__
        raise ValueError(f"beta must have shape [B, T, H] = {list(q.shape[:3])}, got {got}")


def kda(q, k, v, g, beta, **kwargs):
    """Kimi Delta Attention: channel decay g ``[B, T, H, K]``, tied erase/write ``beta`` ``[B, T, H]``.

    >>> q, k, v = torch.randn(1, 8, 2, 4), torch.randn(1, 8, 2, 4), torch.randn(1, 8, 2, 4)
    >>> kda(q, k, v, -torch.rand(1, 8, 2, 4), torch.rand(1, 8, 2))[0].shape
    torch.Size([1, 8, 2, 4])
    """
    _check_beta(beta, q, k, v)
    return gated_delta_rule2(q, k, v, g, beta, _tied_write(beta, v.shape[2]), **kwargs)


def gated_delta_rule(q, k, v, g, beta, **kwargs):
    """Gated DeltaNet: per-head decay g ``[B, T, H]``, tied erase/write ``beta`` ``[B, T, H]``.

    >>> q, k, v = torch.randn(1, 8, 2, 4), torch.randn(1, 8, 2, 4), torch.randn(1, 8, 2, 4)
    >>> gated_delta_rule(q, k, v, -torch.rand(1, 8, 2), torch.rand(1, 8, 2))[0].shape
    torch.Size([1, 8, 2, 4])
    """
    _check_beta(beta, q, k, v)
    if g is not None and not isinstance(g, torch.Tensor):
        raise TypeError(f"g must be a log-decay tensor [B, T, H] or None, got {g!r}")
    if g is not None and g.ndim != 3:
        raise ValueError(f"g must have shape [B, T, H] = {list(q.shape[:3])} (one decay per head), got {list(g.shape)}")
    return gated_delta_rule2(q, k, v, g, beta, _tied_write(beta, v.shape[2]), **kwargs)


def delta_rule(q, k, v, beta, **kwargs):
    """DeltaNet: no decay, tied erase/write ``beta`` ``[B, T, H]``.

    >>> q, k, v = torch.randn(1, 8, 2, 4), torch.randn(1, 8, 2, 4), torch.randn(1, 8, 2, 4)
    >>> delta_rule(q, k, v, torch.rand(1, 8, 2))[0].shape
    torch.Size([1, 8, 2, 4])
    """
    _check_beta(beta, q, k, v)
    return gated_delta_rule2(q, k, v, None, beta, _tied_write(beta, v.shape[2]), **kwargs)


def gated_linear_attention(q, k, v, g, **kwargs):
    """Gated linear attention (GLA / Mamba-2 style): decay g (``[B, T, H, K]`` or ``[B, T, H]``),
    no erase (b = 0), full write (w = 1).

    >>> q, k, v = torch.randn(1, 8, 2, 4), torch.randn(1, 8, 2, 4), torch.randn(1, 8, 2, 4)
    >>> gated_linear_attention(q, k, v, -torch.rand(1, 8, 2, 4))[0].shape
    torch.Size([1, 8, 2, 4])
    """
    return gated_delta_rule2(q, k, v, g, 0.0, None, **kwargs)


FAMILY: Dict[str, Callable] = {
    "gdn2": gated_delta_rule2, "kda": kda, "gdn": gated_delta_rule,
    "deltanet": delta_rule, "gla": gated_linear_attention,
}
