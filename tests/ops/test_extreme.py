"""Extreme gates: log-decays of -1e4, b = 2, w = 0, in float64 and float32."""

import pytest
import torch

from gdn2.ops import gated_delta_rule2
from gdn2.testing import assert_close, random_inputs, run_with_grads


def extreme_inputs(dtype, gate):
    x = random_inputs(B=1, T=150, H=2, HV=4, K=16, V=16, gate=gate, dtype=torch.float64,
                      initial_state=True, seed=11)
    g = x["g"]
    forget = torch.rand(g.shape, generator=torch.Generator().manual_seed(1)) < 0.3
    x["g"] = torch.where(forget, torch.full_like(g, -1e4), g)   # hard resets, per token (and channel)
    x["b"] = torch.where(torch.rand(x["b"].shape) < 0.5, torch.full_like(x["b"], 2.0), x["b"])
    x["w"] = torch.where(torch.rand(x["w"].shape) < 0.3, torch.zeros_like(x["w"]), x["w"])
    return {k: (v.to(dtype) if isinstance(v, torch.Tensor) and k != "initial_state" else v)
            for k, v in x.items()} | ({"initial_state": x["initial_state"].to(
                torch.float64 if dtype == torch.float64 else torch.float32)})


@pytest.mark.parametrize("gate", ["channel", "scalar"])
# In-chunk cumulative log-decays reach ~-1e5 here, so differences of them carry an absolute
# error of ~1e5 * eps: the float64 bound is 1e-10 rather than the 1e-12 of ordinary gates.
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_extreme_gates_finite_and_exact(gate, dtype, rtol):
    x = extreme_inputs(dtype, gate)
    ref = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in x.items()}
    o_ref, S_ref, g_ref = run_with_grads(gated_delta_rule2, ref, backend="recurrent")
    o, S, grads = run_with_grads(gated_delta_rule2, x, backend="chunk")
    assert_close("o", o, o_ref, rtol)
    assert_close("S", S, S_ref, rtol)
    for name, gr in grads.items():
        assert_close(f"d{name}", gr, g_ref[name], rtol * (10 if dtype == torch.float32 else 1))
