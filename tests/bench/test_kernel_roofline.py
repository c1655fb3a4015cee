"""benchmarks/kernel_roofline.py: the byte and FLOP counts against hand counts at the benchmark
shape, and the tables at another shape."""

import importlib.util
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load():
    spec = importlib.util.spec_from_file_location("kernel_roofline", ROOT / "benchmarks" / "kernel_roofline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module      # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_counts_match_hand_counts():
    m = load()
    s = m.Shape(2, 8192, 16, 128, 128)
    tokens = 2 * 8192 * 16                       # token-heads
    rows = {(r.kernel, r.stage): r for r in m.pipelines(s, "off")["training"]}
    l2 = rows[("l2norm_fwd_kernel", "fwd: l2norm q, k")]
    assert l2.read == 2 * tokens * 128 * 2       # q and k, bfloat16, read once
    # every input is read at least once: q, k, v, b (bf16), g (f32), w (bf16), do (bf16)
    inputs = tokens * 128 * (2 * 6 + 4)
    assert sum(r.unique for r in rows.values()) > inputs
    # the three-pass intra stage: Aqk and A products at least, 2 * 64 * 64 * 128 FLOPs each per chunk-head
    intra = rows[("chunk_intra_fwd_kernel", "fwd: intra (A, Aqk kept)")]
    assert intra.flops >= 2 * (2 * 64 * 64 * 128) * (2 * 8192 // 64) * 16
    assert intra.prec == "tf32x3"
    # the gated-operands kernel by hand: 256 chunks x 4 column tiles of 32 x 16 heads; each program
    # reads A [64, 64] f32, k, b, q [64, 32] bf16, g and next-row g [64, 32] f32, and writes three
    # [64, 32] f32 operands and exp(G_C) [32] f32; one [64, 64] x [64, 32] product
    gated = rows[("chunk_gated_kernel", "bwd: gated operands (f32)")]
    programs = 256 * 4 * 16
    assert gated.read == programs * (64 * 64 * 4 + 3 * 64 * 32 * 2 + 2 * 64 * 32 * 4)
    assert gated.write == programs * (3 * 64 * 32 * 4 + 32 * 4)
    assert gated.flops == programs * 2 * 64 * 64 * 32


def test_whole_chunk_form_counts():
    """The key kernel's whole form by hand (256 chunks x 16 heads x 4 tiles of 32 columns): g twice,
    dK_tail, dY, dQ_g [64, 32] f32; k, q, b twice [64, 32] bf16; dG_C [32] f32; dAqk, dT, A
    [64, 64] f32; and the walk launch's span pass (g again); five [64, 64] x [64, 32] products.
    Both whole forms read less than the walks they replace."""
    m = load()
    s = m.Shape(2, 8192, 16, 128, 128)
    split = {r.kernel: r for r in m.pipelines(s, "split")["training"]}
    off = {r.kernel: r for r in m.pipelines(s, "off")["training"]}
    key = split["chunk_bwd_key_kernel"]
    programs = 256 * 16 * 4
    assert key.read == programs * (64 * 32 * (5 * 4 + 4 * 2) + 32 * 4 + 3 * 64 * 64 * 4 + 64 * 32 * 4)
    assert key.write == programs * 64 * 32 * (2 * 4 + 2 * 2)
    assert key.flops == programs * 5 * 2 * 64 * 64 * 32
    for kernel in ("chunk_bwd_key_kernel", "chunk_intra_fwd_kernel"):
        assert split[kernel].read < off[kernel].read, kernel
        assert split[kernel].unique == off[kernel].unique, kernel


def test_tables_at_another_shape():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernel_roofline.py"), "--shape", "1", "256", "2",
                          "64", "32"], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    for title in ("### training", "### inference", "chunk_bwd_key_kernel", "**total**"):
        assert title in out
    # the H100 times belong to the benchmark shape only
    assert "3.884" not in out and "End to end" not in out
