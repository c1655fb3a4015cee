"""Causal multi-head attention with RoPE and grouped KV heads: full, or a sliding window of W tokens.

The attention itself is PyTorch's ``scaled_dot_product_attention`` (flash / memory-efficient kernels
where the device has them). Query at position p sees keys at positions ``(p - W, p]`` with a window,
``[0, p]`` without. An optional sigmoid output gate (as in Qwen3-Next) multiplies each head's output.
An optional short causal convolution on q, k and v after their projections (``conv_size``, no
activation) gives attention the token shift the linear mixers' convolutions give them, as Zoology's
attention baseline has (its BaseConv before attention); MQAR's two-layer models need it to
learn recall quickly. ``rope=False`` leaves positions out of q and k (NoPE, Zoology's attention:
the convolution and the causal mask carry the order), so nothing rotates past the trained lengths.

Caches: full attention keeps every key and value (``KVCache``, grows with the tokens); a sliding
window keeps at most W tokens (``SlidingKVCache``, a ring buffer: the token at position p lives in
slot ``p % W``, written in place when decoding). Keys are cached after RoPE, so slot order never matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.gdn2.checks import check_cu_seqlens
from .conv import ShortConvolution, document_ids, positions_in_documents
from .norm import compute_dtype


@dataclass(frozen=True)
class AttentionConfig:
    """``num_kv_heads`` defaults to ``num_heads`` (no grouping), ``head_dim`` to ``hidden_size //
    num_heads``; ``window`` None is full causal attention; ``conv_size`` 0 is no short convolution;
    ``rope`` False is no rotary embedding."""

    hidden_size: int = 256
    num_heads: int = 4
    num_kv_heads: Optional[int] = None
    head_dim: Optional[int] = None
    window: Optional[int] = None
    rope_theta: float = 10000.0
    output_gate: bool = False
    conv_size: int = 0
    rope: bool = True

    def __post_init__(self):
        if self.num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {self.num_heads}")
        if self.num_kv_heads is None:
            object.__setattr__(self, "num_kv_heads", self.num_heads)
        if self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads must divide num_heads = {self.num_heads}, got {self.num_kv_heads}")
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ValueError(f"head_dim is unset and hidden_size = {self.hidden_size} is not divisible by "
                                 f"num_heads = {self.num_heads}")
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if self.head_dim < 2 or self.head_dim % 2:
            raise ValueError(f"head_dim must be even (RoPE rotates pairs), got {self.head_dim}")
        if self.window is not None and self.window <= 0:
            raise ValueError(f"window must be a positive number of tokens or None, got {self.window}")
        if self.rope_theta <= 0:
            raise ValueError(f"rope_theta must be > 0, got {self.rope_theta}")
        if isinstance(self.conv_size, bool) or not isinstance(self.conv_size, int) or self.conv_size < 0:
            raise ValueError(f"conv_size must be a non-negative integer (0: none), got {self.conv_size!r}")


def apply_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate ``x`` ``[B, T, H, D]`` by its tokens' ``positions`` ``[T]`` (rotate-half convention).
    Angles are formed in float64, so a position's rotation is the same in a prefill and a decode."""
    D = x.shape[-1]
    half = D // 2
    inv_freq = theta ** (-torch.arange(half, dtype=torch.float64, device=x.device) * 2 / D)
    angle = positions.to(torch.float64)[:, None] * inv_freq[None]                # [T, D/2]
    dt = compute_dtype(x.dtype)
    cos, sin = angle.cos().to(dt)[None, :, None], angle.sin().to(dt)[None, :, None]
    x1, x2 = x[..., :half].to(dt), x[..., half:].to(dt)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


def held_bytes(tensors: List[torch.Tensor]) -> int:
    """Bytes of the storage behind ``tensors`` (a view counts its whole base, each storage once)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


class KVCache:
    """Every key and value a full-attention layer has seen: ``[B, HKV, n, D]``, grows by concatenation.
    ``conv``: with a short convolution, the last ``conv_size - 1`` projected q, k, v inputs
    ``[B, conv_size - 1, C]`` each."""

    def __init__(self):
        self.k: Optional[torch.Tensor] = None
        self.v: Optional[torch.Tensor] = None
        self.conv: Optional[Tuple[torch.Tensor, ...]] = None
        self.seen = 0

    def tensors(self) -> List[torch.Tensor]:
        return [t for t in (self.k, self.v, *(self.conv or ())) if t is not None]

    def nbytes(self) -> int:
        return held_bytes(self.tensors())

    def select(self, index: torch.Tensor) -> None:
        if self.k is not None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)
        if self.conv is not None:
            self.conv = tuple(t.index_select(0, index) for t in self.conv)

    def update(self, k: torch.Tensor, v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Append T new tokens ``[B, HKV, T, D]``; return the keys and values to attend to and their
        positions (None when every one of them is visible to every new query)."""
        T = k.shape[2]
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        self.seen += T
        positions = None if T == 1 else torch.arange(self.seen, device=k.device)
        return self.k, self.v, positions


class SlidingKVCache:
    """The last ``window`` keys and values of a sliding-window layer, ``[B, HKV, min(n, W), D]``.
    While fewer than W tokens have been seen, slot i holds position i; after that, a ring: the token
    at position p is in slot ``p % W``, always the newest one with that residue."""

    def __init__(self, window: int):
        self.window = window
        self.k: Optional[torch.Tensor] = None
        self.v: Optional[torch.Tensor] = None
        self.conv: Optional[Tuple[torch.Tensor, ...]] = None
        self.seen = 0

    tensors, nbytes, select = KVCache.tensors, KVCache.nbytes, KVCache.select

    def slot_positions(self, device) -> torch.Tensor:
        """The position of the token in each slot, ``[min(seen, W)]``."""
        W, n = self.window, self.seen
        slots = torch.arange(min(n, W), device=device)
        return slots + W * torch.div(n - 1 - slots, W, rounding_mode="floor")

    def update(self, k: torch.Tensor, v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Add T new tokens ``[B, HKV, T, D]``; return the keys and values the new queries may need
        (previous slots, then the new tokens) and their positions (None: all visible to all)."""
        W, n, T = self.window, self.seen, k.shape[2]
        if T == 1 and n >= W:
            # steady-state decoding: overwrite the oldest slot; the ring is then exactly the window
            slot = torch.tensor([n % W], device=k.device)
            if torch.is_grad_enabled():
                self.k, self.v = self.k.index_copy(2, slot, k), self.v.index_copy(2, slot, v)
            else:
                self.k.index_copy_(2, slot, k)
                self.v.index_copy_(2, slot, v)
            self.seen += 1
            return self.k, self.v, None
        if self.k is None:
            keys, values, positions = k, v, torch.arange(T, device=k.device)
        else:
            keys, values = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
            positions = torch.cat([self.slot_positions(k.device), n + torch.arange(T, device=k.device)])
        total = n + T
        if total <= W:
            self.k, self.v = keys, values
        else:
            m = min(T, W)
            slots = torch.arange(total - m, total, device=k.device) % W
            self.k = self._full_ring(self.k, k).index_copy(2, slots, k[:, :, T - m:])
            self.v = self._full_ring(self.v, v).index_copy(2, slots, v[:, :, T - m:])
        self.seen = total
        return keys, values, (None if T == 1 else positions)

    def _full_ring(self, old: Optional[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        """``old`` padded to W slots (the caller overwrites the padding)."""
        B, H, _, D = like.shape
        if old is None:
            return like.new_zeros(B, H, self.window, D)
        if old.shape[2] == self.window:
            return old
        return torch.cat([old, like.new_zeros(B, H, self.window - old.shape[2], D)], dim=2)


class Attention(nn.Module):
    """Causal attention ``[B, T, hidden_size] -> [B, T, hidden_size]``, full or sliding-window.

    >>> layer = Attention(AttentionConfig(hidden_size=64, num_heads=4, num_kv_heads=2, window=8))
    >>> layer(torch.randn(1, 20, 64)).shape
    torch.Size([1, 20, 64])
    """

    def __init__(self, config: AttentionConfig):
        super().__init__()
        self.config = c = config
        H, HKV, D = c.num_heads, c.num_kv_heads, c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, H * D, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, HKV * D, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, HKV * D, bias=False)
        self.gate_proj = nn.Linear(c.hidden_size, H * D, bias=False) if c.output_gate else None
        self.o_proj = nn.Linear(H * D, c.hidden_size, bias=False)
        self.convs = nn.ModuleList(ShortConvolution(n, c.conv_size, activation=None)
                                   for n in (H * D, HKV * D, HKV * D)) if c.conv_size else None

    def init_cache(self, batch_size: int, dtype: torch.dtype, device):
        """An empty cache (allocated on first use: it grows with the tokens, up to W with a window)."""
        return KVCache() if self.config.window is None else SlidingKVCache(self.config.window)

    def forward(self, x: torch.Tensor, cache=None, cu_seqlens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x ``[B, T, hidden_size]``; ``cache`` from ``init_cache`` (read and extended); with
        ``cu_seqlens`` (B = 1, no cache) each packed document attends only to itself, from position 0."""
        c = self.config
        B, T, _ = x.shape
        if cu_seqlens is not None:
            if cache is not None:
                raise ValueError("cu_seqlens (packed documents) cannot be combined with a KV cache")
            check_cu_seqlens(cu_seqlens, B, T)   # the operator's check (read on the host once a step)
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.convs is not None:
            keep = cache is not None
            previous = (cache.conv if keep else None) or (None,) * 3
            (q, k, v), kept = zip(*(conv(t, prev, keep, cu_seqlens) for conv, t, prev in zip(self.convs, (q, k, v), previous)))
            if keep:
                cache.conv = kept
        q = q.view(B, T, c.num_heads, c.head_dim)
        k = k.view(B, T, c.num_kv_heads, c.head_dim)
        v = v.view(B, T, c.num_kv_heads, c.head_dim)
        if cu_seqlens is not None:
            documents = document_ids(cu_seqlens, T)
            positions = positions_in_documents(cu_seqlens, documents)
        else:
            positions = (0 if cache is None else cache.seen) + torch.arange(T, device=x.device)
        if c.rope:
            q, k = apply_rope(q, positions, c.rope_theta), apply_rope(k, positions, c.rope_theta)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)      # [B, heads, T, D]

        if cu_seqlens is not None and c.window is not None:
            # a window bounds every document's reach: blocks of W queries over 2W keys, masked to
            # their own document, with no host sync and no launch per document
            o = _sliding_window_blocks(q, k, v, c.window, documents)
        elif cu_seqlens is not None:
            offsets = cu_seqlens.tolist()
            o = torch.cat([self._attend(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], positions[s:e], positions[s:e])
                           for s, e in zip(offsets, offsets[1:]) if e > s] or [v[:, :, :0]], dim=2)
        elif cache is None:
            o = self._attend(q, k, v, positions, positions)
        else:
            keys, values, key_positions = cache.update(k, v)
            o = self._attend(q, keys, values, positions, key_positions)

        o = o.transpose(1, 2).reshape(B, T, c.num_heads * c.head_dim)
        if self.gate_proj is not None:
            o = o * torch.sigmoid(self.gate_proj(x))
        return self.o_proj(o)

    def _attend(self, q, k, v, q_pos: torch.Tensor, k_pos: Optional[torch.Tensor]) -> torch.Tensor:
        """SDPA of q ``[B, H, T, D]`` over k, v ``[B, HKV, S, D]`` with the causal (and window)
        mask given by the positions; ``k_pos`` None means no mask is needed."""
        gqa = self.config.num_heads != self.config.num_kv_heads
        window = self.config.window
        if k_pos is None:
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
        own = k.shape[2] == q.shape[2]  # the keys are exactly the queries' own tokens
        if own and (window is None or q.shape[2] <= window):
            # plain causal (flash-eligible, no mask): a window as long as T changes nothing
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        if own:
            return _sliding_window_blocks(q, k, v, window)
        mask = k_pos[None, :] <= q_pos[:, None]
        if window is not None:
            mask = mask & (k_pos[None, :] > q_pos[:, None] - window)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)

    def extra_repr(self) -> str:
        c = self.config
        return (f"heads={c.num_heads}, kv_heads={c.num_kv_heads}, head_dim={c.head_dim}, window={c.window}, "
                f"output_gate={c.output_gate}" + (f", conv_size={c.conv_size}" if c.conv_size else "")
                + ("" if c.rope else ", rope=False"))


def _sliding_window_blocks(q, k, v, W: int, documents: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Causal sliding-window attention of q ``[B, H, T, D]`` over its own k, v ``[B, HKV, T, D]``
    in O(T W): queries in blocks of W rows, each against the keys of its own and the previous
    block (2W), so no [T, T] mask is ever formed (a dense window mask costs T^2 at 16K tokens).
    ``documents``: each token's packed document ``[T]`` (B = 1); a query then sees only keys of
    its own document (the window keeps every one it may see inside the two blocks)."""
    B, H, T, D = q.shape
    if T == 0:   # no blocks to unfold
        return q.new_empty(B, H, 0, v.shape[-1])
    if k.shape[1] != H:  # grouped KV heads: the masked kernels take equal head counts
        k, v = (x.repeat_interleave(H // k.shape[1], dim=1) for x in (k, v))
    nb = -(-T // W)
    pad = nb * W - T
    i = torch.arange(W, device=q.device)[:, None]
    j = torch.arange(2 * W, device=q.device)[None, :]
    # key j of block n sits at position (n - 1) W + j, query i at n W + i; one [W, 2W] mask
    # broadcasts over every block, batch row and head
    window = (j > i) & (j <= i + W)

    def blocks(x, rows, front, first):  # [B, H, T, D] -> [B * (nb - first), H, rows, D], blocks first .. nb - 1
        x = F.pad(x, (0, 0, front, pad))
        x = x.unfold(2, rows, W)[:, :, first:nb]                                # [B, H, nb - first, D, rows]
        return x.permute(0, 2, 1, 4, 3).reshape(B * (nb - first), H, rows, D)

    if documents is not None:
        # every block, the first one too, over W keys of padding (document -2: seen by no query)
        # and its own; padded queries are their own document (-1) so that no row is empty
        doc = F.pad(documents, (0, pad), value=-1)
        doc_q = doc.view(nb, W)
        doc_k = F.pad(doc, (W, 0), value=-2).unfold(0, 2 * W, W)[:nb]           # [nb, 2W]
        mask = window & (doc_q[:, :, None] == doc_k[:, None, :])
        o = F.scaled_dot_product_attention(blocks(q, W, 0, 0), blocks(k, 2 * W, W, 0), blocks(v, 2 * W, W, 0),
                                           attn_mask=mask[:, None])
        return o.view(B, nb, H, W, D).permute(0, 2, 1, 3, 4).reshape(B, H, nb * W, D)[:, :, :T]
    # block 0 has no previous block: plain causal attention over its own W keys (T > W here)
    first = F.scaled_dot_product_attention(q[:, :, :W], k[:, :, :W], v[:, :, :W], is_causal=True)
    rest = F.scaled_dot_product_attention(blocks(q, W, 0, 1), blocks(k, 2 * W, W, 1), blocks(v, 2 * W, W, 1),
                                          attn_mask=window)
    rest = rest.view(B, nb - 1, H, W, D).permute(0, 2, 1, 3, 4).reshape(B, H, (nb - 1) * W, D)
    return torch.cat([first, rest], dim=2)[:, :, :T]
