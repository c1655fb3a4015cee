"""The stage-variant profiler builds its switched copies from the kernels' current source; a
kernel edit that moves one of its markers must fail here, not on a GPU call."""

import importlib.util
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[2]


def test_variant_kernels_build():
    spec = importlib.util.spec_from_file_location("stage_variants", ROOT / "benchmarks" / "stage_variants.py")
    sv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sv)
    variants = sv.Variants(Path(tempfile.mkdtemp()))
    key = variants.get("key", {"DIAG": False, "LATE": False})
    intra = variants.get("intra", {"SOLVE": False})
    assert (key.DIAG.value, key.EARLY.value, key.LATE.value, key.CUMPROD.value) == (False, True, False, False)
    assert (intra.OFF.value, intra.SOLVE.value) == (True, False)
    assert variants.get("key", {"DIAG": False, "LATE": False}) is key       # one module per switch set
    # each switch reaches the code it names (a moved marker fails the patch before this)
    for module, uses in ((sv.key_source(), ("if DIAG:", "i * EARLY", "NB * LATE", "if CUMPROD:")),
                         (sv.intra_source(), ("if DIAG:", "i_b * OFF", "ERASE and SOLVE", "if CUMPROD:"))):
        assert all(use in module for use in uses)
    module, flags = variants.split("key", {"DIAG": False, "LATE": False, "FORM": 2})
    assert module is key and flags == {"FORM": 2}


def test_cumulative_product_tile_matches_the_kernels():
    """The replacement the profiler times must compute the same pairwise tiles (interpreter, tiny shape)."""
    import torch
    from gdn2.ops.gdn2.triton.common import make_chunks
    from gdn2.testing import assert_close, random_inputs
    spec = importlib.util.spec_from_file_location("stage_variants", ROOT / "benchmarks" / "stage_variants.py")
    sv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sv)
    variants = sv.Variants(Path(tempfile.mkdtemp()))
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
