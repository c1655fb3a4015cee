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
    assert {"DIAG", "EARLY", "LATE"} <= set(key.chunk_bwd_key_kernel.arg_names)
    assert {"OFF", "DIAG", "SOLVE", "GATED"} <= set(intra.chunk_intra_fwd_kernel.arg_names)
