"""Input validation for the GDN-2 operator family.

Every backend receives inputs that passed these checks, so kernels never see a shape they
were not written for. Errors name the argument and say what was expected and what came.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import torch

from ..utils import last_tensor_cache

Gate = Union[None, float, torch.Tensor]


@dataclass(frozen=True)
class Dims:
    """Sizes of one call: batch, time, key heads, value heads, key and value widths, sequences."""

    B: int
    T: int
    H: int
    HV: int
    K: int
    V: int
    N: int


def _shape(x: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in x.shape) + "]"


def _check_float_tensor(name: str, x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def _check_gate(name: str, x: Gate, B: int, T: int, heads: int, width: int, heads_name: str,
                width_name: str, device: torch.device, allow_float: bool) -> None:
    if x is None:
        return
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        if not allow_float:
            raise TypeError(f"{name} must be a tensor or None, got the number {x}")
        return
    _check_float_tensor(name, x)
    full = (B, T, heads, width)
    scalar = (B, T, heads)
    if tuple(x.shape) not in (full, scalar):
        raise ValueError(
            f"{name} must have shape [B, T, {heads_name}, {width_name}] = {list(full)} (channel-wise) "
            f"or [B, T, {heads_name}] = {list(scalar)} (one value per head), got {_shape(x)}")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but q is on {device}")


@last_tensor_cache
def check_cu_seqlens(cu_seqlens: torch.Tensor, B: int, T: int) -> int:
    """Validate packed-sequence offsets and return the number of sequences N."""
    if not isinstance(cu_seqlens, torch.Tensor):
        raise TypeError(f"cu_seqlens must be a torch.Tensor, got {type(cu_seqlens).__name__}")
    if B != 1:
        raise ValueError(f"cu_seqlens requires batch size B == 1 (sequences packed along T), got B = {B}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"cu_seqlens must be an int32 or int64 tensor, got dtype {cu_seqlens.dtype}")
    if cu_seqlens.ndim != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must have shape [N + 1] with N >= 1, got {_shape(cu_seqlens)}")
    offsets = cu_seqlens.tolist()
    if offsets[0] != 0:
        raise ValueError(f"cu_seqlens must start at 0, got {offsets[0]}")
    if any(b < a for a, b in zip(offsets, offsets[1:])):
        raise ValueError(f"cu_seqlens must be non-decreasing, got {offsets}")
    if offsets[-1] != T:
        raise ValueError(f"cu_seqlens must end at T = {T}, got {offsets[-1]}")
    return len(offsets) - 1


def check_qkv(q, k, v) -> None:
    """q, k and v: floating-point tensors of one dtype and device, ``[B, T, H, K]`` (H, K >= 1) and
    ``[B, T, HV, V]`` with HV a multiple of H (the family's wrappers check these before their gates)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        _check_float_tensor(name, x)
    if q.ndim != 4:
        raise ValueError(f"q must have shape [B, T, H, K], got {_shape(q)}")
    B, T, H, K = q.shape
    if H == 0 or K == 0:
        raise ValueError(f"q must have at least one head and one key channel (H, K >= 1), got {_shape(q)}")
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q, [B, T, H, K] = {list(q.shape)}, got {_shape(k)}")
    if v.ndim != 4 or v.shape[:2] != q.shape[:2]:
        raise ValueError(f"v must have shape [B, T, HV, V] with B = {B}, T = {T}, got {_shape(v)}")
    HV, V = v.shape[2], v.shape[3]
    if HV == 0 or HV % H != 0:
        raise ValueError(f"v's head count HV must be a positive multiple of q's head count H = {H}, got HV = {HV}")
    if V == 0:
        raise ValueError(f"v must have at least one value channel (V >= 1), got {_shape(v)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k and v must share one dtype, got {q.dtype}, {k.dtype} and {v.dtype}")
    for name, x in (("k", k), ("v", v)):
        if x.device != q.device:
            raise ValueError(f"{name} is on {x.device} but q is on {q.device}")


def check_inputs(q, k, v, g: Gate, b: Gate, w: Gate, scale: Optional[float],
                 initial_state: Optional[torch.Tensor], cu_seqlens: Optional[torch.Tensor]) -> Dims:
    """Validate a call of ``gated_delta_rule2`` and return its sizes. The values of g (``<= 0``)
    are checked on CPU tensors only: on a GPU the check would synchronise every call."""
    check_qkv(q, k, v)
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    if isinstance(g, (int, float)) and not isinstance(g, bool):
        raise TypeError(f"g must be a log-decay tensor or None, got the number {g}")
    _check_gate("g", g, B, T, H, K, "H", "K", q.device, allow_float=False)
    if (isinstance(g, torch.Tensor) and g.device.type == "cpu" and g.numel()
            and not torch.compiler.is_compiling() and bool((g > 0).any())):
        raise ValueError(f"g is a log-decay and must be <= 0, got values up to {g.max().item():.4g}")
    _check_gate("b", b, B, T, H, K, "H", "K", q.device, allow_float=True)
    _check_gate("w", w, B, T, HV, V, "HV", "V", q.device, allow_float=True)
    if scale is not None and (not isinstance(scale, (int, float)) or isinstance(scale, bool)
                              or not math.isfinite(scale) or scale <= 0):
        raise ValueError(f"scale must be a finite positive number or None (= K ** -0.5), got {scale!r}")

    N = B if cu_seqlens is None else check_cu_seqlens(cu_seqlens, B, T)
    if initial_state is not None:
        if not isinstance(initial_state, torch.Tensor):
            raise TypeError(f"initial_state must be a torch.Tensor, got {type(initial_state).__name__}")
        allowed = (torch.float32, torch.float64) if q.dtype == torch.float64 else (torch.float32,)
        if initial_state.dtype not in allowed:
            raise TypeError(f"initial_state must be float32"
                            f"{' (or float64 with float64 inputs)' if q.dtype == torch.float64 else ''}, "
                            f"got {initial_state.dtype}")
        if tuple(initial_state.shape) != (N, HV, K, V):
            raise ValueError(f"initial_state must have shape [N, HV, K, V] = {[N, HV, K, V]}, got {_shape(initial_state)}")
        if initial_state.device != q.device:
            raise ValueError(f"initial_state is on {initial_state.device} but q is on {q.device}")
    return Dims(B=B, T=T, H=H, HV=HV, K=K, V=V, N=N)
