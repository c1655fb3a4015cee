"""Attention: against an explicit softmax reference, RoPE, caches (growing and ring), packing."""

import pytest
import torch

from gdn2.layers import Attention, AttentionConfig, KVCache, SlidingKVCache, apply_rope
from gdn2.testing import assert_close

F64 = torch.float64
D = 32


def make(window=None, kv_heads=2, gate=False, conv=0, rope=True) -> Attention:
    return Attention(AttentionConfig(hidden_size=D, num_heads=4, num_kv_heads=kv_heads, head_dim=8,
                                     window=window, output_gate=gate, conv_size=conv, rope=rope)).double()


def shifted_sum(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``y_t = sum_j w[:, j] x_{t - W + 1 + j}`` over ``[B, T, C]``, zeros before the start."""
    W = weight.shape[1]
    return sum(weight[:, j] * torch.nn.functional.pad(x, (0, 0, W - 1 - j, 0))[:, :x.shape[1]] for j in range(W))


def reference(layer: Attention, x: torch.Tensor) -> torch.Tensor:
    """Softmax attention written out: the short convolutions' shifted sums, RoPE at positions
    0..T-1, causal (and window) mask, KV heads repeated."""
    c = layer.config
    B, T, _ = x.shape
    pos = torch.arange(T)
    q, k, v = layer.q_proj(x), layer.k_proj(x), layer.v_proj(x)
    if layer.convs is not None:
        q, k, v = (shifted_sum(t, conv.weight) for t, conv in zip((q, k, v), layer.convs))
    q, k = q.view(B, T, c.num_heads, c.head_dim), k.view(B, T, c.num_kv_heads, c.head_dim)
    if c.rope:
        q, k = apply_rope(q, pos, c.rope_theta), apply_rope(k, pos, c.rope_theta)
    v = v.view(B, T, c.num_kv_heads, c.head_dim)
    rep = c.num_heads // c.num_kv_heads
    k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / c.head_dim ** 0.5
    allowed = pos[None, :] <= pos[:, None]
    if c.window is not None:
        allowed &= pos[None, :] > pos[:, None] - c.window
    o = torch.einsum("bhts,bshd->bthd", scores.masked_fill(~allowed, float("-inf")).softmax(-1), v)
    o = o.reshape(B, T, -1)
    if layer.gate_proj is not None:
        o = o * torch.sigmoid(layer.gate_proj(x))
    return layer.o_proj(o)


@pytest.mark.parametrize("window, kv_heads, gate, conv, rope", [
    (None, 4, False, 0, True), (None, 2, True, 0, True), (5, 2, False, 0, True), (1, 1, True, 0, True),
    (None, 2, False, 4, True), (5, 1, True, 3, True), (None, 2, False, 4, False), (5, 2, False, 0, False)])
def test_matches_softmax_reference(window, kv_heads, gate, conv, rope):
    layer, x = make(window, kv_heads, gate, conv, rope), torch.randn(2, 17, D, dtype=F64)
    assert_close("attention", layer(x), reference(layer, x), rtol=1e-12)


def test_rope_depends_only_on_relative_position():
    q, k = torch.randn(1, 1, 1, 16, dtype=F64), torch.randn(1, 1, 1, 16, dtype=F64)
    dot = lambda i, j: (apply_rope(q, torch.tensor([i]), 1e4) * apply_rope(k, torch.tensor([j]), 1e4)).sum()  # noqa: E731
    assert_close("shifted", dot(107, 100), dot(7, 0), rtol=1e-12)
    assert_close("norm", apply_rope(q, torch.tensor([12345]), 1e4).norm(), q.norm(), rtol=1e-14)


@pytest.mark.parametrize("conv, rope", [(0, True), (4, True), (4, False)], ids=["rope", "conv 4", "conv 4, no rope"])
@pytest.mark.parametrize("window", [None, 6])
def test_prefill_then_decode_equals_full(window, conv, rope):
    layer, x = make(window, conv=conv, rope=rope), torch.randn(2, 30, D, dtype=F64)
    full = layer(x)
    cache = layer.init_cache(2, F64, "cpu")
    assert isinstance(cache, KVCache if window is None else SlidingKVCache)
    pieces = [layer(x[:, :4], cache), layer(x[:, 4:15], cache)]        # the second piece crosses the window
    for t in range(15, 30):
        pieces.append(layer(x[:, t:t + 1], cache))
        held = cache.k.shape[2]
        assert held == (t + 1 if window is None else window)
    pieces.append(layer(x[:, 30:], cache))                              # an empty call changes nothing
    assert_close("prefill + decode", torch.cat(pieces, 1), full, rtol=1e-12)
    assert (cache.conv is None) == (conv == 0)
    if conv:   # a beam's reorder moves the convolutions' inputs with the keys and values
        assert [t.shape for t in cache.conv] == [(2, 3, 32), (2, 3, 16), (2, 3, 16)]
        cache.select(torch.tensor([1, 1]))
        assert all(torch.equal(t[0], t[1]) for t in cache.conv)
        assert cache.nbytes() == sum(t.numel() * 8 for t in (cache.k, cache.v, *cache.conv))


def test_ring_buffer_holds_the_newest_token_of_each_slot():
    cache = SlidingKVCache(window=4)
    for chunk in ([0, 1], [2, 3, 4, 5, 6], [7], [8], [9, 10]):
        kv = torch.tensor(chunk, dtype=F64).view(1, 1, -1, 1)
        cache.update(kv, kv)
    assert cache.k.flatten().tolist() == [8.0, 9.0, 10.0, 7.0]           # slot p % 4
    assert cache.slot_positions("cpu").tolist() == [8, 9, 10, 7]


@pytest.mark.parametrize("window,lengths,conv", [(None, [6, 1, 9], 0), (3, [6, 1, 9], 0), (4, [6, 1, 9, 2, 13, 5], 0),
                                                 (16, [6, 1, 9], 0), (5, [11], 0), (None, [6, 1, 9], 4),
                                                 (4, [6, 1, 9, 2, 13, 5], 4)], ids=str)
def test_packed_documents_equal_separate_runs(window, lengths, conv):
    """Packed documents (windowed: the block path, documents across block boundaries, shorter and
    longer than the window, one alone; with short convolutions, which must not cross documents)
    against each document run by itself, gradients too."""
    layer = make(window, conv=conv)
    docs = [torch.randn(1, n, D, dtype=F64, requires_grad=True) for n in lengths]
    cu = torch.tensor([0, *lengths]).cumsum(0)
    packed = layer(torch.cat(docs, 1), cu_seqlens=cu)
    alone = [layer(doc) for doc in docs]
    for i, doc in enumerate(docs):
        assert_close(f"doc {i}", packed[:, cu[i]:cu[i + 1]], alone[i], rtol=1e-12)
    weights = torch.randn_like(packed)
    grads = torch.autograd.grad((packed * weights).sum(), docs)
    expected = torch.autograd.grad(sum((a * w).sum() for a, w in zip(alone, weights.split(lengths, 1))), docs)
    for i, (got, want) in enumerate(zip(grads, expected)):
        assert_close(f"d doc {i}", got, want, rtol=1e-10)
    with pytest.raises(ValueError, match="cu_seqlens"):
        layer(torch.cat(docs, 1), layer.init_cache(1, F64, "cpu"), cu_seqlens=cu)
    with pytest.raises(ValueError, match="batch size"):
        layer(torch.cat(docs, 1).detach().expand(2, -1, -1), cu_seqlens=cu)
    with pytest.raises(ValueError, match="end at T"):
        layer(torch.cat(docs, 1).detach()[:, :-1], cu_seqlens=cu)


@pytest.mark.parametrize("overrides, field", [
    (dict(num_kv_heads=3), "num_kv_heads"),
    (dict(window=0), "window"),
    (dict(head_dim=7), "head_dim"),
    (dict(hidden_size=30), "head_dim"),
    (dict(conv_size=-1), "conv_size"),
    (dict(conv_size=True), "conv_size"),
])
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        AttentionConfig(**{"hidden_size": 32, "num_heads": 4, **overrides})


@pytest.mark.parametrize("B,H,HKV,T,W", [(2, 4, 2, 50, 8), (1, 2, 2, 64, 16), (1, 2, 1, 17, 16), (2, 2, 2, 33, 32)])
def test_sliding_window_blocks_match_dense_mask(B, H, HKV, T, W):
    """The O(T W) blocked window equals SDPA with the dense [T, T] window mask."""
    from gdn2.layers.attention import _sliding_window_blocks
    gen = torch.Generator().manual_seed(T)
    q = torch.randn(B, H, T, 8, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(B, HKV, T, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    pos = torch.arange(T)
    mask = (pos[None, :] <= pos[:, None]) & (pos[None, :] > pos[:, None] - W)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=H != HKV)
    assert_close("o", _sliding_window_blocks(q, k, v, W), expected, rtol=1e-12)
