"""The Triton backend on a GPU against the float64 recurrence, with the flash-attention
criterion: its error is at most twice the PyTorch chunk backend's in the same dtype (plus a
1e-5 floor), for outputs, final state and every gradient. Run on the card's own Triton."""

import itertools

import pytest
import torch

from gdn2.ops import gated_delta_rule2
from gdn2.ops.gdn2.triton.chunk import whole_chunk_forms
from gdn2.testing import assert_no_worse, check_backend, random_inputs

pytestmark = pytest.mark.gpu
LONG = pytest.param("long", marks=pytest.mark.large_memory)   # 4100 tokens (tests/conftest.py)
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def check(x, forms="off", **kwargs):
    """``forms``: the whole-chunk setting of the intra and key kernels (``whole_chunk_forms``);
    "split" is checked here on the card before it becomes the default."""
    with whole_chunk_forms(forms):
        check_backend(x, "triton", **kwargs)


# the chunk tests run with the whole-chunk forms off and split; at their gates (spans ~31 over a
# chunk, above the three-pass bound of 16) split mostly checks the decision and the walk launch,
# test_triton_whole_chunk_forms the whole form itself
FORMS = pytest.mark.parametrize("forms", ["off", "split"])


# Kernels specialise on (H, HV, K, V, dtype, gate modes): most cases share H = 4, K = V = 128 so
# that one compilation serves them; dtypes other than bf16 where they change the arithmetic.
SHAPES = {
    "T1": dict(B=2, T=1, H=4, K=128, V=128),
    "T63": dict(B=2, T=63, H=4, K=128, V=128),
    "T64": dict(B=2, T=64, H=4, K=128, V=128),
    "T65": dict(B=2, T=65, H=4, K=128, V=128),
    "T1000": dict(B=1, T=1000, H=4, K=128, V=128),
    "K64V128": dict(B=2, T=300, H=4, K=64, V=128),
    "H16HV32": dict(B=1, T=200, H=16, HV=32, K=128, V=128),
    "K256": dict(B=1, T=130, H=4, K=256, V=256),
    # narrow heads: 32 and 16 run unpadded (MIN_HEAD_DIM = 16), 8 is zero-padded to 16
    "K32V32": dict(B=2, T=200, H=2, HV=4, K=32, V=32),
    "K16V32": dict(B=2, T=130, H=2, K=16, V=32),
    "K8V16": dict(B=1, T=100, H=2, K=8, V=16),
    # widths that are not powers of two: partly masked tiles in every kernel
    "K48V48": dict(B=1, T=150, H=2, K=48, V=48),
    "K96V64": dict(B=1, T=130, H=2, K=96, V=64),
}
CASES = [(s, torch.bfloat16, "off") for s in SHAPES]
CASES += [(s, d, "off") for s in ("T65", "K64V128") for d in (torch.float32, torch.float16)]
# the split whole-chunk forms on a subset: partial chunks, K != V, grouped heads, wide and odd widths
CASES += [(s, torch.bfloat16, "split") for s in ("T65", "T1000", "K64V128", "H16HV32", "K256", "K16V32", "K48V48")]
CASES += [("K64V128", d, "split") for d in (torch.float32, torch.float16)]


@pytest.mark.parametrize("shape,dtype,forms", CASES, ids=str)
def test_triton_matches_reference(shape, dtype, forms):
    x = random_inputs(**SHAPES[shape], dtype=dtype, device="cuda", b_max=2.0, initial_state=True, seed=1)
    check(x, forms, use_qk_l2norm=True)


@pytest.mark.large_memory
@pytest.mark.parametrize("dtype", [torch.bfloat16], ids=str)
def test_triton_long(dtype):
    x = random_inputs(B=1, T=4100, H=4, K=128, V=128, dtype=dtype, device="cuda", initial_state=True, seed=2)
    check(x, use_qk_l2norm=True)


@pytest.mark.parametrize("gates", [("scalar", "scalar", "scalar"), ("none", "channel", "none"),
                                   ("channel", "zero", "none"), ("scalar", "none", "channel")],
                         ids=lambda x: "-".join(x))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@FORMS
def test_triton_gate_variants(gates, dtype, forms):
    decay, erase, write = gates
    x = random_inputs(B=2, T=150, H=4, HV=8, K=128, V=128, gate=decay, erase=erase, write=write,
                      dtype=dtype, device="cuda", initial_state=True, seed=3)
    check(x, forms)


PACKED = [100, 1, 64, 300, 37]   # five sequences of unequal length


def case_inputs(packed, dtype, seed, B=2, T=300, dim=128, **kwargs):
    """Inputs and offsets: B sequences of T tokens, or the five ``PACKED`` ones; H = 4, HV = 8,
    K = V = dim, initial states; ``kwargs`` to ``random_inputs`` (gates, b_max, g_min)."""
    x = random_inputs(B=1 if packed else B, T=sum(PACKED) if packed else T, H=4, HV=8, K=dim, V=dim, dtype=dtype,
                      device="cuda", initial_state=True, N=len(PACKED) if packed else None, seed=seed, **kwargs)
    cu = torch.tensor([0, *itertools.accumulate(PACKED)], device="cuda") if packed else None
    return x, cu


def named_case(case, dtype, seed, **kwargs):
    """``case_inputs`` of a named case of the settings' tests: "packed", "long" (4100 tokens),
    "K48V48", "scalar" (per-head gates), "no erase", "narrow" (gates narrow enough that every chunk
    takes the whole-chunk form), "extreme" (closed gates on 30% of the channels, b at 2 on half),
    any other name two sequences of 300 tokens; b up to 2."""
    long = case == "long"
    gates = dict(gate="scalar", erase="scalar", write="scalar") if case == "scalar" else {}
    if case == "no erase":
        gates = dict(erase="zero")
    if case == "narrow":
        gates["g_min"] = -0.05
    x, cu = case_inputs(case == "packed", dtype, seed=seed, B=1 if long else 2, T=4100 if long else 300,
                        dim=48 if case == "K48V48" else 128, b_max=2.0, **gates, **kwargs)
    if case == "extreme":
        gen = torch.Generator(device="cuda").manual_seed(seed + 1)
        x["g"] = torch.where(torch.rand(x["g"].shape, generator=gen, device="cuda") < 0.3, -1e4, x["g"])
        x["b"] = torch.where(torch.rand(x["b"].shape, generator=gen, device="cuda") < 0.5, 2.0, x["b"].float()).to(dtype)
    return x, cu


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@FORMS
def test_triton_packed(dtype, forms):
    x, cu = case_inputs(True, dtype, seed=4)
    check(x, forms, cu_seqlens=cu, use_qk_l2norm=True)


@pytest.mark.parametrize("normalized", [False, True], ids=["raw", "l2norm"])  # l2norm: the float16 settings apply
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@FORMS
def test_triton_extreme_gates(dtype, forms, normalized):
    x = random_inputs(B=1, T=300, H=4, K=128, V=128, dtype=dtype, device="cuda", b_max=2.0,
                      initial_state=True, seed=5)
    gen = torch.Generator(device="cuda").manual_seed(6)
    hard = torch.rand(x["g"].shape, generator=gen, device="cuda") < 0.3
    x["g"] = torch.where(hard, torch.full_like(x["g"], -1e4), x["g"])
    x["b"] = torch.where(torch.rand(x["b"].shape, generator=gen, device="cuda") < 0.5, 2.0, x["b"].float()).to(dtype)
    x["w"] = torch.where(torch.rand(x["w"].shape, generator=gen, device="cuda") < 0.3, 0.0, x["w"].float()).to(dtype)
    check(x, forms, use_qk_l2norm=normalized)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@FORMS
def test_triton_moderate_gates(dtype, forms):
    # sub-block decay spans ~45: the one-pass forward forms the diagonal blocks from centred
    # operands (diag_span 80), the three-pass stages take the pairwise tiles (16)
    x = random_inputs(B=1, T=300, H=4, K=128, V=128, dtype=dtype, device="cuda", b_max=2.0, g_min=-6.0,
                      initial_state=True, seed=9)
    check(x, forms, use_qk_l2norm=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@FORMS
def test_triton_closed_gates_on_sub_block_first_rows(dtype, forms):
    # a -1e4 / -inf gate on the first row of a sub-block decays none of the block's own pairs
    x = random_inputs(B=1, T=200, H=4, K=128, V=128, dtype=dtype, device="cuda", b_max=2.0, g_min=-0.5,
                      initial_state=True, seed=10)
    x["g"][0, 16::48, :, 7] = -1e4
    x["g"][0, 64::64, :, 30] = float("-inf")
    check(x, forms, use_qk_l2norm=True)


@pytest.mark.parametrize("case", ["narrow", "mixed", "packed", "scalar", "wide walk"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_triton_whole_chunk_forms(dtype, case, monkeypatch):
    """The split whole-chunk forms where they do the work: log-decays in [-0.2, 0] (spans up to
    ~13 over a chunk, under the three-pass bound of 16: every chunk and key tile whole); "mixed":
    the upper half of the key channels in [-1, 0], so the chunk (intra) and those key tiles walk
    while the lower tiles take the whole form, both launches writing one gradient; "wide walk":
    the walk launch on 64 columns (attempt 28) and the last 32 channels wide, so it remakes the
    32-column tile beside them that the whole form made."""
    from gdn2.ops.gdn2.triton import backward
    if case == "wide walk":
        monkeypatch.setitem(backward.KEY_TILES, "split", (32, 64))
    x, cu = case_inputs(case == "packed", dtype, seed=11, gate="scalar" if case == "scalar" else "channel",
                        b_max=2.0, g_min=-0.2)
    if case == "mixed":
        x["g"][..., 64:] = x["g"][..., 64:] * 5.0
    if case == "wide walk":
        x["g"][..., 96:] = x["g"][..., 96:] * 5.0
    check(x, "split", cu_seqlens=cu, use_qk_l2norm=True)


@pytest.mark.parametrize("columns", [32, 16, 64])
@pytest.mark.parametrize("stages", [1, 2])
@pytest.mark.parametrize("case", ["uniform", "packed"])
def test_triton_float16_walk_two_stages(case, stages, columns, monkeypatch):
    """The one-pass forward's state walk (float16 operands: bfloat16 inputs, normalised q and k,
    no final state; ``o (forward only)`` of the check) at one and two pipeline stages
    (``state.F16_WALK_STAGES``) and on 32, 16 and 64 value columns a program (``state.F16_WALK_COLUMNS``):
    each tiling ``state.f16_walk_tiling`` picks by shape, here at every shape. At two stages the products are float16
    (``F16_PRODUCTS``), at one TF32: float16 products at one stage gave finite garbage under
    Triton 3.6 (this test, 2026-12-06 19:14), so the walk no longer takes them there."""
    from gdn2.ops.gdn2.triton import state
    monkeypatch.setattr(state, "F16_WALK_STAGES", stages)
    monkeypatch.setattr(state, "F16_WALK_COLUMNS", columns)
    x, cu = case_inputs(case == "packed", torch.bfloat16, seed=13, b_max=2.0)
    check(x, "split", cu_seqlens=cu, use_qk_l2norm=True)


def check_training_forward(x, **kwargs):
    """o of a forward that will be differentiated, without the final state (as a layer trains):
    the walk of the one-pass forward, float16 products included, against float64 with the
    criterion (``check_backend``'s gradients run with the final state, so with three passes)."""
    x64 = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in x.items()}
    with torch.no_grad():
        ref, _ = gated_delta_rule2(**x64, backend="recurrent", **kwargs)
        base, _ = gated_delta_rule2(**x, backend="chunk", **kwargs)
    xg = {k: (v.detach().clone().requires_grad_(True) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
          for k, v in x.items()}
    o, S = gated_delta_rule2(**xg, backend="triton", **kwargs)
    assert S is None and o.requires_grad
    assert_no_worse("o (training forward)", o.detach(), base, ref)


@pytest.mark.parametrize("erase", ["channel", "zero"])
@pytest.mark.parametrize("products", ["float16", "tf32"])
def test_triton_walk_products(products, erase, monkeypatch):
    """The one-pass walk's products (``state.F16_PRODUCTS``, attempt 33: float16, on by default, or
    one-pass TF32) with one sequence's v at 1, 1e-6 and 3e5 (under and past float16's range: the
    walk's per-sequence power-of-two scale brings both back); every output and gradient, and the
    training forward's o, within the criterion."""
    from gdn2.ops.gdn2.triton import state
    monkeypatch.setattr(state, "F16_PRODUCTS", products == "float16")
    monkeypatch.setattr(state, "F16_WALK_STAGES", 2)   # where the walk takes float16 products
    for scale in (1.0, 1e-6, 3e5):
        x, cu = case_inputs(False, torch.bfloat16, seed=17, b_max=2.0, erase=erase)
        x["v"][0] = (x["v"][0].float() * scale).to(torch.bfloat16)
        check(x, "split", use_qk_l2norm=True)
        with whole_chunk_forms("split"):
            check_training_forward(x, use_qk_l2norm=True)


@pytest.mark.parametrize("erase", ["channel", "zero"])
def test_triton_walk_range_guard(erase, walk_scale_past_range):
    """The range guard on the card: sequence 0 scaled 2^20 past what the walk would choose, so its
    float16 products overflow; its programs walk again with TF32 products and every output stays
    within the criterion."""
    x, cu = case_inputs(False, torch.bfloat16, seed=18, b_max=2.0, erase=erase)
    check(x, "split", use_qk_l2norm=True)
    with whole_chunk_forms("split"):
        check_training_forward(x, use_qk_l2norm=True)


@pytest.mark.parametrize("case", ["packed", LONG, "K48V48", "scalar", "32 columns"])
def test_triton_float16_products_shapes(case, monkeypatch):
    """The one-pass walk's float16 products (``state.F16_PRODUCTS``, attempt 33, with its range
    guard) where the tiles and the walk differ: packed sequences, 4100 tokens, partly masked
    48-wide tiles, per-head gates; always at two stages (float16 products), and where
    ``state.f16_walk_tiling`` would pick 16 value columns a program on an H100, the K48V48 case and
    one more take 32 (the rule's pick at 2x8K); every output and gradient within
    the criterion (``o (forward only)`` is the one-pass forward), and the training forward's o
    (the same walk: ``check``'s gradients run with the final state, three-pass)."""
    from gdn2.ops.gdn2.triton import state
    monkeypatch.setattr(state, "F16_WALK_STAGES", 2)   # the packed case's 160 programs would get one stage
    if case in ("32 columns", "K48V48"):   # 16 columns would leave no 48-wide tile partly masked
        monkeypatch.setattr(state, "F16_WALK_COLUMNS", 32)
    x, cu = named_case(case, torch.bfloat16, seed=14)
    check(x, "split", cu_seqlens=cu, use_qk_l2norm=True)
    with whole_chunk_forms("split"):
        check_training_forward(x, cu_seqlens=cu, use_qk_l2norm=True)


@pytest.mark.parametrize("case", ["uniform", "packed", LONG, "K48V48", "no erase", "scalar", "loss at 1e-7",
                                  "guard"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("setting", ["pair", "parallel", "intra", "key walk"])
def test_triton_float16_hilo(setting, dtype, case, monkeypatch, request):
    """Float16 products, forced here: two-term (hi/lo) over per-sequence power-of-two scales with
    their range guard in ``backward.PAIR_PRODUCTS = "f16x3"`` (the backward's two walks; the
    library's since 2026-12-07) and ``backward.PARALLEL_PRODUCTS = "f16x3"`` (the value and key
    kernels; ``KEY_WALK_PRODUCTS = "tf32x3"``: the key kernel's walk launch three-pass on their scaled
    scratch); unscaled in ``intra.FLOAT16_PRODUCTS`` (the intra kernel's T and Aqk: hi/lo where
    three-pass; the one-pass inference forward keeps TF32). Every output and gradient within the
    criterion. "loss at 1e-7": dO (and the final-state cotangent) far under float16's range,
    the TF32 products the baseline; "guard": sequence 0's scales forced past the range, so its
    programs are made again three-pass."""
    from gdn2.ops.gdn2.triton import backward, intra
    from gdn2.testing import backend_outputs
    module, attr, off, on = {"pair": (backward, "PAIR_PRODUCTS", "tf32x3", "f16x3"),
                             "parallel": (backward, "PARALLEL_PRODUCTS", "tf32x3", "f16x3"),
                             "key walk": (backward, "KEY_WALK_PRODUCTS", "f16x3", "tf32x3"),
                             "intra": (intra, "FLOAT16_PRODUCTS", False, True)}[setting]
    if case == "guard":
        request.getfixturevalue("walk_scale_past_range")
    x, cu = named_case(case, dtype, seed=19)
    if case == "loss at 1e-7":
        request.getfixturevalue("loss_at_1e7")
        with whole_chunk_forms("split"):
            monkeypatch.setattr(module, attr, off)
            plain = backend_outputs(x, "triton", cu_seqlens=cu, use_qk_l2norm=True)
            monkeypatch.setattr(module, attr, on)
            hilo = backend_outputs(x, "triton", cu_seqlens=cu, use_qk_l2norm=True)
        # against float64 with the TF32 run as the baseline (the criterion): a comparison of the two
        # runs alone failed on bfloat16 rounding (o 2.03e-3 against 2e-3, H100, 2026-12-07), two
        # roundings of nearly equal values; the fixture scales only the Triton backward's
        # cotangents, so the float64 gradients are scaled to match
        for name, (fast, _, ref) in hilo.items():
            assert_no_worse(name, fast, plain[name][0], ref * 1e-7 if name.startswith("d") else ref)
        return
    monkeypatch.setattr(module, attr, on)
    check(x, "split", cu_seqlens=cu, use_qk_l2norm=True)


@pytest.mark.parametrize("case", ["uniform", "packed", LONG, "K48V48", "no erase", "scalar", "extreme", "narrow"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_triton_halving_solve(case, dtype, monkeypatch):
    """``intra.SOLVE_FORM = "halving"`` forced on every solve (the default takes it for one-pass solves): every output and
    gradient, the one-pass forward's o among them, within the criterion; "extreme": closed gates
    and b at 2; "narrow": gates narrow enough that every chunk takes the whole-chunk form."""
    from gdn2.ops.gdn2.triton import intra
    monkeypatch.setattr(intra, "SOLVE_FORM", "halving")
    x, cu = named_case(case, dtype, seed=41)
    check(x, "split", cu_seqlens=cu, use_qk_l2norm=True)


@pytest.mark.parametrize("case", ["uniform", "packed", LONG, "K48V48", "no erase", "scalar", "extreme"])
def test_triton_aqk_float16(case, monkeypatch):
    """``chunk.AQK_FLOAT16`` forced (on by default since 2026-12-08): Aqk stored as float16 for the
    one-pass walk (bfloat16 inputs, unit q and k); the one-pass forward's o and everything else
    within the criterion."""
    from gdn2.ops.gdn2.triton import chunk
    monkeypatch.setattr(chunk, "AQK_FLOAT16", True)
    x, cu = named_case(case, torch.bfloat16, seed=45)
    check(x, "split", cu_seqlens=cu, use_qk_l2norm=True)


def test_auto_keeps_float64_on_the_chunk_backend():
    """float64 CUDA inputs under backend='auto' get the chunk backend's float64 result, not the
    float32 kernels' (a gradient check on the card stays exact)."""
    x = random_inputs(B=1, T=100, H=2, K=32, V=32, dtype=torch.float64, device="cuda", initial_state=True, seed=43)
    auto = gated_delta_rule2(**x, output_final_state=True)
    chunk = gated_delta_rule2(**x, output_final_state=True, backend="chunk")
    assert all(torch.equal(a, c) for a, c in zip(auto, chunk))


@pytest.mark.parametrize("HV", [16, 32], ids=lambda n: f"HV{n}")
def test_decode_batch(HV):
    x = random_inputs(B=64, T=1, H=16, HV=HV, K=128, V=128, dtype=torch.bfloat16, device="cuda", initial_state=True,
                      seed=7)
    with torch.no_grad():
        o_ref, S_ref = gated_delta_rule2(**{k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in x.items()},
                                         output_final_state=True, backend="recurrent")
        o_pt, S_pt = gated_delta_rule2(**x, output_final_state=True, backend="chunk")
        o, S = gated_delta_rule2(**x, output_final_state=True, backend="triton")
    assert_no_worse("o", o, o_pt, o_ref)
    assert_no_worse("final_state", S, S_pt, S_ref)


def test_torch_compile_fullgraph():
    x = random_inputs(B=2, T=100, H=4, K=128, V=128, dtype=torch.bfloat16, device="cuda", seed=8)

    def f(q, k, v, g, b, w):
        o, S = gated_delta_rule2(q, k, v, g, b, w, output_final_state=True, backend="triton")
        return o.float().square().sum() + S.square().sum()

    args = [x[n].detach().clone().requires_grad_(True) for n in ("q", "k", "v", "g", "b", "w")]
    loss = torch.compile(f, fullgraph=True)(*args)
    grads = torch.autograd.grad(loss, args)
    args2 = [a.detach().clone().requires_grad_(True) for a in args]
    loss2 = f(*args2)
    grads2 = torch.autograd.grad(loss2, args2)
    torch.testing.assert_close(loss, loss2)
    for a, b in zip(grads, grads2):
        torch.testing.assert_close(a, b)
