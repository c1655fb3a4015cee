"""Each family wrapper against its own textbook recurrence.

The references below are written from the published update rules, in float64, with a plain
Python loop over tokens for every (batch, value head); they use nothing from ``gdn2.ops``.
State ``S`` is ``K x V`` (key axis first) and ``o_t = S_t^T (scale * q_t)``, ``scale = K ** -0.5``.

    DeltaNet  S = (I - beta k k^T) S + beta k v^T
    GDN       S = alpha (I - beta k k^T) S + beta k v^T,        alpha = exp(g), g per head
    KDA       S = (I - beta k k^T) Diag(exp g) S + beta k v^T,  g per channel
    GLA       S = Diag(exp g) S + k v^T                          (or exp(g) S with a per-head g)
    GDN-2     S = (I - k (b*k)^T) Diag(exp g) S + k (w*v)^T

Grouped value heads: value head j reads key head j // (HV // H); the wrappers' ``beta`` lives on
key heads, so value head j uses beta of key head j // (HV // H) for both erase and write.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import pytest
import torch

from gdn2.ops import delta_rule, gated_delta_rule, gated_delta_rule2, gated_linear_attention, kda
from gdn2.testing import assert_close, random_inputs

F64 = torch.float64
BACKENDS = ["chunk", "recurrent"]
TS = [1, 37, 70]  # 70 > one chunk of 64



def _normalise(x: torch.Tensor) -> torch.Tensor:
    """The operator's documented L2 normalisation: ``x / sqrt(sum(x^2) + 1e-6)`` over the last axis."""
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def step_deltanet(S, k, v, beta):
    I = torch.eye(k.shape[0], dtype=F64)
    return (I - beta * torch.outer(k, k)) @ S + beta * torch.outer(k, v)


def step_gdn(S, k, v, g, beta):
    I = torch.eye(k.shape[0], dtype=F64)
    alpha = torch.exp(g)
    return alpha * ((I - beta * torch.outer(k, k)) @ S) + beta * torch.outer(k, v)


def step_kda(S, k, v, g, beta):
    I = torch.eye(k.shape[0], dtype=F64)
    return (I - beta * torch.outer(k, k)) @ torch.diag(torch.exp(g)) @ S + beta * torch.outer(k, v)


def step_gla(S, k, v, g):
    decay = torch.diag(torch.exp(g)) @ S if g.ndim == 1 else torch.exp(g) * S
    return decay + torch.outer(k, v)


def step_gdn2(S, k, v, g, b, w):
    I = torch.eye(k.shape[0], dtype=F64)
    return (I - torch.outer(k, b * k)) @ torch.diag(torch.exp(g)) @ S + torch.outer(k, w * v)


def textbook(step: Callable, q, k, v, key_gates: Dict[str, torch.Tensor],
             value_gates: Optional[Dict[str, torch.Tensor]] = None, initial_state=None,
             l2norm: bool = True, spans=None):
    """Run ``step`` token by token for every (batch, value head).

    q, k: [B, T, H, K]; v: [B, T, HV, V]; key_gates: name -> [B, T, H, ...];
    value_gates: name -> [B, T, HV, ...]; initial_state: [N, HV, K, V]; spans: list of
    (row, start, end) sequences (default: one per batch row). Returns o [B, T, HV, V], S [N, HV, K, V].
    """
    value_gates = value_gates or {}
    B, T, H, K = q.shape
    HV = v.shape[2]
    group = HV // H
    if l2norm:
        q, k = _normalise(q), _normalise(k)
    scale = K ** -0.5
    spans = [(row, 0, T) for row in range(B)] if spans is None else spans
    rows_out = {row: [[None] * HV for _ in range(T)] for row in range(B)}
    finals = []
    for n, (row, start, end) in enumerate(spans):
        final_heads = []
        for j in range(HV):
            i = j // group
            S = (torch.zeros(K, v.shape[3], dtype=F64) if initial_state is None
                 else initial_state[n, j].to(F64))
            for t in range(start, end):
                gates = {name: x[row, t, i] for name, x in key_gates.items()}
                gates.update({name: x[row, t, j] for name, x in value_gates.items()})
                S = step(S, k[row, t, i], v[row, t, j], **gates)
                rows_out[row][t][j] = S.T @ (scale * q[row, t, i])
            final_heads.append(S)
        finals.append(torch.stack(final_heads))
    o = torch.stack([torch.stack([torch.stack(rows_out[row][t]) for t in range(T)]) for row in range(B)])
    return o, torch.stack(finals)



def _family_case(model: str, T: int, seed: int, B: int = 2, H: int = 2, HV: int = 4, K: int = 6, V: int = 5,
                 init: bool = True):
    """Inputs, a wrapper call and the matching textbook call for ``model``."""
    gate = {"deltanet": "none", "gdn": "scalar", "kda": "channel", "gla": "channel",
            "gla_scalar": "scalar"}[model]
    x = random_inputs(B=B, T=T, H=H, K=K, V=V, HV=HV, gate=gate, erase="scalar", write="none",
                      dtype=F64, initial_state=init, seed=seed)
    q, k, v, g, beta = x["q"], x["k"], x["v"], x["g"], x["b"]
    if model == "deltanet":
        wrapper = lambda **kw: delta_rule(q, k, v, beta, **kw)  # noqa: E731
        ref = lambda **kw: textbook(step_deltanet, q, k, v, {"beta": beta}, **kw)  # noqa: E731
    elif model == "gdn":
        wrapper = lambda **kw: gated_delta_rule(q, k, v, g, beta, **kw)  # noqa: E731
        ref = lambda **kw: textbook(step_gdn, q, k, v, {"g": g, "beta": beta}, **kw)  # noqa: E731
    elif model == "kda":
        wrapper = lambda **kw: kda(q, k, v, g, beta, **kw)  # noqa: E731
        ref = lambda **kw: textbook(step_kda, q, k, v, {"g": g, "beta": beta}, **kw)  # noqa: E731
    else:
        wrapper = lambda **kw: gated_linear_attention(q, k, v, g, **kw)  # noqa: E731
        ref = lambda **kw: textbook(step_gla, q, k, v, {"g": g}, **kw)  # noqa: E731
    return x, wrapper, ref


MODELS = ["deltanet", "gdn", "kda", "gla", "gla_scalar"]
STATE_MODES = [(True, True), (False, False), (False, True)]  # (initial_state, output_final_state)


@pytest.mark.parametrize("state_mode", STATE_MODES, ids=["init+final", "plain", "final_only"])
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("model", MODELS)
def test_wrapper_matches_textbook(model, T, state_mode):
    init, final = state_mode
    x, wrapper, ref = _family_case(model, T, seed=1000 + T, init=init)
    S0 = x.get("initial_state")
    o_ref, S_ref = ref(initial_state=S0, l2norm=True)
    for backend in BACKENDS:
        o, S = wrapper(initial_state=S0, output_final_state=final, use_qk_l2norm=True, backend=backend)
        assert o.dtype == F64
        assert_close(f"{model} {backend} o", o, o_ref, rtol=1e-12)
        if final:
            assert S.dtype == F64
            assert_close(f"{model} {backend} final state", S, S_ref, rtol=1e-12)
        else:
            assert S is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model", MODELS)
def test_wrapper_matches_textbook_without_l2norm_single_head_group(model, backend):
    # HV == H, K > V, no l2norm in the operator (k from random_inputs is already unit-norm)
    x, wrapper, ref = _family_case(model, 70, seed=7, B=1, H=2, HV=2, K=8, V=3)
    o_ref, S_ref = ref(initial_state=x["initial_state"], l2norm=False)
    o, S = wrapper(initial_state=x["initial_state"], output_final_state=True, backend=backend)
    assert_close(f"{model} {backend} o", o, o_ref, rtol=1e-12)
    assert_close(f"{model} {backend} final state", S, S_ref, rtol=1e-12)



@pytest.mark.parametrize("b_max", [1.0, 2.0], ids=["b01", "b02_negative_eigenvalues"])
@pytest.mark.parametrize("T", TS)
def test_gdn2_matches_textbook(T, b_max):
    x = random_inputs(B=2, T=T, H=2, K=6, V=5, HV=4, gate="channel", erase="channel", write="channel",
                      dtype=F64, b_max=b_max, initial_state=True, seed=2000 + T)
    q, k, v, g, b, w, S0 = (x[n] for n in ("q", "k", "v", "g", "b", "w", "initial_state"))
    o_ref, S_ref = textbook(step_gdn2, q, k, v, {"g": g, "b": b}, {"w": w}, initial_state=S0)
    for backend in BACKENDS:
        o, S = gated_delta_rule2(q, k, v, g, b, w, initial_state=S0, output_final_state=True,
                                 use_qk_l2norm=True, backend=backend)
        assert_close(f"gdn2 {backend} o", o, o_ref, rtol=1e-12)
        assert_close(f"gdn2 {backend} final state", S, S_ref, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gdn2_packed_sequences_match_textbook(backend):
    # state resets at every boundary; one sequence crosses a chunk boundary, one is empty
    offsets = [0, 5, 5, 75, 80]
    T = offsets[-1]
    x = random_inputs(B=1, T=T, H=2, K=6, V=5, HV=4, dtype=F64, initial_state=True, N=len(offsets) - 1,
                      seed=3)
    q, k, v, g, b, w, S0 = (x[n] for n in ("q", "k", "v", "g", "b", "w", "initial_state"))
    spans = [(0, s, e) for s, e in zip(offsets, offsets[1:])]
    o_ref, S_ref = textbook(step_gdn2, q, k, v, {"g": g, "b": b}, {"w": w}, initial_state=S0, spans=spans)
    o, S = gated_delta_rule2(q, k, v, g, b, w, initial_state=S0, output_final_state=True,
                             cu_seqlens=torch.tensor(offsets), use_qk_l2norm=True, backend=backend)
    assert_close(f"gdn2 packed {backend} o", o, o_ref, rtol=1e-12)
    assert_close(f"gdn2 packed {backend} final state", S, S_ref, rtol=1e-12)



@pytest.mark.parametrize("backend", BACKENDS)
def test_kda_gradients_match_textbook_autograd(backend):
    """d/d beta of the tied wrapper (beta feeds both erase and, repeated to value heads, write)."""
    B, T, H, HV, K, V = 1, 70, 2, 4, 6, 5
    x = random_inputs(B=B, T=T, H=H, K=K, V=V, HV=HV, gate="channel", erase="scalar", write="none",
                      dtype=F64, initial_state=True, seed=11)
    gen = torch.Generator().manual_seed(12)
    dO = torch.randn(B, T, HV, V, generator=gen, dtype=F64)
    dS = torch.randn(B, HV, K, V, generator=gen, dtype=F64)
    names = ("q", "k", "v", "g", "b", "initial_state")

    def leaves():
        return [x[n].detach().clone().requires_grad_(True) for n in names]

    q, k, v, g, beta, S0 = ref_leaves = leaves()
    o_ref, S_ref = textbook(step_kda, q, k, v, {"g": g, "beta": beta}, initial_state=S0)
    ((o_ref * dO).sum() + (S_ref * dS).sum()).backward()

    q, k, v, g, beta, S0 = op_leaves = leaves()
    o, S = kda(q, k, v, g, beta, initial_state=S0, output_final_state=True, use_qk_l2norm=True,
               backend=backend)
    ((o * dO).sum() + (S * dS).sum()).backward()

    for name, mine, theirs in zip(names, op_leaves, ref_leaves):
        assert mine.grad is not None, f"no gradient for {name}"
        assert_close(f"kda {backend} d{name}", mine.grad, theirs.grad, rtol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gdn_and_deltanet_beta_gradients_match_textbook(backend):
    B, T, H, HV, K, V = 1, 37, 2, 4, 6, 5
    x = random_inputs(B=B, T=T, H=H, K=K, V=V, HV=HV, gate="scalar", erase="scalar", write="none",
                      dtype=F64, seed=13)
    dO = torch.randn(B, T, HV, V, generator=torch.Generator().manual_seed(14), dtype=F64)
    q, k, v, g = x["q"], x["k"], x["v"], x["g"]
    for wrapper, step, gates in ((gated_delta_rule, step_gdn, True), (delta_rule, step_deltanet, False)):
        beta_ref = x["b"].detach().clone().requires_grad_(True)
        key_gates = {"g": g, "beta": beta_ref} if gates else {"beta": beta_ref}
        (textbook(step, q, k, v, key_gates)[0] * dO).sum().backward()
        beta = x["b"].detach().clone().requires_grad_(True)
        args = (q, k, v, g, beta) if gates else (q, k, v, beta)
        (wrapper(*args, use_qk_l2norm=True, backend=backend)[0] * dO).sum().backward()
        assert_close(f"{wrapper.__name__} {backend} dbeta", beta.grad, beta_ref.grad, rtol=1e-10)
