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


@pytest.mark.parametrize("T", [1, 63, 64, 65, 200])
@pytest.mark.parametrize("gates", GATES, ids=lambda x: "-".join(x))
def test_chunk_matches_recurrent(T, gates):
    decay, erase, write = gates
    inputs = random_inputs(B=2, T=T, H=2, HV=4, K=16, V=24, gate=decay, erase=erase, write=write,
                           dtype=F64, b_max=2.0, initial_state=True, seed=T)
    compare(inputs)


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
