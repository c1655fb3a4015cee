"""The stage-variant profiler builds its switched copies from the kernels' current source; a
kernel edit that moves one of its markers must fail here, not on a GPU call."""

import importlib.util
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[2]


def stage_variants():
    """The profiler's module and a fresh cache of its switched kernel modules."""
    spec = importlib.util.spec_from_file_location("stage_variants", ROOT / "benchmarks" / "stage_variants.py")
    sv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sv)
    return sv, sv.Variants(Path(tempfile.mkdtemp()))


def prepared(T, seed):
    """One head of width 32 as the kernels take it: flat q, k, v, g, b, w, the offsets, the chunk
    table and the gate modes."""
    from gdn2.ops.gdn2.triton.chunk import _chunks, _prepare
    from gdn2.ops.gdn2.triton.common import gate_mode
    from gdn2.testing import random_inputs
    x = random_inputs(B=1, T=T, H=1, K=32, V=32, b_max=2.0, seed=seed)
    q, k, v, g, b, w, _, cu, uT, _ = _prepare(x["q"], x["k"], x["v"], x["g"], x["b"], x["w"], None, None)
    return q, k, v, g, b, w, cu, _chunks(cu, uT), tuple(gate_mode(t, 3) for t in (g, b, w))


def test_variant_kernels_build():
    sv, variants = stage_variants()
    key = variants.get("key", {"DIAG": False, "LATE": False})
    intra = variants.get("intra", {"SOLVE": False})
    assert (key.DIAG.value, key.EARLY.value, key.LATE.value, key.CUMPROD.value) == (False, True, False, False)
    assert (intra.OFF.value, intra.SOLVE.value) == (True, False)
    assert variants.get("key", {"DIAG": False, "LATE": False}) is key       # one module per switch set
    # each switch reaches the code it names (a moved marker fails the patch before this)
    for module, uses in ((sv.key_source(), ("if DIAG:", "i * EARLY", "NB * LATE", "if CUMPROD:")),
                         (sv.intra_source(), ("if DIAG:", "i_b * OFF", "ERASE and SOLVE", "SUB * SUBST", "if NEUMANN:",
                                             "if CUMPROD:"))):
        assert all(use in module for use in uses)
    module, flags = variants.split("key", {"DIAG": False, "LATE": False, "FORM": 2})
    assert module is key and flags == {"FORM": 2}


def test_cumulative_product_tile_matches_the_kernels():
    """The replacement the profiler times must compute the same pairwise tiles (interpreter, tiny shape)."""
    import torch
    from gdn2.ops.gdn2.triton.common import make_chunks
    from gdn2.testing import assert_close, random_inputs
    sv, variants = stage_variants()
    x = random_inputs(B=1, T=64, H=1, K=32, V=16, b_max=2.0, seed=4)
    x["g"][0, 5:9] = -1e4                                  # extreme decays inside one sub-block
    q, k, g, b = (x[n][0].float().contiguous() for n in ("q", "k", "g", "b"))
    chunks = make_chunks([0, 64], 64, "cpu")
    outs = {}
    for cumprod in (False, True):
        bufs = [torch.zeros(64, 1, 64), torch.zeros(64, 1, 64)] + [torch.zeros(64, 1, 32) for _ in range(3)]
        dec = torch.zeros(1, 1, 32)
        intra = variants.get("intra", {"CUMPROD": cumprod})
        intra.chunk_intra_fwd_kernel[(1, 1)](q, k, g, b, *bufs, dec, chunks.start, chunks.end, 32 ** -0.5, H=1, K=32,
                                             BT=64, BK=32, SUB=16, G_MODE=2, B_MODE=2, PREC="ieee", DIAG_SPAN=-1.0)
        outs[cumprod] = bufs
    for name, a, b_ in zip(("A", "Aqk", "qg", "kt", "y"), outs[True], outs[False]):
        assert_close(name, a, b_, rtol=1e-5)


def test_walk_variants_time_the_library_walks():
    """The walks' anatomy (interpreter, tiny shape): with no switch set, the patched forward and
    reverse walks give the library's results bit for bit (so the rows time the library's walks);
    each switch changes them (so it reaches the code it names)."""
    import torch
    from gdn2.ops.gdn2.triton import backward, state
    from gdn2.ops.gdn2.triton.intra import chunk_intra_fwd
    _, variants = stage_variants()
    q, k, v, g, b, w, cu, chunks, modes = prepared(130, seed=3)
    A, Aqk, gated = chunk_intra_fwd(q, k, g, b, 32 ** -0.5, chunks, modes[0], modes[1], prec="tf32x3")
    do = torch.randn_like(v)
    consts = dict(H=1, HV=1, K=32, V=32, BT=64, BK=32, BV=32, B_MODE=modes[1], PREC="tf32x3")

    def forward(module):
        o = torch.zeros_like(v)
        module.chunk_state_fwd_kernel[(1, 1, 1)](*gated, v, w, A, Aqk, o, o, o, o, o, cu, chunks.first, W_MODE=modes[2],
                                                 USE_H0=False, STORE_HT=False, STORE_O=True, STORE_H=False,
                                                 STORE_R=False, **consts)
        return o

    def reverse(module):
        dh, dr = torch.zeros(chunks.count, 1, 32, 32), torch.zeros_like(v)
        module.chunk_state_bwd_kernel[(1, 1, 1)](*gated, Aqk, do, dh, dh, dh, dr, cu, chunks.first, USE_DHT=False,
                                                 STORE_DH0=False, **consts)
        return torch.cat([dh.flatten(), dr.flatten()])

    for kind, run, library in (("state", forward, state), ("reverse", reverse, backward)):
        expected = run(library)
        assert torch.equal(run(variants.get(kind, {})), expected), kind
        for switch in ({"DOTS": 2}, {"DOTS": 0}, {"CACHED": True}):
            assert not torch.equal(run(variants.get(kind, switch)), expected), (kind, switch)


def test_solve_switches_reach_the_solve():
    """The intra anatomy's solve rows (interpreter, tiny shape): without switches the patched kernel
    makes the library's A bit for bit; SUBST and NEUMANN each change it, and with both off it is
    the identity (the diagonal blocks not inverted, the blocks below them never formed)."""
    import torch
    from gdn2.ops.gdn2.triton import intra
    from gdn2.ops.gdn2.triton.common import FORM_WALK, diag_span
    _, variants = stage_variants()
    q, k, v, g, b, w, _, chunks, modes = prepared(64, seed=5)

    def solve(module):
        A, Aqk = torch.zeros(64, 1, 64), torch.zeros(64, 1, 64)
        module.chunk_intra_fwd_kernel[(chunks.count, 1)](
            q, k, g, b, A, Aqk, Aqk, Aqk, Aqk, Aqk, chunks.start, chunks.end, 32 ** -0.5, H=1, K=32, BT=64, BK=32,
            SUB=16, G_MODE=modes[0], B_MODE=modes[1], PREC="tf32x3", DIAG_SPAN=diag_span("tf32x3"),
            FUSE_GATED=False, FORM=FORM_WALK)
        return A[:, 0]

    expected = solve(intra)
    assert torch.equal(solve(variants.get("intra", {})), expected)
    assert not torch.equal(solve(variants.get("intra", {"SUBST": False})), expected)
    assert not torch.equal(solve(variants.get("intra", {"NEUMANN": False})), expected)
    assert torch.equal(solve(variants.get("intra", {"SUBST": False, "NEUMANN": False})), torch.eye(64))

def test_float16_product_switches_round_as_claimed():
    """The "hilo" rows time products the library does not run yet; they must compute what their
    names say (interpreter, tiny shape): the two-term float16 split near float32 (the library's
    three-pass form), one float16 pass at float16's rounding, both not exact (the switch is on)."""
    import torch
    from gdn2.ops.gdn2.triton import intra
    from gdn2.ops.gdn2.triton.common import gate_mode, make_chunks
    from gdn2.testing import error, random_inputs
    sv, variants = stage_variants()
    x = random_inputs(B=1, T=100, H=1, K=32, V=16, b_max=2.0, seed=5)
    q, k, g, b = (x[n][0].float().contiguous() for n in ("q", "k", "g", "b"))
    chunks = make_chunks([0, 100], 64, "cpu")
    modes = (gate_mode(g, 3), gate_mode(b, 3))
    # Aqk [T, 1, 64]: the columns past the last chunk's 36 rows are never written
    valid = (torch.arange(64)[None, :] < torch.tensor([64] * 64 + [36] * 36)[:, None])[:, None, :]
    _, ref, _ = intra.chunk_intra_fwd(q, k, g, b, 0.2, chunks, *modes, prec="tf32x3")
    errs = {}
    for dots in (2, 3):
        module = variants.get("intra", {"DOTS": dots})
        aqk = module.chunk_intra_fwd(q, k, g, b, 0.2, chunks, *modes, prec="tf32x3")[1]
        errs[dots] = error(aqk[valid], ref[valid]).rel_rms
    assert 0 < errs[3] < 1e-5 and 1e-4 < errs[2] < 2e-3, errs
