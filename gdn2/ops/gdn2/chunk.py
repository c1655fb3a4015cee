"""Chunkwise (WY) GDN-2 in PyTorch (spec section 4): the CPU training path and the
stage-by-stage specification of the Triton pipeline.

Layout inside this file: key-side tensors are ``[B, H, L, K]`` and value-side tensors
``[B, H, G, L, V]`` with ``G = HV // H`` value heads per key head, so grouped value heads
never repeat q, k, g or b. Per-head scalar gates stay ``[..., 1]`` and broadcast.

Memory: chunks are processed one at a time, so the largest temporary is one chunk's
decay factors, never all chunks' pairwise decays at once.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..utils import l2norm
from .checks import Gate

SUB = 16  # rows of a sub-block; off-diagonal sub-blocks use an anchored factorisation
G_FLOOR = -1000.0  # exp(-1000) is 0 in float64: any log-decay below acts as this one
TOKEN_LOOP_T = 8  # up to here the token loop is cheaper (CPU, 2026-12-06: 1 token 0.12-0.2 ms vs 1.1-1.3; even at 8-12)
DIAG_SPAN = 16.0  # widest in-block log-decay span whose pairs are one centred product (``_diagonal_blocks``)


def _tril(n: int, strict: bool, device) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool, device=device).tril(-1 if strict else 0)


def decayed_products(x: torch.Tensor, y: torch.Tensor, G: Optional[torch.Tensor], strict: bool) -> torch.Tensor:
    """``P[r, s] = sum_c x[r, c] y[s, c] exp(G[r, c] - G[s, c])`` for ``s < r`` (``s <= r`` unless strict).

    x, y: ``[..., L, K]``; G: cumulative log-decay ``[..., L, K]``, ``[..., L, 1]`` or None; the
    exponents are formed in G's dtype and only then cast to x's. x may carry leading dimensions
    that y and G lack (several left operands against one right side: the factors of y are then
    made once; a chunk's Aqk and T share theirs).
    Every exponential has a non-positive argument, so any ``g <= 0`` stays finite: for
    channel decays, rows of sub-block i and columns of an earlier sub-block factor through the
    anchor ``a`` = first row of block i as ``exp(G_r - G_a) * exp(G_a - G_s)``; the diagonal
    sub-blocks are ``_diagonal_blocks``.
    """
    L = x.shape[-2]
    mask = _tril(L, strict, x.device)
    exp = lambda arg: torch.exp(arg.to(x.dtype))  # noqa: E731  (arguments formed in G's float64)
    if G is None:
        return (x @ y.transpose(-1, -2)).masked_fill(~mask, 0)
    if G.shape[-1] == 1:
        diff = (G - G.transpose(-1, -2)).masked_fill(~mask, float("-inf"))
        return (x @ y.transpose(-1, -2)) * exp(diff)

    pad = (-L) % SUB
    if pad:  # zero rows add nothing; repeating the last G keeps the exponents at 0
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))
        y = torch.nn.functional.pad(y, (0, 0, 0, pad))
        G = torch.cat([G, G[..., -1:, :].expand(*G.shape[:-2], pad, G.shape[-1])], dim=-2)
    Lp, nb, K = L + pad, (L + pad) // SUB, x.shape[-1]
    lead, extra = x.shape[:-2], x.dim() - y.dim()
    Ga = G[..., ::SUB, :]                                                  # [..., nb, K]
    left = x * exp(G - Ga.repeat_interleave(SUB, dim=-2))                   # rows r, exp(G_r - G_a)
    right = y.unsqueeze(-3) * exp((Ga.unsqueeze(-2) - G.unsqueeze(-3)).clamp(max=0))  # [..., nb, Lp, K]
    off = left.reshape(*lead, nb, SUB, K) @ right.transpose(-1, -2)          # [..., nb, SUB, Lp]
    block = torch.arange(Lp, device=x.device) // SUB
    off = off.reshape(*lead, Lp, Lp) * (block[None, :] < block[:, None])     # strictly earlier blocks only

    xb, yb, Gb = (t.reshape(*t.shape[:-2], nb, SUB, K) for t in (x, y, G))
    diag = _diagonal_blocks(xb, yb, Gb, strict, exp, extra)                  # [..., nb, SUB, SUB]
    diag = torch.diag_embed(diag.movedim(-3, -1))                            # [..., SUB, SUB, nb, nb]
    diag = diag.permute(*range(len(lead)), -2, -4, -1, -3).reshape(*lead, Lp, Lp)
    return (off + diag)[..., :L, :L]


def _diagonal_blocks(xb, yb, Gb, strict, exp, extra=0):
    """The pairs inside each sub-block, ``[..., nb, SUB, SUB]`` from ``[..., nb, SUB, K]`` tiles
    (``xb`` with ``extra`` leading dimensions more than ``yb`` and ``Gb``).

    Where a block's log-decay spans at most ``DIAG_SPAN`` in every channel, one matrix product of
    centred operands ``x exp(G_r - c)`` and ``y exp(c - G_s)`` (c the middle of the channel's
    range, the exponents formed in G's float64, so nothing cancels); wider blocks (fast-forgetting
    channels) take the pairwise ``[SUB, SUB, K]`` decay tensor. The Triton kernels make the same
    choice (``triton.common.diag_span``). Whether any block is wide is read on the host: one
    synchronisation per call on a GPU, where this backend is the fallback.
    """
    sub_mask = _tril(SUB, strict, xb.device)
    hi, lo = Gb.amax(-2, keepdim=True), Gb.amin(-2, keepdim=True)
    c = (hi + lo) / 2
    # clamped so that the product stays finite (and its gradient zero) in blocks the tile replaces
    left = xb * exp((Gb - c).clamp(-DIAG_SPAN, DIAG_SPAN))
    right = yb * exp((c - Gb).clamp(-DIAG_SPAN, DIAG_SPAN))
    diag = (left @ right.transpose(-1, -2)).masked_fill(~sub_mask, 0)
    wide = ~((hi - lo).amax(-1) <= DIAG_SPAN).squeeze(-1)     # [..., nb]; a NaN span takes the tile, as before
    if bool(wide.any()):
        at = (slice(None),) * extra + (wide,)                 # the wide blocks of every left operand
        decay = exp((Gb[wide].unsqueeze(-2) - Gb[wide].unsqueeze(-3)).masked_fill(~sub_mask[..., None], float("-inf")))
        tile = (xb[at].unsqueeze(-2) * (yb[wide].unsqueeze(-3) * decay)).sum(-1)
        diag = _put(diag, at, tile)
    return diag


def _put(x, where, values):
    """``x`` with ``x[where] = values``, out of place (autograd-safe)."""
    out = x.clone()
    out[where] = values
    return out


def chunk_step(q, k, v, g, b, w, S):
    """One chunk. q (scaled), k: [B, H, L, K]; g, b: [B, H, L, K|1] or None (b may be a float);
    v: [B, H, G, L, V]; w: [B, H, G, L, V|1], float or None; S: [B, H, G, K, V].
    Returns o [B, H, G, L, V] and the state after the chunk."""
    # The cumulative log-decay is kept in float64: a float32 cumsum that has passed a strongly
    # forgetting token (g ~ -1e4) loses the small differences that later decays depend on.
    # A log-decay at or below G_FLOOR zeroes every product it enters (exp underflows in float64
    # too), so clamping there changes nothing but keeps -inf (a closed gate) from making the
    # differences of G NaN.
    Gc = None if g is None else g.to(torch.float64).clamp(min=G_FLOOR).cumsum(-2)
    dt = q.dtype
    erase = not (isinstance(b, float) and b == 0.0)
    e = k if b is None or not erase else k * b
    z = v if w is None else v * w
    if Gc is not None:
        gamma = torch.exp(Gc.to(dt))
        q_g, e_bar = q * gamma, e * gamma
        G_last = Gc[..., -1:, :]
        k_tail = k * torch.exp((G_last - Gc).to(dt))
        state_decay = torch.exp(G_last.to(dt)).transpose(-1, -2).unsqueeze(2)  # [B, H, 1, K|1, 1]
    else:
        q_g, e_bar, k_tail, state_decay = q, e, k, None

    if erase:  # Aqk and T in one call: the factors of k are made once
        A_qk, T = decayed_products(torch.stack([q, e]), k, Gc, strict=False).unbind()
        T = T.tril(-1)
        A_qk = A_qk.unsqueeze(2)                                           # [B, H, 1, L, L]
        eye = torch.eye(T.shape[-1], dtype=T.dtype, device=T.device)
        A = torch.linalg.solve_triangular(eye + T, eye, upper=False, unitriangular=True)  # (I + T)^-1
        Y = (A @ e_bar).unsqueeze(2)                                       # erase-side auxiliary
        U = A.unsqueeze(2) @ z                                             # write-side auxiliary
        R = U - Y @ S
    else:
        A_qk = decayed_products(q, k, Gc, strict=False).unsqueeze(2)
        R = z
    o = q_g.unsqueeze(2) @ S + A_qk @ R
    S = S if state_decay is None else state_decay * S
    S = S + k_tail.unsqueeze(2).transpose(-1, -2) @ R
    return o, S


def _key_side(x, dtype):
    """[B, L, H, D] -> [B, H, L, D]; [B, L, H] -> [B, H, L, 1]."""
    x = x.to(dtype)
    return x.transpose(1, 2) if x.ndim == 4 else x.transpose(1, 2).unsqueeze(-1)


def _value_side(x, H, dtype):
    """[B, L, HV, D] -> [B, H, G, L, D]; [B, L, HV] -> [B, H, G, L, 1]."""
    x = x.to(dtype)
    if x.ndim == 3:
        x = x.unsqueeze(-1)
    B, L, HV, D = x.shape
    return x.reshape(B, L, H, HV // H, D).permute(0, 2, 3, 1, 4)


def _chunk_loop(q, k, v, g, b, w, scale, S, chunk_size):
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    S = (q.new_zeros(B, HV, K, V, dtype=dt) if S is None else S.to(dt)).reshape(B, H, HV // H, K, V)

    # chunks by one split per input, not a slice per chunk: a slice's backward fills a zero tensor
    # of the whole input, so T / chunk_size slices cost O(T^2) (a quarter of a 1024-token backward)
    n = len(range(0, T, chunk_size))   # split gives one empty part of an empty input: none here

    def chunks(x, side):
        if x is None or isinstance(x, float):
            return [x] * n
        return [side(part) for part in x.split(chunk_size, dim=1)[:n]]
    key = lambda x: _key_side(x, dt)             # noqa: E731
    value = lambda x: _value_side(x, H, dt)      # noqa: E731
    outputs = []
    for parts in zip(chunks(q, key), chunks(k, key), chunks(v, value), chunks(g, key), chunks(b, key),
                     chunks(w, value)):
        o, S = chunk_step(parts[0] * scale, *parts[1:], S)
        outputs.append(o)
    o = torch.cat(outputs, dim=3) if outputs else v.new_zeros(B, H, HV // H, 0, V, dtype=dt)
    return o.permute(0, 3, 1, 2, 4).reshape(B, T, HV, V), S.reshape(B, HV, K, V)


def _token_loop(q, k, v, g, b, w, scale, S):
    """The recurrence of spec section 1 one token at a time, batched over sequences and heads:
    for a few tokens (decoding) a chunk's products, solve and cumulative sums cost far more than
    the few state updates they replace. Shapes and gates as in ``_chunk_loop``."""
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    G = HV // H
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    S = q.new_zeros(B, H, G, K, V, dtype=dt) if S is None else S.to(dt).reshape(B, H, G, K, V)
    key = lambda x: x.to(dt) if x.ndim == 4 else x.to(dt).unsqueeze(-1)  # noqa: E731  [B, T, H, K|1]
    val = lambda x: (x.to(dt) if x.ndim == 4 else x.to(dt).unsqueeze(-1)).reshape(B, T, H, G, -1)  # noqa: E731
    qd, kd, vd = q.to(dt) * scale, k.to(dt), v.to(dt).reshape(B, T, H, G, V)
    erase = not (isinstance(b, float) and b == 0.0)
    e = kd if b is None or not erase else kd * (b if isinstance(b, float) else key(b))
    z = vd if w is None else vd * (w if isinstance(w, float) else val(w))
    decay = None if g is None else torch.exp(key(g))
    outputs = []
    for t in range(T):
        if decay is not None:
            S = decay[:, t, :, None, :, None] * S                           # [B, H, 1, K|1, 1]
        r = z[:, t]
        if erase:
            r = r - torch.einsum("bhk,bhgkv->bhgv", e[:, t], S)             # the gated residual
        S = S + kd[:, t, :, None, :, None] * r.unsqueeze(-2)
        outputs.append(torch.einsum("bhk,bhgkv->bhgv", qd[:, t], S))
    return torch.stack(outputs, dim=1).reshape(B, T, HV, V), S.reshape(B, HV, K, V)


def _pad_sequences(x, offsets, T_max):
    """Packed [1, T, ...] -> [N, T_max, ...], each sequence left-aligned and zero-padded.

    Zero padding is inert: a padded token has k = 0 and g = 0, so the state passes unchanged."""
    if x is None or isinstance(x, float):
        return x
    rows = [torch.nn.functional.pad(x[0, s:e], (0, 0) * (x.ndim - 2) + (0, T_max - (e - s)))
            for s, e in zip(offsets, offsets[1:])]
    return torch.stack(rows)


def chunk_gdn2(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: Gate, b: Gate, w: Gate,
               scale: float, initial_state: Optional[torch.Tensor], output_final_state: bool,
               cu_seqlens: Optional[torch.Tensor], use_qk_l2norm: bool = False, chunk_size: int = 64):
    """Chunkwise GDN-2 over validated inputs; shapes as in :func:`gdn2.ops.gated_delta_rule2`."""
    if use_qk_l2norm:
        q, k = l2norm(q), l2norm(k)
    if cu_seqlens is None and 0 < q.shape[1] <= TOKEN_LOOP_T:
        o, S = _token_loop(q, k, v, g, b, w, scale, initial_state)
    elif cu_seqlens is None:
        o, S = _chunk_loop(q, k, v, g, b, w, scale, initial_state, chunk_size)
    else:
        offsets = cu_seqlens.tolist()
        lengths = [e - s for s, e in zip(offsets, offsets[1:])]
        T_max = max(lengths)
        padded = [_pad_sequences(x, offsets, T_max) for x in (q, k, v, g, b, w)]
        o_pad, S = _chunk_loop(*padded, scale, initial_state, chunk_size)
        o = torch.cat([o_pad[n, :length] for n, length in enumerate(lengths)]).unsqueeze(0)
    state_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return o.to(q.dtype), (S.to(state_dtype) if output_final_state else None)
