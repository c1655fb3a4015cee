"""Short causal depthwise convolution (kernel 4 in GDN-2), with a decode cache of kernel - 1 inputs."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def document_ids(cu_seqlens: torch.Tensor, T: int) -> torch.Tensor:
    """The index of the packed document each of the T tokens belongs to, ``[T]`` int64."""
    positions = torch.arange(T, device=cu_seqlens.device)
    return torch.searchsorted(cu_seqlens[1:].to(torch.int64), positions, right=True)


def positions_in_documents(cu_seqlens: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """Each token's position inside its own packed document, ``[T]`` int64, from its document
    (``document_ids``)."""
    starts = cu_seqlens[:-1].to(torch.int64)
    return torch.arange(documents.numel(), device=cu_seqlens.device) - starts[documents]


class ShortConvolution(nn.Module):
    """Depthwise causal 1-D convolution over ``[B, T, C]``: ``y_t = sum_j w[:, j] * x_{t - W + 1 + j}``
    (``W = kernel_size``), then an optional SiLU.

    The only state it needs across calls is the last ``W - 1`` inputs (``[B, W - 1, C]``, zeros at a
    sequence start), so decoding one token costs one ``W``-wide dot product per channel. Packed
    documents (``cu_seqlens``, B = 1) never see each other's inputs: each one starts from zeros, or
    from its own row of ``cache`` (``[N, W - 1, C]``).
    """

    def __init__(self, channels: int, kernel_size: int = 4, activation: Optional[str] = "silu"):
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        if activation not in (None, "silu"):
            raise ValueError(f"activation must be 'silu' or None, got {activation!r}")
        self.channels, self.kernel_size, self.activation = channels, kernel_size, activation
        self.weight = nn.Parameter(torch.empty(channels, kernel_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Conv1d's default for a depthwise kernel: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = W
        bound = 1.0 / math.sqrt(self.kernel_size)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor, cache: Optional[torch.Tensor] = None, output_cache: bool = False,
                cu_seqlens: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """x ``[B, T, C]``; cache ``[B or N, W - 1, C]`` (the inputs before x). Returns y ``[B, T, C]``
        and, when ``output_cache``, the last ``W - 1`` inputs of every sequence."""
        W = self.kernel_size
        if cu_seqlens is None:
            B, T, C = x.shape
            prev = x.new_zeros(B, W - 1, C) if cache is None else cache.to(x.dtype)
            xp = torch.cat([prev, x], dim=1)                          # [B, W - 1 + T, C]
            # a copy: a view would keep the whole padded input alive inside the cache
            out_index, new_cache = None, xp[:, xp.shape[1] - (W - 1):].clone()
        else:
            xp, out_index, cache_index = self._pad_documents(x, cache, cu_seqlens)
            new_cache = xp[0, cache_index]                             # [N, W - 1, C]
        if x.shape[1] == 0:  # nothing to convolve (conv1d refuses inputs shorter than the kernel)
            return x, (new_cache if output_cache else None)
        if out_index is None and x.shape[1] == 1:
            # a decoding step: the window's weighted sum (a depthwise conv1d call for one output
            # took 160 us on the CPU machine, this 13-15)
            y = (xp * self.weight.t().to(x.dtype)).sum(1, keepdim=True)
        else:
            y = F.conv1d(xp.transpose(1, 2), self.weight.unsqueeze(1).to(x.dtype), groups=self.channels)
            y = y.transpose(1, 2)
        if out_index is not None:
            y = y[:, out_index]
        if self.activation == "silu":
            y = F.silu(y)
        return y, (new_cache if output_cache else None)

    def _pad_documents(self, x, cache, cu_seqlens):
        """Packed ``[1, T, C]`` -> ``[1, T + N (W - 1), C]`` with each document's W - 1 previous inputs
        (zeros or its cache row) in front of it, so one valid convolution never crosses documents.
        Returns the padded input, where each token's output lands, and each document's last W - 1."""
        W, (B, T, C) = self.kernel_size, x.shape
        if B != 1:
            raise ValueError(f"cu_seqlens requires batch size B == 1, got B = {B}")
        N = cu_seqlens.numel() - 1
        doc = document_ids(cu_seqlens, T)
        token_slot = torch.arange(T, device=x.device) + (doc + 1) * (W - 1)
        xp = x.new_zeros(1, T + N * (W - 1), C)
        xp[0, token_slot] = x[0]
        starts = cu_seqlens[:-1].to(torch.int64) + torch.arange(N, device=x.device) * (W - 1)
        pad_slot = starts[:, None] + torch.arange(W - 1, device=x.device)        # [N, W - 1]
        if cache is not None:
            if cache.shape != (N, W - 1, C):
                raise ValueError(f"cache must have shape [N, W - 1, C] = {[N, W - 1, C]}, got {list(cache.shape)}")
            xp[0, pad_slot.reshape(-1)] = cache.to(x.dtype).reshape(-1, C)
        ends = cu_seqlens[1:].to(torch.int64) + (torch.arange(N, device=x.device) + 1) * (W - 1)
        cache_index = ends[:, None] - (W - 1) + torch.arange(W - 1, device=x.device)
        return xp, token_slot - (W - 1), cache_index
