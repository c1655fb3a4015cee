"""The one-pass walk's float16 products (``state.F16_PRODUCTS``, attempt 33) and their range guard:
the walk records the programs whose outputs or state left float16's range and walks them again
with one-pass TF32 products, so large values cost time, never accuracy. Interpreter-sized shapes
(a GPU runs the same checks at full size in tests/gpu)."""

import pytest
import torch

from gdn2.ops import gated_delta_rule2
from gdn2.testing import error, random_inputs

triton = pytest.importorskip("triton")
pytestmark = pytest.mark.interpret
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


class Launches:
    """``chunk_state_fwd_kernel`` with every launch's GUARD and, after it, how many programs its
    flag marks (launches run in order, so the count is the first walk's record)."""

    def __init__(self, kernel):
        self.kernel, self.seen = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.kernel[grid](*args, **kwargs)
            flag = kwargs.get("flag")
            self.seen.append((kwargs.get("GUARD", 0), int(flag.sum()) if flag is not None else None))
        return launch


def one_pass_forward(x, monkeypatch, f16=True):
    """o of the one-pass forward (bfloat16, normalised q and k, no final state) with float16
    products or not, and the walk's launches."""
    from gdn2.ops.gdn2.triton import state
    launches = Launches(state.chunk_state_fwd_kernel)
    with monkeypatch.context() as m:
        m.setattr(state, "chunk_state_fwd_kernel", launches)
        m.setattr(state, "F16_PRODUCTS", f16)
        with torch.no_grad():
            o, S = gated_delta_rule2(**x, backend="triton", use_qk_l2norm=True)
    assert o.dtype == torch.bfloat16 and S is None
    return o.float(), launches.seen


# Against float64 the interpreter's truncation of the normalised q and k to bfloat16 (a GPU rounds
# to nearest) costs ~9e-3 relative whatever the products, past the criterion; so here the reference
# is the same forward with one-pass TF32 products (exact float32 in the interpreter), and the GPU
# tests hold the float16 products to the criterion against float64.


@pytest.mark.parametrize("erase", ["channel", "zero"])
def test_float16_products_round_like_tf32(erase, monkeypatch):
    """In range: one walk, no program walked again, o within float16's rounding of the TF32
    products' (erase on, and b = 0 where the state is not in R), and not equal to it (the float16
    products are the ones run)."""
    x = random_inputs(B=2, T=100, H=2, HV=4, K=32, V=64, b_max=2.0, erase=erase, dtype=torch.bfloat16, seed=41,
                      device=DEVICE)
    o, seen = one_pass_forward(x, monkeypatch)
    assert seen == [(1, 0), (2, 0)], seen
    o_tf32, seen = one_pass_forward(x, monkeypatch, f16=False)
    assert seen == [(0, None)], seen
    err = error(o, o_tf32)
    assert 0 < err.rel_rms < 2e-3, err


@pytest.mark.parametrize("erase", ["channel", "zero"])
def test_values_past_float16_range_walk_again(erase, monkeypatch):
    """v of magnitude ~3e5 in one sequence of two (bfloat16 holds it, float16 does not): the first
    walk's products overflow and flag that sequence's programs, and only those; the second walk's
    TF32 products make its o finite and equal to the TF32 forward's, while the other sequence
    keeps its float16 products."""
    x = random_inputs(B=2, T=100, H=2, HV=4, K=32, V=64, b_max=2.0, erase=erase, dtype=torch.bfloat16, seed=42,
                      device=DEVICE)
    x["v"][0] = (x["v"][0].float() * 3e5).to(torch.bfloat16)
    o, seen = one_pass_forward(x, monkeypatch)
    programs = 4 * 2   # value heads x value tiles of the scaled sequence
    assert seen == [(1, programs), (2, programs)], seen
    assert torch.isfinite(o).all()
    o_tf32, _ = one_pass_forward(x, monkeypatch, f16=False)
    assert torch.equal(o[0], o_tf32[0])
    err = error(o[1], o_tf32[1])
    assert 0 < err.rel_rms < 2e-3, err


def test_one_stage_walk_keeps_tf32_products(monkeypatch):
    """At one pipeline stage the walk launches once, with TF32 products: float16 ones there gave
    finite garbage under Triton 3.6 on an H100 (test_triton_float16_walk_two_stages, 2026-12-06)."""
    from gdn2.ops.gdn2.triton import state
    monkeypatch.setattr(state, "F16_WALK_STAGES", 1)
    x = random_inputs(B=1, T=70, H=2, K=32, V=32, b_max=2.0, dtype=torch.bfloat16, seed=43, device=DEVICE)
    _, seen = one_pass_forward(x, monkeypatch)
    assert seen == [(0, None)], seen
