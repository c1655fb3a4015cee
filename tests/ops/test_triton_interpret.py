"""The Triton kernels against the float64 recurrence on tiny float32 shapes. Without a GPU they
run under TRITON_INTERPRET=1 (set in conftest), so a broken kernel cannot land."""

import itertools

import pytest
import torch

from gdn2.ops import gated_delta_rule2
from gdn2.testing import check_backend, random_inputs

triton = pytest.importorskip("triton")
pytestmark = pytest.mark.interpret
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _kernel_inputs(x):
    """``x`` as the custom op hands it to the kernels: flattened, b = 0.0 without erase, with the
    offsets, the chunk table and the gate modes (g, b, w)."""
    from gdn2.ops.gdn2.triton.chunk import _chunks, _prepare
    from gdn2.ops.gdn2.triton.common import gate_mode
    qf, kf, vf, gf, bf, wf, h0, cu, uT, b_zero = _prepare(x["q"], x["k"], x["v"], x["g"], x["b"], x["w"],
                                                           x.get("initial_state"), None)
    bf = 0.0 if b_zero else bf
    return qf, kf, vf, gf, bf, wf, h0, cu, _chunks(cu, uT), tuple(gate_mode(t, 3) for t in (gf, bf, wf))


def check(x, **kwargs):
    check_backend(x, "triton", **kwargs)


@pytest.mark.parametrize("gates", [
    ("channel", "channel", "channel"), ("scalar", "scalar", "scalar"), ("none", "channel", "none"),
    ("channel", "zero", "none"), ("channel", "scalar", "channel"), ("scalar", "none", "scalar"),
], ids=lambda x: "-".join(x))
def test_triton_gates(gates):
    decay, erase, write = gates
    x = random_inputs(B=2, T=70, H=2, HV=4, K=32, V=16, gate=decay, erase=erase, write=write,
                      b_max=2.0, initial_state=True, seed=1, device=DEVICE)
    check(x)


@pytest.mark.parametrize("T", [1, 64, 128])
def test_triton_lengths(T):
    x = random_inputs(B=1, T=T, H=1, HV=2, K=64, V=32, b_max=2.0, initial_state=True, seed=T, device=DEVICE)
    check(x)


def test_triton_several_value_tiles():
    # V = 64 is two value tiles per state: the backward's paired launch puts the reverse walk of
    # tile i at grid index NV + i
    x = random_inputs(B=2, T=70, H=1, HV=2, K=32, V=64, b_max=2.0, initial_state=True, seed=11, device=DEVICE)
    check(x)


def _walk_inputs(packed, seed, dtype=torch.float32, initial_state=True, **kwargs):
    """Inputs and offsets for the walk settings' tests: two sequences of 70 tokens, or four packed
    ones of unequal length (7, 64, 1, 50); H = 2, HV = 4, K = 32, V = 64 (two value tiles)."""
    lengths = [7, 64, 1, 50]
    cu = torch.tensor([0] + list(itertools.accumulate(lengths)), device=DEVICE) if packed else None
    x = random_inputs(B=1 if packed else 2, T=sum(lengths) if packed else 70, H=2, HV=4, K=32, V=64, b_max=2.0,
                      initial_state=initial_state, N=len(lengths) if packed else None, seed=seed, device=DEVICE,
                      dtype=dtype, **kwargs)
    return x, cu


@pytest.mark.parametrize("columns", [16, 64])
@pytest.mark.parametrize("packed", [False, True], ids=["grouped", "packed"])
def test_float16_walk_on_16_or_64_columns(packed, columns, monkeypatch):
    """``state.F16_WALK_COLUMNS = 16`` (what ``f16_walk_tiling`` picks on a card for few programs)
    or 64 (half the operand traffic where programs are many; a setting walk_settings.py times): the
    one-pass walk (bfloat16 inputs, normalised q and k, no final state) on twice or half the programs
    gives the same o as on 32 columns (four or one value tiles of a 64-wide head instead of two;
    grouped value heads; packed sequences of unequal length). Both set here: on a card the rule
    would give these small shapes 16 columns in both calls."""
    from gdn2.ops.gdn2.triton import state
    from gdn2.testing import assert_close
    x, cu = _walk_inputs(packed, 33, torch.bfloat16, initial_state=False)
    with torch.no_grad():
        monkeypatch.setattr(state, "F16_WALK_COLUMNS", 32)
        wide = gated_delta_rule2(**x, backend="triton", cu_seqlens=cu, use_qk_l2norm=True)
        monkeypatch.setattr(state, "F16_WALK_COLUMNS", columns)
        narrow = gated_delta_rule2(**x, backend="triton", cu_seqlens=cu, use_qk_l2norm=True)
    o_wide, o_narrow = (o[0] if isinstance(o, tuple) else o for o in (wide, narrow))
    assert_close("o", o_narrow.float(), o_wide.float(), rtol=1e-2)


def test_triton_packed_l2norm():
    lengths = [7, 64, 1, 50]
    cu = torch.tensor([0] + list(itertools.accumulate(lengths)), device=DEVICE)
    x = random_inputs(B=1, T=int(cu[-1]), H=2, HV=2, K=16, V=32, initial_state=True, N=len(lengths),
                      seed=2, device=DEVICE)
    check(x, cu_seqlens=cu, use_qk_l2norm=True)


@pytest.mark.parametrize("normalized", [False, True], ids=["raw", "l2norm"])
def test_triton_extreme_gates(normalized):
    # with L2-normalised q and k the float16 settings apply (the walks', the value and key kernels'
    # hi/lo products, the intra kernel's): closed gates put decay factors of e^-1e4 beside them
    x = random_inputs(B=1, T=80, H=1, K=16, V=16, b_max=2.0, initial_state=True, seed=3, device=DEVICE)
    gen = torch.Generator().manual_seed(4)
    hard = torch.rand(x["g"].shape, generator=gen) < 0.3
    x["g"] = torch.where(hard.to(DEVICE), torch.full_like(x["g"], -1e4), x["g"])
    x["w"] = torch.where(torch.rand(x["w"].shape, generator=gen).to(DEVICE) < 0.3, 0.0, x["w"])
    check(x, use_qk_l2norm=normalized)


def test_triton_moderate_gates_normalized():
    """Sub-block decay spans ~20-45 with the float16 settings: chunks past the float16 forms'
    bounds (``diag_span``) walk, the rest take the centred products."""
    x = random_inputs(B=1, T=128, H=2, K=32, V=16, b_max=2.0, g_min=-6.0, initial_state=True, seed=9,
                      device=DEVICE)
    check(x, use_qk_l2norm=True)


def test_triton_mixed_decay_spans():
    """Diagonal sub-blocks on both sides of ``diag_span`` in one launch: products of centred
    operands where the decay's span is small, pairwise-decay tiles where it is not."""
    from gdn2.ops.gdn2.triton.common import diag_span
    x = random_inputs(B=1, T=128, H=2, K=32, V=16, b_max=2.0, initial_state=True, seed=6, device=DEVICE)
    g = x["g"].clone()
    g[:, 16:32] *= 0.2                      # mild blocks take the product ...
    g[:, 48:64] *= 0.2
    g[:, 48:64, 0, 5] = -3.0                # ... unless one channel forgets fast
    g[:, 80:96] *= 4.0                      # moderate: span ~ 30
    x["g"] = g
    spans = g.view(1, 8, 16, 2, 32)[:, :, 1:].sum(2).neg().amax(-1)  # per (sub-block, head, tile)
    bound = diag_span("tf32x3")
    assert (spans <= bound).any() and (spans > bound).any()
    check(x, use_qk_l2norm=True)


@pytest.mark.parametrize("gates", [("channel", "channel"), ("scalar", "scalar"), ("none", "channel"),
                                   ("channel", "zero")], ids=lambda x: "-".join(x))
def test_gated_operands_split_equals_fused(gates):
    """The gated operands made by their own launch (several key tiles, a partial chunk, packed
    sequences) equal those the intra kernel makes from the A it holds."""
    from gdn2.ops.gdn2.triton.chunk import gate_mode
    from gdn2.ops.gdn2.triton.common import make_chunks
    from gdn2.ops.gdn2.triton.intra import chunk_intra_fwd
    from gdn2.testing import assert_close
    decay, erase = gates
    x = random_inputs(B=1, T=100, H=2, K=64, V=16, gate=decay, erase=erase, b_max=2.0, seed=9, device=DEVICE)
    flat = lambda t: t[0].contiguous() if isinstance(t, torch.Tensor) else t  # noqa: E731
    q, k, g, b = (flat(x[n]) for n in ("q", "k", "g", "b"))
    chunks = make_chunks([0, 37, 100], 64, DEVICE)
    runs = [chunk_intra_fwd(q, k, g, b, 64 ** -0.5, chunks, gate_mode(g, 3), gate_mode(b, 3), prec="ieee",
                            fuse_gated=fused) for fused in (True, False)]
    (A_f, Aqk_f, gated_f), (A_s, Aqk_s, gated_s) = runs
    if A_f is not None:
        assert_close("A", A_s, A_f, rtol=1e-6)
    assert_close("Aqk", Aqk_s, Aqk_f, rtol=1e-6)
    for name, split, fused in zip(("qg", "kt", "y", "dec"), gated_s, gated_f):
        if fused is not None:
            assert_close(name, split, fused, rtol=1e-6)


def test_diagonal_block_paths_agree():
    """The intra stage's two forms of a diagonal sub-block (centred product, pairwise tile) give
    the same A and Aqk; the extreme block falls back to the tile in both runs."""
    from gdn2.ops.gdn2.triton.common import make_chunks
    from gdn2.ops.gdn2.triton.intra import chunk_intra_fwd_kernel
    from gdn2.testing import assert_close
    x = random_inputs(B=1, T=64, H=1, K=32, V=16, b_max=2.0, g_min=-3.0, seed=7, device=DEVICE)
    x["g"][0, 20:24] = -1e4
    q, k, g, b = (x[n][0].float().contiguous() for n in ("q", "k", "g", "b"))
    chunks = make_chunks([0, 64], 64, DEVICE)
    outs = []
    for span in (-1.0, 80.0):
        bufs = [torch.zeros(64, 1, 64, device=DEVICE) for _ in range(2)] + [torch.zeros(64, 1, 32, device=DEVICE)
                                                                          for _ in range(3)]
        chunk_intra_fwd_kernel[(1, 1)](q, k, g, b, *bufs, torch.zeros(1, 1, 32, device=DEVICE), chunks.start,
                                       chunks.end, 32 ** -0.5, H=1, K=32, BT=64, BK=32, SUB=16, G_MODE=2, B_MODE=2,
                                       PREC="ieee", DIAG_SPAN=span)
        outs.append(bufs)
    for name, tile, centred in zip(("A", "Aqk", "qg", "kt", "y"), *outs):
        assert_close(name, centred, tile, rtol=1e-5)


def _intra_forms(q, k, g, b, offsets, mode, **consts):
    """The intra kernel (K = 32, one head, channel decay) run by each launch of a whole-chunk mode
    (``WHOLE_FORMS``) into NaN-filled A, Aqk, Q_γ, K_tail, Y: a chunk no launch makes shows as NaN."""
    from gdn2.ops.gdn2.triton.common import WHOLE_FORMS, make_chunks
    from gdn2.ops.gdn2.triton.intra import chunk_intra_fwd_kernel
    T, chunks = q.shape[0], make_chunks(offsets, 64, DEVICE)
    bufs = [torch.full((T, 1, 64), float("nan"), device=DEVICE) for _ in range(2)] + [
        torch.full((T, 1, 32), float("nan"), device=DEVICE) for _ in range(3)]
    for form in WHOLE_FORMS[mode]:
        chunk_intra_fwd_kernel[(chunks.count, 1)](q, k, g, b, *bufs, torch.zeros(chunks.count, 1, 32, device=DEVICE),
                                                  chunks.start, chunks.end, 32 ** -0.5, H=1, K=32, BT=64, BK=32,
                                                  SUB=16, G_MODE=2, PREC="ieee", FORM=form, **consts)
    return bufs


@pytest.mark.parametrize("g_min,first_row", [(-0.1, 0.0), (-0.1, -1e4), (-3.0, 0.0)], ids=str)
@pytest.mark.parametrize("erase", ["channel", "zero"])
def test_whole_chunk_intra_path_agrees(g_min, first_row, erase):
    """The intra kernel's whole-chunk form (``FORM``), in one launch and split over two, against
    the sub-block walk: the same A, Aqk and gated operands where the chunk's span allows it (narrow
    decays, and a closed gate on the chunk's first row, which decays none of its pairs), and the
    walk itself (bit for bit) where it does not (g down to -3: spans of ~100 over a chunk). The
    two launches of the split form must together make exactly what the one launch makes."""
    from gdn2.testing import assert_close
    x = random_inputs(B=1, T=100, H=1, K=32, V=16, b_max=2.0, g_min=g_min, erase=erase, seed=21, device=DEVICE)
    x["g"][0, 0] = first_row
    q, k, g = (x[n][0].float().contiguous() for n in ("q", "k", "g"))
    b = x["b"][0].float().contiguous() if isinstance(x["b"], torch.Tensor) else k
    outs = {}
    for mode in ("off", "inline", "split"):
        bufs = _intra_forms(q, k, g, b, [0, 64, 100], mode, B_MODE=2 if erase == "channel" else 3, DIAG_SPAN=16.0)
        outs[mode] = bufs if erase == "channel" else bufs[1:2] + bufs[2:4]
    names = ("A", "Aqk", "qg", "kt", "y") if erase == "channel" else ("Aqk", "qg", "kt")
    for name, loop, whole, split in zip(names, outs["off"], outs["inline"], outs["split"]):
        assert torch.equal(split, whole), name
        if g_min == -3.0:
            assert torch.equal(loop, whole), name
        else:
            assert_close(name, whole, loop, rtol=1e-5)


def test_split_whole_form_makes_a_chunk_at_the_bound():
    """The split form's two launches compute a chunk's decay span in separate compilations; the
    second (the walk) also takes spans just under the bound, so a chunk that both might claim is
    made, the walk's result last, and none is left unmade (the NaN-filled outputs would show it)."""
    x = random_inputs(B=1, T=64, H=1, K=32, V=16, b_max=2.0, g_min=-0.1, seed=24, device=DEVICE)
    q, k, g, b = (x[n][0].float().contiguous() for n in ("q", "k", "g", "b"))
    span = (-g[1:, 0].double().sum(0)).max().item()          # rows after the first, as the kernel sums them
    outs = {mode: _intra_forms(q, k, g, b, [0, 64], mode, B_MODE=2, DIAG_SPAN=span / (1 - 5e-5))
            for mode in ("off", "split")}
    for name, walk, split in zip(("A", "Aqk", "qg", "kt", "y"), outs["off"], outs["split"]):
        assert torch.equal(walk, split), name


@pytest.mark.parametrize("value", [-1e4, float("-inf")], ids=str)
@pytest.mark.parametrize("gate", ["channel", "scalar"])
def test_hard_gate_on_a_sub_block_first_row(value, gate):
    """A closed gate on the first row of a sub-block (and of a partial last one) decays none of
    the block's own pairs: the centred diagonal products must not see it."""
    x = random_inputs(B=1, T=40, H=1, K=16, V=16, b_max=2.0, g_min=-0.5, initial_state=True, seed=11, gate=gate,
                      device=DEVICE)
    g = x["g"].clone()
    if gate == "channel":
        g[0, 16, 0, 3] = value
        g[0, 32, 0, 5] = value
    else:
        g[0, 16, 0] = value
        g[0, 32, 0] = value
    x["g"] = g
    check(x)


def test_head_padding_is_exact():
    """Small head dims are zero-padded on the GPU; padding must not change any result."""
    from gdn2.ops.gdn2.triton.chunk import MIN_HEAD_DIM, _pad_heads
    from gdn2.testing import assert_close
    x = random_inputs(B=1, T=40, H=2, HV=4, K=8, V=4, b_max=2.0, initial_state=True, seed=8, dtype=torch.float64)
    names = ("q", "k", "v", "g", "b", "w", "initial_state")
    leaves = {n: x[n].clone().requires_grad_() for n in names}
    padded = dict(zip(names, _pad_heads(*(leaves[n] for n in names))))
    assert padded["q"].shape[-1] == MIN_HEAD_DIM and padded["v"].shape[-1] == MIN_HEAD_DIM
    o, S = gated_delta_rule2(**padded, scale=8 ** -0.5, output_final_state=True, backend="chunk")
    o_ref, S_ref = gated_delta_rule2(**x, scale=8 ** -0.5, output_final_state=True, backend="chunk")
    assert_close("o", o[..., :4], o_ref, rtol=1e-12)
    assert_close("S", S[..., :8, :4], S_ref, rtol=1e-12)
    assert o[..., 4:].abs().max() == 0
    do, dS = torch.randn_like(o_ref), torch.randn_like(S_ref)
    grads = torch.autograd.grad((o[..., :4] * do).sum() + (S[..., :8, :4] * dS).sum(),
                                [leaves[n] for n in names])
    ref = {n: x[n].clone().requires_grad_() for n in names}
    o_r, S_r = gated_delta_rule2(**ref, scale=8 ** -0.5, output_final_state=True, backend="chunk")
    ref_grads = torch.autograd.grad((o_r * do).sum() + (S_r * dS).sum(), [ref[n] for n in names])
    for n, got, want in zip(names, grads, ref_grads):
        assert_close(f"d{n}", got, want, rtol=1e-12)


@pytest.mark.parametrize("gate", ["scalar", "channel"])
def test_key_kernel_column_blocks_agree(gate):
    """The key kernel splits key columns over programs; per-head gates then add one partial sum
    per column block. Every split must give the same gradients as one block."""
    from gdn2.ops.gdn2.triton.backward import chunk_bwd
    from gdn2.testing import assert_close
    x = random_inputs(B=1, T=70, H=1, HV=2, K=64, V=16, gate=gate, erase=gate, write=gate, b_max=2.0,
                      initial_state=True, seed=9, device=DEVICE)
    qf, kf, vf, gf, bf, wf, h0, cu, chunks, _ = _kernel_inputs(x)
    args = (qf, kf, vf, gf, bf, wf, h0, 64 ** -0.5, cu, chunks, torch.randn_like(vf), None)
    whole, split = chunk_bwd(*args, key_block=64), chunk_bwd(*args, key_block=16)
    for name, a, b in zip(("dq", "dk", "dv", "dg", "db", "dw", "dh0"), split, whole):
        assert_close(name, a, b, rtol=1e-5)


@pytest.mark.parametrize("gates", [("channel", "channel"), ("scalar", "scalar"), ("none", "channel"),
                                   ("channel", "zero")], ids=lambda x: "-".join(x))
@pytest.mark.parametrize("g_min", [-0.1, -3.0], ids=str)
def test_whole_chunk_key_path_agrees(gates, g_min, monkeypatch):
    """The key kernel's whole-chunk form (``KEY_WHOLE``), in one launch and split over two,
    against the sub-block walk: the same gradients where the span allows it, the walk itself (bit
    for bit) where it does not (g down to -3: spans of ~100 over a chunk; no decay has none), and
    the split form exactly the one-launch form at the same tiles; at its own tiles (``KEY_TILES``)
    within rounding."""
    from gdn2.ops.gdn2.triton import backward
    from gdn2.testing import assert_close
    decay, erase = gates
    x = random_inputs(B=1, T=100, H=1, HV=2, K=64, V=16, gate=decay, erase=erase, b_max=2.0, g_min=g_min,
                      initial_state=True, seed=22, device=DEVICE)
    qf, kf, vf, gf, bf, wf, h0, cu, chunks, _ = _kernel_inputs(x)
    args = (qf, kf, vf, gf, bf, wf, h0, 64 ** -0.5, cu, chunks, torch.randn_like(vf), None)
    runs = []
    for mode in ("off", "inline", "split", "split tiles"):
        monkeypatch.setattr(backward, "KEY_WHOLE", mode.split()[0])
        runs.append(backward.chunk_bwd(*args, key_block=None if mode == "split tiles" else 64))
    assert backward.KEY_TILES["split"] != (64, 64)   # the last run tiles differently
    for name, walk, whole, split, tiled in zip(("dq", "dk", "dv", "dg", "db", "dw", "dh0"), *runs):
        if walk is None:
            continue
        assert torch.equal(split, whole), name
        assert_close(name, tiled, split, rtol=1e-5)
        if g_min == -3.0 and decay != "none":
            assert torch.equal(walk, whole), name
        else:
            assert_close(name, whole, walk, rtol=1e-5)


@pytest.mark.parametrize("gates", [("channel", "channel"), ("channel", "scalar"), ("scalar", "scalar")],
                         ids=lambda x: "-".join(x))
def test_split_key_walk_remakes_half_tiles(gates, monkeypatch):
    """The split form's walk launch on wider tiles than the whole form's (``key_block=(32, 64)``,
    attempt 28) where one 32-column half of a 64-column tile takes the whole form and the other
    walks: the walk remakes both halves, and the gradients agree with the walk alone (bit for bit)
    and with both launches on 32 columns. Per-head gates (partial sums per column block) keep one
    tiling: bit for bit the 32-column launches. A count per launch that does not match the setting
    is refused."""
    from gdn2.ops.gdn2.triton import backward
    from gdn2.testing import assert_close
    decay, erase = gates
    x = random_inputs(B=1, T=100, H=1, HV=2, K=64, V=16, gate=decay, erase=erase, b_max=2.0,
                      g_min=-0.1, initial_state=True, seed=24, device=DEVICE)
    if decay == "channel":
        x["g"][..., 32:] *= 40.0    # the upper half's spans past the bound, the lower half's within
    else:
        x["g"] *= 40.0              # every tile walks
    qf, kf, vf, gf, bf, wf, h0, cu, chunks, _ = _kernel_inputs(x)
    args = (qf, kf, vf, gf, bf, wf, h0, 64 ** -0.5, cu, chunks, torch.randn_like(vf), None)
    monkeypatch.setattr(backward, "KEY_WHOLE", "split")
    wide, narrow = backward.chunk_bwd(*args, key_block=(32, 64)), backward.chunk_bwd(*args, key_block=32)
    with pytest.raises(ValueError, match="key_block"):
        backward.chunk_bwd(*args, key_block=(32, 64, 64))
    monkeypatch.setattr(backward, "KEY_WHOLE", "off")
    walk = backward.chunk_bwd(*args)
    for name, a, b, c in zip(("dq", "dk", "dv", "dg", "db", "dw", "dh0"), wide, narrow, walk):
        if a is None:
            continue
        if "scalar" in gates:
            assert torch.equal(a, b), name
        else:
            assert torch.equal(a, c), name      # every tile walked, at the walk's own tiles
        assert_close(name, a, b, rtol=1e-5)
        assert_close(name, a, c, rtol=1e-5)


@pytest.mark.parametrize("mode", ["inline", "split"])
@pytest.mark.parametrize("gate", ["channel", "scalar", "mixed"])
def test_whole_chunk_forms_meet_the_criterion(gate, mode):
    """With both whole-chunk forms on (``whole_chunk_forms``, as the GPU tests set them), the
    Triton backend against the float64 recurrence (outputs, final state, every gradient), on gates
    narrow enough that every chunk takes them; "mixed": the upper key tile's decays 10x wider, so
    the chunk (intra) and that tile walk while the lower tile takes the whole form."""
    from gdn2.ops.gdn2.triton import backward, intra
    from gdn2.ops.gdn2.triton.chunk import whole_chunk_forms
    K = 64 if gate == "mixed" else 32
    assert backward.KEY_TILES[mode][0] == 32  # two key tiles at K = 64
    kind = "channel" if gate == "mixed" else gate
    x = random_inputs(B=2, T=100, H=2, HV=4, K=K, V=16, gate=kind, erase=kind, write=kind, b_max=2.0,
                      g_min=-0.2, initial_state=True, seed=23, device=DEVICE)
    if gate == "mixed":
        x["g"][..., 32:] *= 10.0
    default = intra.WHOLE_CHUNK, backward.KEY_WHOLE
    with whole_chunk_forms(mode):
        assert (intra.WHOLE_CHUNK, backward.KEY_WHOLE) == (mode, mode)
        check(x)
    assert (intra.WHOLE_CHUNK, backward.KEY_WHOLE) == default


@pytest.mark.parametrize("erase", ["channel", "zero"])
def test_backward_from_kept_intra_outputs(erase):
    """A training forward keeps A and Aqk; the backward then recomputes only the gated operands.
    Its gradients must be those of the backward that recomputes everything."""
    from gdn2.ops.gdn2.triton.backward import chunk_bwd
    from gdn2.ops.gdn2.triton.common import dot_precision
    from gdn2.ops.gdn2.triton.intra import chunk_intra_fwd
    from gdn2.testing import assert_close
    x = random_inputs(B=2, T=70, H=1, HV=2, K=64, V=16, erase=erase, b_max=2.0, initial_state=True, seed=12,
                      device=DEVICE)
    qf, kf, vf, gf, bf, wf, h0, cu, chunks, modes = _kernel_inputs(x)
    scale = 64 ** -0.5
    A, Aqk, _ = chunk_intra_fwd(qf, kf, gf, bf, scale, chunks, *modes[:2],
                                prec=dot_precision(qf.dtype, float32_outputs=True))
    assert (A is None) == (erase == "zero")
    args = (qf, kf, vf, gf, bf, wf, h0, scale, cu, chunks, torch.randn_like(vf), None)
    kept, fresh = chunk_bwd(*args, kept=(A, Aqk)), chunk_bwd(*args)
    for name, a, b in zip(("dq", "dk", "dv", "dg", "db", "dw", "dh0"), kept, fresh):
        if b is not None:
            assert_close(name, a, b, rtol=1e-6)


def test_packed_offsets_as_a_strided_view():
    """cu_seqlens as an every-other-element view of a longer tensor: read as the offsets it shows."""
    x = random_inputs(B=1, T=100, H=2, K=16, V=16, b_max=2.0, initial_state=True, N=3, seed=17, device=DEVICE)
    cu = torch.tensor([0, 5, 37, 50, 100, 7, 100], dtype=torch.int32, device=DEVICE)[::2]   # 0, 37, 100, 100
    assert not cu.is_contiguous()
    check(x, cu_seqlens=cu)


@pytest.mark.parametrize("erase", ["channel", "zero"])
def test_float16_gated_operands_round_the_float32_ones(erase):
    """The one-pass walk's operands stored as float16: each the float32 one rounded to nearest
    (float16's half-ulp, 2^-11 relative), Aqk too, exp(G_C) still float32, A unchanged."""
    from gdn2.ops.gdn2.triton.intra import chunk_intra_fwd
    x = random_inputs(B=2, T=70, H=2, HV=2, K=32, V=16, erase=erase, b_max=2.0, seed=13, device=DEVICE)
    qf, kf, vf, gf, bf, wf, h0, cu, chunks, modes = _kernel_inputs(x)
    wide = chunk_intra_fwd(qf, kf, gf, bf, 32 ** -0.5, chunks, *modes[:2], prec="ieee")
    half = chunk_intra_fwd(qf, kf, gf, bf, 32 ** -0.5, chunks, *modes[:2], prec="ieee", gated_dtype=torch.float16,
                           aqk_dtype=torch.float16)
    assert (wide[0] is None) == (half[0] is None) and (wide[0] is None or torch.equal(wide[0], half[0]))
    for name, a, b in zip(("Aqk", "Q_γ", "K_tail", "Y"), [wide[1], *wide[2][:3]], [half[1], *half[2][:3]]):
        if a is None:
            assert b is None and erase == "zero", name
            continue
        assert b.dtype == torch.float16, name
        assert torch.equal(b, a.to(torch.float16)), name
    # exp(G_C) is float32 in both; two compilations of the kernel may order the cumulative sum of g
    # differently on a GPU (the interpreter gives equal bits): an ulp of a log-decay sum of ~40 is
    # 4e-6 relative after exp (the H100 showed 5.4e-6 at most, 3e-8 absolute)
    assert half[2][3].dtype == torch.float32
    torch.testing.assert_close(half[2][3], wide[2][3], rtol=1e-5, atol=1e-7)


def test_float16_operands_move_the_walk_by_their_rounding_only():
    """The one-pass walk over float16 operands against the same walk over float32 ones (float32
    values, so nothing else rounds but the float16 path's own products, on float16 operands too:
    ``state.F16_PRODUCTS``): they differ by float16's rounding (2^-11 relative), no more
    (bfloat16 operands, 2^-8, would fail) and not zero (the float16 path is the one run)."""
    from gdn2.ops.gdn2.triton.intra import chunk_intra_fwd
    from gdn2.ops.gdn2.triton.state import chunk_state_fwd
    from gdn2.testing import error
    x = random_inputs(B=2, T=100, H=2, HV=4, K=32, V=16, b_max=2.0, seed=16, device=DEVICE)
    qf, kf, vf, gf, bf, wf, h0, cu, chunks, modes = _kernel_inputs(x)
    outs = {}
    for dtype in (torch.float32, torch.float16):
        A, Aqk, gated = chunk_intra_fwd(qf, kf, gf, bf, 32 ** -0.5, chunks, *modes[:2], prec="ieee", gated_dtype=dtype,
                                        aqk_dtype=dtype)
        outs[dtype] = chunk_state_fwd(gated, vf, wf, A, Aqk, None, cu, chunks, modes, False, prec="tf32")[0]
    err = error(outs[torch.float16], outs[torch.float32])
    assert 0 < err.rel_rms < 1e-3, err


def test_unnormalised_bfloat16_forward_stays_finite():
    """float16 operands only for L2-normalised q and k: q of magnitude 1e7 would pass float16's
    range (65504) as Q_γ; without the L2 norm the walk keeps float32 operands."""
    from gdn2.testing import assert_no_worse
    x = random_inputs(B=1, T=80, H=2, K=32, V=16, b_max=2.0, dtype=torch.bfloat16, seed=17, device=DEVICE)
    x["q"] = (x["q"].float() * 1e7).to(torch.bfloat16)
    x64 = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in x.items()}
    with torch.no_grad():
        ref, _ = gated_delta_rule2(**x64, backend="recurrent")
        fast, _ = gated_delta_rule2(**x, backend="triton")
    truncated = (ref.float().view(torch.int32) & -65536).view(torch.float32)
    assert_no_worse("o (unnormalised q, bfloat16)", fast, truncated, ref)


@pytest.mark.parametrize("normalized,aqk_float16", [(False, True), (True, True), (True, False)],
                         ids=["raw", "l2norm", "l2norm-aqk32"])
def test_bfloat16_forward_only_meets_the_criterion(normalized, aqk_float16, monkeypatch):
    """bfloat16 inputs without gradients or final state take the one-pass walk (with the fused
    L2 norm over float16 operands, Aqk included); the output must meet the criterion against
    float64. The interpreter casts float32 to bfloat16 by truncation (a GPU rounds to nearest),
    so the baseline is the float64 result truncated the same way: twice its error is the bound on
    a GPU's rounding too. With the norm the reference runs on the kernel's own unit q and k (their
    truncation to bfloat16 is the interpreter's, not the walk's error)."""
    from gdn2.ops.gdn2.triton import chunk
    from gdn2.ops.gdn2.triton.l2norm import l2norm
    from gdn2.testing import assert_no_worse
    monkeypatch.setattr(chunk, "AQK_FLOAT16", aqk_float16)
    x = random_inputs(B=2, T=100, H=2, HV=4, K=32, V=16, b_max=2.0, dtype=torch.bfloat16, seed=14, device=DEVICE)
    x64 = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in x.items()}
    with torch.no_grad():
        if normalized:
            x64["q"], x64["k"] = l2norm(x["q"]).double(), l2norm(x["k"]).double()
        ref, _ = gated_delta_rule2(**x64, backend="recurrent")
        fast, S = gated_delta_rule2(**x, backend="triton", use_qk_l2norm=normalized)
    assert fast.dtype == torch.bfloat16 and S is None
    truncated = (ref.float().view(torch.int32) & -65536).view(torch.float32)
    assert_no_worse("o (forward only, bfloat16)", fast, truncated, ref)


@pytest.mark.parametrize("case", ["gates", "packed", "extreme", "whole"])
def test_halving_solve_meets_the_criterion(case, monkeypatch):
    """``intra.SOLVE_FORM = "halving"`` (the one-pass solves' form; here forced on every solve): the Triton backend against the
    float64 recurrence, every output and gradient, on a partial chunk and grouped heads, packed
    sequences, closed gates with b up to 2, and gates narrow enough for the whole-chunk form."""
    from gdn2.ops.gdn2.triton import intra
    from gdn2.ops.gdn2.triton.chunk import whole_chunk_forms
    monkeypatch.setattr(intra, "SOLVE_FORM", "halving")
    kw = dict(b_max=2.0, initial_state=True, device=DEVICE)
    if case == "packed":
        lengths = [7, 64, 1, 50]
        cu = torch.tensor([0] + list(itertools.accumulate(lengths)), device=DEVICE)
        check(random_inputs(B=1, T=int(cu[-1]), H=2, K=32, V=16, N=len(lengths), seed=31, **kw), cu_seqlens=cu)
        return
    x = random_inputs(B=2, T=100, H=2, HV=4, K=32, V=16, seed=32, g_min=-0.2 if case == "whole" else -1.0, **kw)
    if case == "extreme":
        hard = torch.rand(x["g"].shape, generator=torch.Generator().manual_seed(33)) < 0.3
        x["g"] = torch.where(hard.to(DEVICE), torch.full_like(x["g"], -1e4), x["g"])
    with whole_chunk_forms("split"):
        check(x, use_qk_l2norm=case == "extreme")


def test_halving_solve_equals_the_blocks_form():
    """Both solves on keys close to parallel with b up to 2 and slow decay (the entries of
    (I + T)^-1 far from the identity): they agree to float32 rounding, and both invert I + T."""
    from gdn2.ops.gdn2.triton import intra
    from gdn2.ops.gdn2.triton.chunk import gate_mode
    from gdn2.ops.gdn2.triton.common import make_chunks
    from gdn2.testing import assert_close
    gen = torch.Generator().manual_seed(34)
    k = torch.randn(100, 1, 32, generator=gen) * 0.3 + torch.randn(1, 1, 32, generator=gen)
    k = (k / k.norm(dim=-1, keepdim=True)).to(DEVICE)
    q = torch.randn(100, 1, 32, generator=gen).to(DEVICE)
    g = (-0.01 * torch.rand(100, 1, 32, generator=gen)).to(DEVICE)
    b = (2.0 * torch.rand(100, 1, 32, generator=gen)).to(DEVICE)
    chunks = make_chunks([0, 100], 64, DEVICE)
    solved = {}
    saved = intra.SOLVE_FORM
    for form in ("blocks", "halving"):
        intra.SOLVE_FORM = form
        try:
            solved[form] = intra.chunk_intra_fwd(q, k, g, b, 32 ** -0.5, chunks, gate_mode(g, 3), gate_mode(b, 3),
                                                 prec="ieee")[0]
        finally:
            intra.SOLVE_FORM = saved
    assert_close("A", solved["halving"], solved["blocks"], rtol=1e-5)
    # far from the identity (off-diagonal entries past 1), where a wrong merge would show
    assert torch.tril(solved["blocks"][:64, 0], -1).abs().max() > 1.0
    # A (I + T) = I on the full chunk, with T from float64
    G = g[:64, 0].double().cumsum(0)
    T = torch.tril(((b[:64, 0] * k[:64, 0]).double() * G.exp()) @ (k[:64, 0].double() * (-G).exp()).T, -1)
    A = solved["halving"][:64, 0].double()
    assert_close("A (I + T)", A @ (torch.eye(64, dtype=torch.float64, device=DEVICE) + T),
                 torch.eye(64, dtype=torch.float64, device=DEVICE), rtol=1e-4)


def test_solve_form_by_precision(monkeypatch):
    """"one-pass halving" (the default): halving where the solve is one-pass TF32, blocks where it is
    three-pass (the training forward: halving there was slower on an H100); a bad setting is named."""
    from gdn2.ops.gdn2.triton import intra
    monkeypatch.setattr(intra, "SOLVE_FORM", "one-pass halving")
    assert [intra.solve_form(p) for p in ("tf32", "tf32x3", "ieee")] == ["halving", "blocks", "blocks"]
    monkeypatch.setattr(intra, "SOLVE_FORM", "halving")
    assert intra.solve_form("tf32x3") == "halving"
    monkeypatch.setattr(intra, "SOLVE_FORM", "substitution")
    with pytest.raises(ValueError, match="SOLVE_FORM.*substitution"):
        intra.solve_form("tf32")


def test_inference_mode_offsets_and_gates_then_training():
    """Offsets and a gate made under ``torch.inference_mode`` (an evaluation pass), then used in a
    training call: the forward saves its inputs for the backward, which inference tensors refuse,
    so they are copied (and the offsets cache keeps nothing made in inference mode). Gradients as
    the chunk backend's."""
    from gdn2.testing import assert_close
    x = random_inputs(B=1, T=20, H=1, K=16, V=16, seed=41, device=DEVICE)
    with torch.inference_mode():
        cu = torch.tensor([0, 7, 20], dtype=torch.int32, device=DEVICE)
        g = x["g"].clone()
        gated_delta_rule2(**{**x, "g": g}, cu_seqlens=cu, backend="triton")   # fills the offsets cache
    grads = {}
    for backend in ("triton", "chunk"):
        leaves = {n: x[n].clone().requires_grad_() for n in ("q", "k", "v", "b", "w")}
        o = gated_delta_rule2(**{**x, **leaves, "g": g}, cu_seqlens=cu, backend=backend)[0]
        grads[backend] = torch.autograd.grad(o.square().sum(), list(leaves.values()))
    for got, want in zip(*grads.values()):
        assert_close("gradient", got, want, rtol=1e-5)
