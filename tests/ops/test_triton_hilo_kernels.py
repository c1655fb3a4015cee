"""The parallel kernels on float16 products. The backward's value and key kernels on hi/lo products
(``backward.PARALLEL_PRODUCTS``): operands scaled per sequence (dO's and z's power-of-two scales),
the scratch between the two kernels in scaled units, and a range guard that makes a flagged chunk
again three-pass. The intra kernel's products T and Aqk (``intra.FLOAT16_PRODUCTS``): hi/lo where
three-pass (one-pass TF32 left as it is), unscaled (bounded by normalised q and k). Every
result must come out as the TF32 kernels give it, to their level. Interpreter-sized shapes
(tests/gpu runs the same at full size)."""

import itertools

import pytest
import torch

from gdn2.testing import RecordedLaunches, backend_outputs, check_backend, error, random_inputs

triton = pytest.importorskip("triton")
pytestmark = pytest.mark.interpret
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
GRADIENTS = ("dq", "dk", "dv", "dg", "db", "dw", "dinitial_state")


def gradients(x, monkeypatch, products, cu=None, key_walk="f16x3"):
    """Every gradient of the Triton backend (normalised q and k) with the value and key kernels on
    ``products`` (the walks three-pass, so that only these kernels differ; the key kernel's walk
    launch on ``key_walk``), and both kernels' launches."""
    from gdn2.ops.gdn2.triton import backward
    value, key = RecordedLaunches(backward.chunk_bwd_value_kernel), RecordedLaunches(backward.chunk_bwd_key_kernel)
    with monkeypatch.context() as m:
        m.setattr(backward, "chunk_bwd_value_kernel", value)
        m.setattr(backward, "chunk_bwd_key_kernel", key)
        m.setattr(backward, "PAIR_PRODUCTS", "tf32x3")
        m.setattr(backward, "PARALLEL_PRODUCTS", products)
        m.setattr(backward, "KEY_WALK_PRODUCTS", key_walk)
        out = backend_outputs(x, "triton", cu_seqlens=cu, use_qk_l2norm=True)
    return {name: out[name][0] for name in GRADIENTS if name in out}, value, key


def assert_as_three_pass(fast, plain, limit=1e-5):
    """Head by head: a head's gradients at a millionth of another's would pass a whole-tensor error."""
    assert fast.keys() == plain.keys()
    for name in fast:
        axis = 1 if name == "dinitial_state" else 2   # [N, HV, K, V]; else [B, T, H or HV, ...]
        for head, (a, b) in enumerate(zip(fast[name].unbind(axis), plain[name].unbind(axis))):
            err = error(a, b)
            assert err.rel_rms < limit, (name, head, err)


CASES = {
    "grouped": dict(B=2, T=70, H=2, HV=4, K=32, V=64),
    "per-head gates": dict(B=1, T=100, H=2, K=32, V=32, gate="scalar", erase="scalar", write="scalar"),
    "no erase": dict(B=2, T=70, H=2, K=32, V=32, erase="zero", write="none"),
    "packed": dict(B=1, T=122, H=2, HV=4, K=32, V=32, N=4),
}


@pytest.mark.parametrize("case", list(CASES) + ["dO at 1e-7", "v at 1e4", "one group at 1e6"])
def test_parallel_kernels_on_float16_hilo_products(case, monkeypatch, request):
    """Grouped value heads, per-head gates, no erase, packed sequences (one of a single token),
    gradients far under float16's range ("dO at 1e-7": a mean loss over many tokens), values far
    over it ("v at 1e4"), and one group of value heads 2^20 above the other (scales are per group):
    as three-pass to float32's level, no chunk flagged."""
    shape = CASES.get(case, CASES["grouped"])
    cu = None
    if case == "packed":
        cu = torch.tensor([0] + list(itertools.accumulate([7, 64, 1, 50])), device=DEVICE)
    x = random_inputs(**shape, b_max=2.0, initial_state=True, seed=61, device=DEVICE)
    if case == "dO at 1e-7":
        request.getfixturevalue("loss_at_1e7")
    if case == "v at 1e4":
        x["v"] = x["v"] * 1e4
        x["initial_state"] = x["initial_state"] * 1e4
    if case == "one group at 1e6":   # key head 1's value heads: a scale shared with key head 0's
        x["v"][:, :, 2:] *= 1e6      # group would push its operands under float16's range
        x["initial_state"][:, 2:] *= 1e6
    plain, value, key = gradients(x, monkeypatch, "tf32x3", cu)
    value, key = value.seen, key.seen
    assert [guard for guard, _ in value + key] == [0] * (1 + len(key)), (value, key)
    hilo, value, key = gradients(x, monkeypatch, "f16x3", cu)
    value, key = value.seen, key.seen
    launches = len(key) // 2   # one a whole-chunk form, both passes
    assert value == [(1, 0), (2, 0)] and key == [(1, 0)] * launches + [(2, 0)] * launches, (value, key)
    assert_as_three_pass(hilo, plain)


@pytest.mark.parametrize("case", ["mixed forms", "every chunk walks"])
def test_key_walk_launch_at_three_pass(case, monkeypatch):
    """``KEY_WALK_PRODUCTS = "tf32x3"``: the split form's walk launch once, three-pass on the scaled
    scratch (GUARD 3, nothing flagged), after the whole form's two guarded launches; every gradient
    as the three-pass kernels give it. Gates in [-1, 0] span ~30 over a chunk, past the whole form's
    bound 16, so every chunk walks; "mixed forms": sequence 0's gates scaled to 1/20 (span ~1.5),
    so its chunks take the whole form and sequence 1's walk."""
    x = random_inputs(B=2, T=100, H=2, HV=4, K=32, V=32, b_max=2.0, initial_state=True, seed=65, device=DEVICE)
    if case == "mixed forms":
        x["g"][0] *= 0.05
    plain, _, _ = gradients(x, monkeypatch, "tf32x3")
    hilo, value, key = gradients(x, monkeypatch, "f16x3", key_walk="tf32x3")
    assert value.seen == [(1, 0), (2, 0)] and key.seen == [(1, 0), (2, 0), (3, 0)], (value.seen, key.seen)
    assert [o["PREC"] for o in key.options] == ["f16x3", "tf32x3", "tf32x3"], key.options
    assert_as_three_pass(hilo, plain)


def test_parallel_kernels_meet_the_criterion(monkeypatch):
    """On by setting, against float64: the flash-attention criterion for every gradient."""
    from gdn2.ops.gdn2.triton import backward
    monkeypatch.setattr(backward, "PARALLEL_PRODUCTS", "f16x3")
    x = random_inputs(B=2, T=70, H=2, HV=4, K=32, V=64, b_max=2.0, initial_state=True, seed=62, device=DEVICE)
    check_backend(x, "triton", use_qk_l2norm=True)


@pytest.mark.parametrize("side", ["gradient", "value"])
def test_parallel_kernels_range_guard(side, monkeypatch):
    """Sequence 0's dO scale (or z's) 2^20 past what the kernels would choose: its products overflow
    float16, both kernels flag its chunks (2 chunks x 2 key heads) and make them again three-pass,
    and every gradient stays as the three-pass kernels give it; sequence 1 is not made twice."""
    from gdn2.ops.gdn2.triton import state
    scale, calls = state.power_of_two_scale, []

    def one_too_large(*args):   # the backward asks for z's scale first, then dO's
        s = scale(*args)
        calls.append(len(calls))
        if calls[-1] % 2 == {"value": 0, "gradient": 1}[side]:
            s[0] *= 2.0 ** 20
        return s
    x = random_inputs(B=2, T=70, H=2, HV=4, K=32, V=32, b_max=2.0, initial_state=True, seed=63, device=DEVICE)
    plain, _, _ = gradients(x, monkeypatch, "tf32x3")
    monkeypatch.setattr(state, "power_of_two_scale", one_too_large)
    hilo, value, key = gradients(x, monkeypatch, "f16x3")
    launches = len(key.seen) // 2   # flags count after each launch: the last first-pass one has them all
    assert value.seen == [(1, 4), (2, 4)] and key.seen[launches - 1:] == [(1, 4)] + [(2, 4)] * launches, \
        (value.seen, key.seen)
    sequence_0 = torch.tensor([[1, 1], [1, 1], [0, 0], [0, 0]], dtype=torch.int32)   # [chunks, key heads]
    assert torch.equal(value.flags[-1], sequence_0) and torch.equal(key.flags[-1], sequence_0), \
        (value.flags[-1], key.flags[-1])
    assert_as_three_pass(hilo, plain)


def test_parallel_kernels_keep_three_pass_without_normalised_keys(monkeypatch):
    """Without L2-normalised q and k the gated operands are not bounded: the kernels stay three-pass."""
    from gdn2.ops.gdn2.triton import backward
    value = RecordedLaunches(backward.chunk_bwd_value_kernel)
    monkeypatch.setattr(backward, "chunk_bwd_value_kernel", value)
    monkeypatch.setattr(backward, "PARALLEL_PRODUCTS", "f16x3")
    x = random_inputs(B=1, T=40, H=2, K=32, V=32, seed=64, device=DEVICE)
    backend_outputs(x, "triton")
    assert value.seen == [(0, None)], value.seen


def precisions(launches):
    """The (products, solve) precisions of the intra kernel's launches (an empty or absent
    ``SOLVE_PREC``: the solve as the products)."""
    return {(o["PREC"], o.get("SOLVE_PREC") or o["PREC"]) for o in launches.options}


def intra_outputs(x, monkeypatch, on, **kwargs):
    from gdn2.ops.gdn2.triton import intra
    launches = RecordedLaunches(intra.chunk_intra_fwd_kernel)
    with monkeypatch.context() as m:
        m.setattr(intra, "chunk_intra_fwd_kernel", launches)
        m.setattr(intra, "FLOAT16_PRODUCTS", on)
        out = backend_outputs(x, "triton", **kwargs)
    return out, precisions(launches)


@pytest.mark.parametrize("case", ["channel", "fast decay", "per-head gates", "not normalised"])
def test_intra_on_float16_hilo_products(case, monkeypatch):
    """Three-pass (float32 inputs): the products on hi/lo float16, the solve three-pass TF32; every
    output and gradient as with three-pass products to float32's level. "fast decay": spans past
    the centred forms' bound, so the sub-block walk with its anchors and pairwise tiles; "not
    normalised": q and k unbounded, the products stay three-pass TF32."""
    gates = dict(gate="scalar", erase="scalar", write="scalar") if case == "per-head gates" else {}
    x = random_inputs(B=2, T=70, H=2, HV=4, K=32, V=32, b_max=2.0, g_min=-3.0 if case == "fast decay" else -0.2,
                      initial_state=True, seed=65, device=DEVICE, **gates)
    normalised = case != "not normalised"
    plain, seen = intra_outputs(x, monkeypatch, False, use_qk_l2norm=normalised)
    assert seen == {("tf32x3", "tf32x3")}, seen
    hilo, seen = intra_outputs(x, monkeypatch, True, use_qk_l2norm=normalised)
    assert seen == ({("f16x3", "tf32x3")} if normalised else {("tf32x3", "tf32x3")}), seen
    for name, (fast, _, _) in hilo.items():
        err = error(fast, plain[name][0])
        assert err.rel_rms < 1e-5, (name, err)


def test_intra_one_pass_keeps_tf32(monkeypatch):
    """One pass (the inference forward of bfloat16 inputs) is left to one-pass TF32 with the setting
    on: one float16 pass would need the centred forms' span bound 8 where TF32 takes 80. The same
    launches and the same o, bit for bit."""
    from gdn2.ops import gated_delta_rule2
    from gdn2.ops.gdn2.triton import intra
    x = random_inputs(B=2, T=70, H=2, K=32, V=32, b_max=2.0, g_min=-0.2, dtype=torch.bfloat16, seed=66,
                      device=DEVICE)
    outs = {}
    for on in (False, True):
        launches = RecordedLaunches(intra.chunk_intra_fwd_kernel)
        with monkeypatch.context() as m, torch.no_grad():
            m.setattr(intra, "chunk_intra_fwd_kernel", launches)
            m.setattr(intra, "FLOAT16_PRODUCTS", on)
            outs[on] = gated_delta_rule2(**x, backend="triton", use_qk_l2norm=True)[0]
        assert precisions(launches) == {("tf32", "tf32")}, precisions(launches)
    assert torch.equal(outs[True], outs[False])
