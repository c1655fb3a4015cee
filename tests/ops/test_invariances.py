"""Invariances of the operator: packing, splitting with a carried state, gradcheck."""

import itertools

import pytest
import torch

from gdn2.ops import gated_delta_rule2
from gdn2.testing import assert_close, random_inputs

F64 = torch.float64


@pytest.mark.parametrize("backend", ["chunk", "recurrent"])
def test_packed_equals_each_sequence_alone(backend):
    lengths = [17, 64, 3, 80]
    cu = torch.tensor([0] + list(itertools.accumulate(lengths)))
    x = random_inputs(B=1, T=int(cu[-1]), H=2, HV=4, K=8, V=16, dtype=F64, initial_state=True,
                      N=len(lengths), seed=4)
    o, S = gated_delta_rule2(**x, cu_seqlens=cu, output_final_state=True, backend=backend)
    for n, (s, e) in enumerate(zip(cu.tolist(), cu.tolist()[1:])):
        alone = {k: (v[:, s:e] if isinstance(v, torch.Tensor) and v.ndim >= 3 and k != "initial_state" else v)
                 for k, v in x.items()}
        alone["initial_state"] = x["initial_state"][n:n + 1]
        o_n, S_n = gated_delta_rule2(**alone, output_final_state=True, backend=backend)
        assert_close(f"o[{n}]", o[:, s:e], o_n, 1e-12)
        assert_close(f"S[{n}]", S[n:n + 1], S_n, 1e-12)


@pytest.mark.parametrize("backend", ["chunk", "recurrent"])
@pytest.mark.parametrize("split", [1, 50, 64, 99])
def test_split_with_carried_state_equals_whole(backend, split):
    x = random_inputs(B=2, T=100, H=2, HV=2, K=16, V=8, dtype=F64, initial_state=True, seed=5)
    o, S = gated_delta_rule2(**x, output_final_state=True, backend=backend)
    first = {k: (v[:, :split] if isinstance(v, torch.Tensor) and k != "initial_state" else v) for k, v in x.items()}
    second = {k: (v[:, split:] if isinstance(v, torch.Tensor) and k != "initial_state" else v) for k, v in x.items()}
    o1, S1 = gated_delta_rule2(**first, output_final_state=True, backend=backend)
    second["initial_state"] = S1
    o2, S2 = gated_delta_rule2(**second, output_final_state=True, backend=backend)
    assert_close("o", torch.cat([o1, o2], dim=1), o, 1e-12)
    assert_close("S", S2, S, 1e-12)


@pytest.mark.parametrize("backend", ["chunk", "recurrent"])
def test_gradcheck(backend):
    x = random_inputs(B=1, T=7, H=1, HV=2, K=3, V=2, dtype=F64, initial_state=True, b_max=2.0, seed=6)
    names = [k for k, v in x.items() if isinstance(v, torch.Tensor)]

    def fn(*tensors):
        kw = {**x, **dict(zip(names, tensors))}
        o, S = gated_delta_rule2(**kw, output_final_state=True, backend=backend)
        return o, S

    tensors = tuple(x[n].detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-8)


def test_chunk_size_does_not_change_the_result():
    from gdn2.ops.gdn2.chunk import chunk_gdn2
    x = random_inputs(B=1, T=77, H=2, K=16, V=16, dtype=F64, initial_state=True, seed=7)
    args = [x[k] for k in ("q", "k", "v", "g", "b", "w")]
    ref = chunk_gdn2(*args, 0.25, x["initial_state"], True, None, chunk_size=64)
    for C in (16, 32, 48, 128):
        o, S = chunk_gdn2(*args, 0.25, x["initial_state"], True, None, chunk_size=C)
        assert_close(f"o (C={C})", o, ref[0], 1e-12)
        assert_close(f"S (C={C})", S, ref[1], 1e-12)
