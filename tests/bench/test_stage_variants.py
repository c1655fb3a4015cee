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
    folder = Path(tempfile.mkdtemp())
    key = sv.load("key_variants", sv.key_source(), folder)
    intra = sv.load("intra_variants", sv.intra_source(), folder)
    assert {"DIAG", "EARLY", "LATE", "CUMPROD"} <= set(key.chunk_bwd_key_kernel.arg_names)
    assert {"OFF", "DIAG", "SOLVE", "FUSE_GATED", "CUMPROD"} <= set(intra.chunk_intra_fwd_kernel.arg_names)


def test_cumulative_product_tile_matches_the_kernels():
    """The replacement the profiler times must compute the same pairwise tiles (interpreter, tiny shape)."""
    import torch
    from gdn2.ops.gdn2.triton.common import make_chunks
    from gdn2.testing import assert_close, random_inputs
    spec = importlib.util.spec_from_file_location("stage_variants", ROOT / "benchmarks" / "stage_variants.py")
    sv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sv)
    intra = sv.load("intra_variants", sv.intra_source(), Path(tempfile.mkdtemp()))
    x = random_inputs(B=1, T=64, H=1, K=32, V=16, b_max=2.0, seed=4)
    x["g"][0, 5:9] = -1e4                                  # extreme decays inside one sub-block
    q, k, g, b = (x[n][0].float().contiguous() for n in ("q", "k", "g", "b"))
    chunks = make_chunks([0, 64], 64, "cpu")
    outs = {}
    for cumprod in (False, True):
        bufs = [torch.zeros(64, 1, 64), torch.zeros(64, 1, 64)] + [torch.zeros(64, 1, 32) for _ in range(3)]
        dec = torch.zeros(1, 1, 32)
        intra.chunk_intra_fwd_kernel[(1, 1)](q, k, g, b, *bufs, dec, chunks.start, chunks.end, 32 ** -0.5, H=1, K=32,
                                             BT=64, BK=32, SUB=16, G_MODE=2, B_MODE=2, PREC="ieee", DIAG_SPAN=-1.0,
                                             CUMPROD=cumprod)
        outs[cumprod] = bufs
    for name, a, b_ in zip(("A", "Aqk", "qg", "kt", "y"), outs[True], outs[False]):
        assert_close(name, a, b_, rtol=1e-5)
