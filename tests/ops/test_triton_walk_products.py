"""The one-pass walk's float16 products (``state.F16_PRODUCTS``, attempt 33) and their range guard:
the walk records the programs whose outputs or state left float16's range and walks them again
with one-pass TF32 products, so large values cost time, never accuracy. Interpreter-sized shapes
(a GPU runs the same checks at full size in tests/gpu)."""

import pytest
import torch

from gdn2.ops import gated_delta_rule2
from gdn2.testing import RecordedLaunches, assert_close, error, random_inputs

triton = pytest.importorskip("triton")
pytestmark = pytest.mark.interpret
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def one_pass_forward(x, monkeypatch, f16=True):
    """o of the one-pass forward (bfloat16, normalised q and k, no final state) with float16
    products or not, and the walk's launches (32 columns at two stages unless set)."""
    from gdn2.ops.gdn2.triton import state
    launches = RecordedLaunches(state.chunk_state_fwd_kernel)
    with monkeypatch.context() as m:
        m.setattr(state, "chunk_state_fwd_kernel", launches)
        m.setattr(state, "F16_PRODUCTS", f16)
        # 32 columns at two stages unless a test sets them: the programs counted below are those of
        # that tiling, which a card's ``f16_walk_tiling`` would change by shape
        m.setattr(state, "F16_WALK_COLUMNS", state.F16_WALK_COLUMNS or 32)
        m.setattr(state, "F16_WALK_STAGES", state.F16_WALK_STAGES or 2)
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
def test_values_past_float16_range_walk_again(erase, walk_scale_past_range, monkeypatch):
    """The guard, where the scale cannot keep the walk in float16's range (a state grown past 65504
    times the largest z: here forced by scaling sequence 0 by 2^20 more than the walk would): the
    first walk's products overflow and flag that sequence's programs, and only those; the second
    walk's TF32 products make its o finite and equal to the TF32 forward's (a power of two scales
    exactly), while the other sequence keeps its float16 products."""
    x = random_inputs(B=2, T=100, H=2, HV=4, K=32, V=64, b_max=2.0, erase=erase, dtype=torch.bfloat16, seed=42,
                      device=DEVICE)
    o, seen = one_pass_forward(x, monkeypatch)
    programs = 4 * 2   # value heads x value tiles of sequence 0
    assert seen == [(1, programs), (2, programs)], seen
    assert torch.isfinite(o).all()
    o_tf32, _ = one_pass_forward(x, monkeypatch, f16=False)
    assert torch.equal(o[0], o_tf32[0])
    err = error(o[1], o_tf32[1])
    assert 0 < err.rel_rms < 2e-3, err


@pytest.mark.parametrize("case", ["v at 1e-6", "v at 1e4", "initial state at 1e3"])
def test_float16_products_at_any_scale(case, monkeypatch):
    """Below float16's normal range (6e-5) its products keep fewer bits, and far above it they
    overflow: the walk runs on z and the initial state scaled by a power of two (the largest near 1),
    so o at v ~ 1e-6 or 1e4, or beside an initial state 1e3 times v, is as close to the TF32
    products' as at unit scale, without a second walk (without the scale: 4e-2 at 1e-6)."""
    x = random_inputs(B=2, T=100, H=2, HV=4, K=32, V=64, b_max=2.0, dtype=torch.bfloat16, seed=44, device=DEVICE,
                      initial_state=case.startswith("initial"))
    if case.startswith("v"):
        x["v"] = (x["v"].float() * float(case.split()[-1])).to(torch.bfloat16)
    else:
        x["initial_state"] = x["initial_state"] * 1e3
    o, seen = one_pass_forward(x, monkeypatch)
    assert seen == [(1, 0), (2, 0)], seen
    o_tf32, _ = one_pass_forward(x, monkeypatch, f16=False)
    err = error(o, o_tf32)
    assert 0 < err.rel_rms < 2e-3, err


def test_one_stage_walk_keeps_tf32_products(monkeypatch):
    """At one pipeline stage the walk launches once, with TF32 products: float16 ones there gave
    finite garbage under Triton 3.6 on an H100 (test_triton_float16_walk_two_stages, 2026-12-06)."""
    from gdn2.ops.gdn2.triton import state
    monkeypatch.setattr(state, "F16_WALK_STAGES", 1)
    x = random_inputs(B=1, T=70, H=2, K=32, V=32, b_max=2.0, dtype=torch.bfloat16, seed=43, device=DEVICE)
    _, seen = one_pass_forward(x, monkeypatch)
    assert seen == [(0, None)], seen


def pair_gradients(x, monkeypatch, products, cu=None):
    """Every output and gradient of the float32 backend (normalised q and k; the backward's two walks
    on ``products``), with the pair kernel's launches."""
    from gdn2.ops.gdn2.triton import backward
    from gdn2.testing import backend_outputs
    launches = RecordedLaunches(backward.chunk_state_pair_kernel)
    with monkeypatch.context() as m:
        m.setattr(backward, "chunk_state_pair_kernel", launches)
        m.setattr(backward, "PAIR_PRODUCTS", products)
        out = backend_outputs(x, "triton", cu_seqlens=cu, use_qk_l2norm=True)
    return out, launches.seen


@pytest.mark.parametrize("case", ["grouped", "packed", "no erase", "dO at 1e-7"])
def test_backward_walks_on_float16_hilo_products(case, monkeypatch, request):
    """``backward.PAIR_PRODUCTS = "f16x3"``: the backward's walks on two-term float16 products over
    scaled operands give every gradient (initial state and final-state cotangent included) as the
    three-pass walks do, to float32's level, and meet the criterion against float64; "dO at 1e-7":
    gradients far under float16's range (a mean loss over many tokens) keep their bits."""
    import itertools
    from gdn2.testing import check_backend
    lengths = [7, 64, 1, 50]
    cu = torch.tensor([0] + list(itertools.accumulate(lengths)), device=DEVICE) if case == "packed" else None
    x = random_inputs(B=1 if cu is not None else 2, T=sum(lengths) if cu is not None else 70, H=2, HV=4, K=32, V=64,
                      b_max=2.0, erase="zero" if case == "no erase" else "channel", initial_state=True,
                      N=len(lengths) if cu is not None else None, seed=45, device=DEVICE)
    if case == "dO at 1e-7":
        request.getfixturevalue("loss_at_1e7")
    plain, seen = pair_gradients(x, monkeypatch, "tf32x3", cu)
    assert seen == [(0, None)], seen
    hilo, seen = pair_gradients(x, monkeypatch, "f16x3", cu)
    assert [guard for guard, _ in seen] == [1, 2] and seen[0][1] == 0, seen
    for name, (fast, _, _) in hilo.items():
        if name.startswith("d") or name == "final_state":
            err = error(fast, plain[name][0])
            assert err.rel_rms < 1e-5, (name, err)
    if case != "dO at 1e-7":
        from gdn2.ops.gdn2.triton import backward
        monkeypatch.setattr(backward, "PAIR_PRODUCTS", "f16x3")
        check_backend(x, "triton", cu_seqlens=cu, use_qk_l2norm=True)


@pytest.mark.parametrize("erase", ["channel", "zero"])
def test_backward_walks_range_guard(erase, walk_scale_past_range, monkeypatch):
    """The backward walks' guard: sequence 0's scales 2^20 past what the walks would choose, so its
    float16 hi/lo products overflow; its programs (both walks) walk again three-pass, and every
    gradient stays as the three-pass walks give it."""
    x = random_inputs(B=2, T=70, H=2, HV=4, K=32, V=64, b_max=2.0, erase=erase, initial_state=True, seed=46,
                      device=DEVICE)
    plain, _ = pair_gradients(x, monkeypatch, "tf32x3")
    hilo, seen = pair_gradients(x, monkeypatch, "f16x3")
    programs = 2 * 4 * 2   # both walks x value heads x value tiles of sequence 0
    assert seen == [(1, programs), (2, programs)], seen
    for name, (fast, _, _) in hilo.items():
        if name.startswith("d") or name == "final_state":
            err = error(fast, plain[name][0])
            assert err.rel_rms < 1e-5, (name, err)


@pytest.mark.parametrize("walk", ["recompute", "reverse"])
def test_backward_walks_guard_one_walk(walk, monkeypatch):
    """Only one of the two walks past float16's range (sequence 0's z scale, or its dO scale, forced
    2^20 too large): only that walk's programs are flagged, in its own half of the flag buffer, and
    walk again; every gradient as the three-pass walks give it. And without L2-normalised q and k
    the walks keep three-pass products (their gated operands are not scaled)."""
    from gdn2.ops.gdn2.triton import state
    scale, calls = state.power_of_two_scale, []

    def one_too_large(*args):   # the backward asks for z's scale first, then dO's
        s = scale(*args)
        calls.append(len(calls))
        if calls[-1] == {"recompute": 0, "reverse": 1}[walk]:
            s[0] *= 2.0 ** 20
        return s
    x = random_inputs(B=2, T=70, H=2, HV=4, K=32, V=64, b_max=2.0, initial_state=True, seed=47, device=DEVICE)
    plain, _ = pair_gradients(x, monkeypatch, "tf32x3")
    monkeypatch.setattr(state, "power_of_two_scale", one_too_large)
    hilo, seen = pair_gradients(x, monkeypatch, "f16x3")
    assert seen == [(1, 4 * 2), (2, 4 * 2)], seen   # value heads x value tiles of sequence 0, one walk
    for name, (fast, _, _) in hilo.items():
        if name.startswith("d") or name == "final_state":
            err = error(fast, plain[name][0])
            assert err.rel_rms < 1e-5, (name, err)
    from gdn2.ops.gdn2.triton import backward
    from gdn2.testing import backend_outputs
    launches = RecordedLaunches(backward.chunk_state_pair_kernel)
    monkeypatch.setattr(backward, "chunk_state_pair_kernel", launches)
    monkeypatch.setattr(backward, "PAIR_PRODUCTS", "f16x3")
    backend_outputs(x, "triton")
    assert launches.seen == [(0, None)], launches.seen


tl = pytest.importorskip("triton.language")
from gdn2.ops.gdn2.triton.common import mma  # noqa: E402  (after the skip: needs triton)


@triton.jit
def _mma_kernel(a, b, c, N: tl.constexpr, PREC: tl.constexpr):
    o = tl.arange(0, N)
    p = o[:, None] * N + o[None, :]
    tl.store(c + p, mma(tl.load(a + p), tl.load(b + p), PREC))


@pytest.mark.parametrize("magnitude", [1.0, 1e-3, 3e-5])
def test_float16_hilo_products_keep_22_bits(magnitude):
    """``common.mma``'s "f16x3": a product of float32 operands to ~22 bits, as three-pass TF32's,
    whatever their magnitude inside float16's range. At 1e-3 an unscaled lo part (x - hi, 2^11
    below x) lies in float16's subnormals and keeps ~2 bits: 3e-5 relative error, which put an
    H100's float32 dh0 past the criterion (2026-12-06 20:55); carried 2^11 up it keeps 11. And
    "f16": one float16 pass, 10 bits, at unit magnitude."""
    g = torch.Generator().manual_seed(50)
    a, b = (torch.randn(32, 32, generator=g) * magnitude for _ in range(2))
    expected = a.double() @ b.double()
    for prec, rtol in (("f16x3", 2e-6), ("f16", 2e-3)):
        if prec == "f16" and magnitude != 1.0:
            continue
        c = torch.empty(32, 32, device=DEVICE)
        _mma_kernel[(1,)](a.to(DEVICE), b.to(DEVICE), c, N=32, PREC=prec)
        assert_close(f"{prec} at {magnitude:g}", c, expected, rtol=rtol)


@pytest.mark.parametrize("w_mode", ["channel", "per head", "none"])
def test_power_of_two_scale_per_sequence(w_mode):
    """The walks' scales (``state.power_of_two_scale``, two kernels) equal 2^-e for e the exponent
    of each sequence's and value head's largest |w v| (computed here in float64), exactly: packed
    sequences of lengths off the chunk size at magnitudes 1e-6 to 1e4, an empty sequence, one whose
    z is zero (its scale from the initial state), and one with an infinite v (scale 1)."""
    from gdn2.ops.gdn2.triton import state
    from gdn2.ops.gdn2.triton.common import make_chunks
    lengths, HV, V, K = [70, 0, 130, 5, 64, 33], 3, 48, 16
    offsets = [sum(lengths[:i]) for i in range(len(lengths) + 1)]
    T, g = offsets[-1], torch.Generator().manual_seed(52)
    v = torch.randn(T, HV, V, generator=g)
    for n, mag in enumerate([1e-6, 1.0, 1e4, 0.0, 3.0, 1.0]):
        v[offsets[n]:offsets[n + 1]] *= mag
    v[offsets[5] + 7, 2, 3] = float("inf")
    w = {"channel": torch.rand(T, HV, V, generator=g), "per head": torch.rand(T, HV, generator=g) * 4,
         "none": None}[w_mode]
    h0 = torch.randn(len(lengths), HV, K, V, generator=g) * 1e-3
    v = v.to(torch.bfloat16)
    z = v.double() * (1.0 if w is None else (w.double() if w.dim() == 3 else w.double()[..., None]))
    expected = torch.ones(len(lengths), HV, dtype=torch.float64)
    for n in range(len(lengths)):
        top = z[offsets[n]:offsets[n + 1]].abs().amax(dim=(0, 2)) if lengths[n] else torch.zeros(HV).double()
        top = torch.where(top > 0, top, h0[n].double().abs().amax(dim=(-2, -1)))
        _, e = torch.frexp(top)
        expected[n] = torch.where(torch.isfinite(top), torch.ldexp(torch.ones_like(top), -e), 1.0)
    cu = torch.tensor(offsets, dtype=torch.int32, device=DEVICE)
    chunks = make_chunks(offsets, 64, DEVICE)
    dev = lambda x: x.to(DEVICE) if x is not None else None  # noqa: E731
    scale = state.power_of_two_scale(dev(v), dev(w), dev(h0), cu, chunks)
    torch.testing.assert_close(scale.double().cpu(), expected, rtol=0, atol=0)
    assert (scale[3] >= 2.0 ** 7).all()   # from h0 at ~1e-3 (z there is zero)
    assert scale[5, 2] == 1.0 and scale[5, 0] < 1.0
    without_h0 = state.power_of_two_scale(dev(v), dev(w), None, cu, chunks)
    assert without_h0[3].tolist() == [1.0] * HV and without_h0[1].tolist() == [1.0] * HV


def test_float16_walk_tiling_by_programs(monkeypatch):
    """``state.f16_walk_tiling``: one stage (one-pass TF32 products) where the 32-column walk has more
    programs than the card has multiprocessors, 16 columns where it fills at most half of them, 32
    columns at two stages between, and off CUDA; a module setting overrides the rule."""
    from gdn2.ops.gdn2.triton import state
    assert [state.f16_walk_tiling(p, 132) for p in (512, 256, 133, 132, 128, 67, 66, 64, 1)] == \
        [(32, 1)] * 3 + [(32, 2)] * 3 + [(16, 2)] * 3
    assert state.f16_walk_tiling(64, None) == (32, 2)
    monkeypatch.setattr(state, "F16_WALK_STAGES", 2)
    assert state.f16_walk_tiling(512, 132) == (32, 2)
    monkeypatch.setattr(state, "F16_WALK_COLUMNS", 32)
    assert state.f16_walk_tiling(64, 132) == (32, 2)
