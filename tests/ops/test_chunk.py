"""The chunkwise PyTorch backend against the float64 token recurrence, values and gradients."""

import itertools

import pytest
import torch

from gdn2.ops import gated_delta_rule2
from gdn2.testing import assert_close, random_inputs, run_with_grads

F64 = torch.float64
GATES = [  # (decay, erase, write)
    ("channel", "channel", "channel"), ("scalar", "scalar", "scalar"), ("none", "channel", "scalar"),
    ("channel", "zero", "none"), ("scalar", "none", "channel"), ("channel", "scalar", "channel"),
]


def compare(inputs, rtol=1e-12, **kwargs):
    o_ref, S_ref, g_ref = run_with_grads(gated_delta_rule2, inputs, backend="recurrent", **kwargs)
    o, S, grads = run_with_grads(gated_delta_rule2, inputs, backend="chunk", **kwargs)
    assert_close("o", o, o_ref, rtol)
    assert_close("final_state", S, S_ref, rtol)
    assert set(grads) == set(g_ref)
    for name in g_ref:
        assert g_ref[name] is not None, name
        assert_close(f"d{name}", grads[name], g_ref[name], rtol)


@pytest.mark.parametrize("T", [1, 2, 8, 9, 63, 64, 65, 200])   # up to TOKEN_LOOP_T (8): the token loop
@pytest.mark.parametrize("gates", GATES, ids=lambda x: "-".join(x))
def test_chunk_matches_recurrent(T, gates):
    decay, erase, write = gates
    inputs = random_inputs(B=2, T=T, H=2, HV=4, K=16, V=24, gate=decay, erase=erase, write=write,
                           dtype=F64, b_max=2.0, initial_state=True, seed=T)
    compare(inputs)


@pytest.mark.parametrize("gates", GATES, ids=lambda x: "-".join(x))
def test_empty_input_returns_the_initial_state(gates):
    decay, erase, write = gates
    for cu in (None, torch.tensor([0, 0, 0])):   # no tokens, and packed sequences all empty
        inputs = random_inputs(B=2 if cu is None else 1, T=0, H=2, HV=4, K=8, V=12, gate=decay, erase=erase,
                               write=write, dtype=F64, initial_state=True, N=2, seed=3)
        o, S = gated_delta_rule2(**inputs, cu_seqlens=cu, output_final_state=True, backend="chunk")
        assert o.shape == inputs["v"].shape and torch.equal(S, inputs["initial_state"])


@pytest.mark.parametrize("with_state,l2", itertools.product([False, True], [False, True]))
def test_packed_sequences(with_state, l2):
    lengths = [5, 64, 1, 90, 0, 33]
    cu = torch.tensor([0] + list(itertools.accumulate(lengths)))
    inputs = random_inputs(B=1, T=int(cu[-1]), H=2, HV=4, K=8, V=12, dtype=F64, b_max=2.0,
                           initial_state=with_state, N=len(lengths), seed=1)
    compare(inputs, cu_seqlens=cu, use_qk_l2norm=l2)


def test_long_decays_stay_exact():
    # cumulative log-decay far below -88 inside one chunk: exp(-G) would overflow
    inputs = random_inputs(B=1, T=130, H=1, K=16, V=16, dtype=F64, g_min=-30.0, b_max=2.0,
                           initial_state=True, seed=3)
    compare(inputs)


@pytest.mark.parametrize("dtype,rtol", [(F64, 1e-12), (torch.float32, 2e-5)], ids=str)
def test_mixed_decay_spans(dtype, rtol):
    """Sub-blocks on both sides of ``DIAG_SPAN`` in one call: centred products where the decay's
    span is small, the pairwise tile where it is not, gradients through both."""
    from gdn2.ops.gdn2.chunk import DIAG_SPAN
    inputs = random_inputs(B=2, T=128, H=2, HV=2, K=16, V=8, dtype=dtype, b_max=2.0, initial_state=True, seed=5)
    g = inputs["g"].clone()
    g[0, 16:32] *= 8.0                       # span ~60: the tile
    g[1, 64:80, 1, 3] = -5.0                 # one fast channel: the tile
    inputs["g"] = g
    spans = -g.view(2, 8, 16, 2, 16)[:, :, 1:].sum(2).amin(-1)
    assert (spans <= DIAG_SPAN).any() and (spans > DIAG_SPAN).any()
    if dtype == F64:
        compare(inputs, rtol)
    else:
        ref = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
        o_ref, S_ref, g_ref = run_with_grads(gated_delta_rule2, ref, backend="recurrent")
        o, S, grads = run_with_grads(gated_delta_rule2, inputs, backend="chunk")
        for name, a, b in [("o", o, o_ref), ("final_state", S, S_ref)] + [(f"d{n}", grads[n], g_ref[n]) for n in g_ref]:
            assert_close(name, a.double(), b, rtol)


def test_diagonal_block_forms_agree(monkeypatch):
    """The centred product and the pairwise tile give the same diagonal blocks."""
    from gdn2.ops.gdn2 import chunk
    x = random_inputs(B=2, T=64, H=2, K=16, V=8, dtype=F64, g_min=-1.0, seed=6)
    G = x["g"].transpose(1, 2).cumsum(-2)
    assert (G[..., 15::16, :] - G[..., ::16, :]).neg().amax() <= chunk.DIAG_SPAN   # every block narrow
    q, k = x["q"].transpose(1, 2), x["k"].transpose(1, 2)
    centred = chunk.decayed_products(q, k, G, strict=False)
    stacked = chunk.decayed_products(torch.stack([q, 2 * k]), k, G, strict=False)   # one call, two left sides
    monkeypatch.setattr(chunk, "DIAG_SPAN", -1.0)
    tile = chunk.decayed_products(q, k, G, strict=False)
    assert_close("decayed products", centred, tile, 1e-13)
    stacked_tile = chunk.decayed_products(torch.stack([q, 2 * k]), k, G, strict=False)
    for products in (stacked, stacked_tile):
        assert_close("stacked, first", products[0], tile, 1e-13)
        assert_close("stacked, second", products[1], chunk.decayed_products(2 * k, k, G, strict=False), 1e-13)


def test_closed_gates_match_the_recurrence():
    """-inf log-decays (closed gates) anywhere, first rows of sub-blocks included: finite, exact."""
    inputs = random_inputs(B=1, T=100, H=2, K=8, V=8, dtype=F64, b_max=2.0, initial_state=True, seed=8)
    inputs["g"][0, 16, 0, 2] = float("-inf")
    inputs["g"][0, 37, 1, 5] = float("-inf")
    inputs["g"][0, 64, :, :] = float("-inf")
    compare(inputs)


@pytest.mark.parametrize("T", [3, 40])
def test_constant_gates_and_closed_decays(T):
    """Number gates and closed decays (-inf, -1e4), through the token loop (T = 3) and the chunks."""
    inputs = random_inputs(B=2, T=T, H=1, HV=2, K=8, V=8, dtype=F64, initial_state=True, seed=21)
    g = inputs["g"].clone()
    g[0, 1, 0, 2] = float("-inf")
    g[1, 2, 0] = -1e4
    inputs.update(g=g, b=0.5, w=2.0)
    compare(inputs)
