"""q/k L2 normalisation for the chunk path: one read and one write per tensor in each
direction (PyTorch's composite takes several float32 round trips). Reference:
``gdn2.ops.utils.l2norm``."""

from __future__ import annotations

from typing import List

import torch
import triton
import triton.language as tl

from .common import cdiv, next_pow2, on_device_of


@triton.jit
def l2norm_fwd_kernel(x, y, rstd, n_rows, eps, D: tl.constexpr, BD: tl.constexpr, BR: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
    cols = tl.arange(0, BD)
    m = (rows < n_rows)[:, None] & (cols < D)[None, :]
    p = rows[:, None] * D + cols[None, :]
    b_x = tl.load(x + p, mask=m, other=0.0).to(tl.float32)
    b_r = 1.0 / tl.sqrt(tl.sum(b_x * b_x, axis=1) + eps)
    tl.store(y + p, (b_x * b_r[:, None]).to(y.dtype.element_ty), mask=m)
    tl.store(rstd + rows, b_r, mask=rows < n_rows)


@triton.jit
def l2norm_bwd_kernel(x, rstd, dy, dx, n_rows, D: tl.constexpr, BD: tl.constexpr, BR: tl.constexpr):
    """dx = r (dy - y <dy, y>) with y = r x."""
    rows = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
    cols = tl.arange(0, BD)
    m = (rows < n_rows)[:, None] & (cols < D)[None, :]
    p = rows[:, None] * D + cols[None, :]
    b_r = tl.load(rstd + rows, mask=rows < n_rows, other=0.0)
    b_y = tl.load(x + p, mask=m, other=0.0).to(tl.float32) * b_r[:, None]
    b_dy = tl.load(dy + p, mask=m, other=0.0).to(tl.float32)
    b_dx = b_r[:, None] * (b_dy - b_y * tl.sum(b_dy * b_y, axis=1)[:, None])
    tl.store(dx + p, b_dx.to(dx.dtype.element_ty), mask=m)


def _grid(x: torch.Tensor):
    D = x.shape[-1]
    BD = next_pow2(D)
    BR = max(1, 4096 // BD)
    n = x.numel() // D
    return n, D, BD, BR, (cdiv(n, BR),)


@torch.library.custom_op("gdn2::l2norm_fwd", mutates_args=())
def _l2norm_fwd_op(x: torch.Tensor, eps: float) -> List[torch.Tensor]:
    x = x.contiguous()
    n, D, BD, BR, grid = _grid(x)
    y = torch.empty_like(x)
    rstd = torch.empty(x.shape[:-1], dtype=torch.float32, device=x.device)
    with on_device_of(x):
        l2norm_fwd_kernel[grid](x, y, rstd, n, eps, D=D, BD=BD, BR=BR, num_warps=4)
    return [y, rstd]


@_l2norm_fwd_op.register_fake
def _(x, eps):
    return [x.new_empty(x.shape), x.new_empty(x.shape[:-1], dtype=torch.float32)]


@torch.library.custom_op("gdn2::l2norm_bwd", mutates_args=())
def _l2norm_bwd_op(x: torch.Tensor, rstd: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    x, dy = x.contiguous(), dy.contiguous()
    n, D, BD, BR, grid = _grid(x)
    dx = torch.empty_like(x)
    with on_device_of(x):
        l2norm_bwd_kernel[grid](x, rstd, dy, dx, n, D=D, BD=BD, BR=BR, num_warps=4)
    return dx


@_l2norm_bwd_op.register_fake
def _(x, rstd, dy):
    return x.new_empty(x.shape)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], output[1])


def _backward(ctx, grads):
    x, rstd = ctx.saved_tensors
    return _l2norm_bwd_op(x, rstd, grads[0]), None


torch.library.register_autograd("gdn2::l2norm_fwd", _backward, setup_context=_setup)


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / sqrt(sum(x**2) + eps)`` over the last axis of ``[..., D]`` (float32 inside),
    differentiable; same result as ``gdn2.ops.utils.l2norm``.

    >>> y = l2norm(torch.randn(2, 64, 4, 128, device="cuda"))  # doctest: +SKIP
    """
    return _l2norm_fwd_op(x, eps)[0]
