"""Per-kernel times of the Triton pipeline at one paper shape (bf16, H = 16, K = V = 128),
next to each kernel's minimum bytes, so the slowest stage is the one to work on.

    python benchmarks/profile_stages.py --B 2 --T 8192
"""

import argparse
import importlib.util
from unittest import mock

import torch
import triton

from gdn2.bench.gpu import fla_chunk, make_inputs, ours, stage_inputs
from gdn2.ops.gdn2.triton.backward import KEY_TILES, KEY_WHOLE, chunk_bwd
from gdn2.ops.gdn2.triton.chunk import whole_chunk_forms
from gdn2.ops.gdn2.triton import backward, chunk, intra, state
from gdn2.ops.gdn2.triton.intra import WHOLE_CHUNK, chunk_intra_fwd
from gdn2.ops.gdn2.triton.state import chunk_state_fwd
from gdn2.ops.gdn2.triton.l2norm import l2norm as l2norm_triton
from gdn2.ops.utils import l2norm


def bench(fn):
    return triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--B", type=int, default=2)
    p.add_argument("--T", type=int, default=8192)
    p.add_argument("--no-fla", action="store_true", help="leave out FLA's kernel lists (slow first compilations)")
    a = p.parse_args()
    x = make_inputs(a.B, a.T)
    qn, kn = l2norm(x["q"]), l2norm(x["k"])
    s = stage_inputs(x, qn, kn)
    qf, kf, vf, gf, bf, wf, cu, chunks, modes, scale = s.q, s.k, s.v, s.g, s.b, s.w, s.cu, s.chunks, s.modes, s.scale
    A, Aqk, gated = chunk_intra_fwd(qf, kf, gf, bf, scale, chunks, modes[0], modes[1])
    do = torch.randn_like(vf)
    # g - 2: every chunk's decay span past the whole-chunk forms' bound, so both kernels walk
    w = stage_inputs(dict(x, g=x["g"] - 2.0), qn, kn)

    def bwd(t, **kw):
        # normalized: the stage inputs' q and k are L2-normalised (the float16 walks' precondition)
        return lambda: chunk_bwd(t.q, t.k, t.v, t.g, t.b, t.w, None, t.scale, t.cu, t.chunks, do, None,
                                 normalized=True, **kw)

    # settings other than the library's, each set around one call of the function it wraps
    products = mock.patch.object(state, "F16_PRODUCTS", not state.F16_PRODUCTS)
    other_pair = "tf32x3" if backward.PAIR_PRODUCTS == "f16x3" else "f16x3"
    pair_products = mock.patch.object(backward, "PAIR_PRODUCTS", other_pair)
    intra_products = mock.patch.object(intra, "FLOAT16_PRODUCTS", not intra.FLOAT16_PRODUCTS)
    other_intra = "TF32" if intra.FLOAT16_PRODUCTS else "float16"
    other_parallel = "tf32x3" if backward.PARALLEL_PRODUCTS == "f16x3" else "f16x3"
    parallel_products = mock.patch.object(backward, "PARALLEL_PRODUCTS", other_parallel)
    other_walk = "tf32x3" if backward.KEY_WALK_PRODUCTS == "f16x3" else "f16x3"
    walk_products = mock.patch.object(backward, "KEY_WALK_PRODUCTS", other_walk)

    # the inference forward's solve: the other form; the training forward's: halving (three-pass)
    other_solve = "blocks" if intra.SOLVE_FORM != "blocks" else "one-pass halving"
    solve = mock.patch.object(intra, "SOLVE_FORM", other_solve)
    halving = mock.patch.object(intra, "SOLVE_FORM", "halving")
    other_cap = None if intra.ONE_PASS_REGISTERS else 168
    cap = mock.patch.object(intra, "ONE_PASS_REGISTERS", other_cap)
    aqk = mock.patch.object(chunk, "AQK_FLOAT16", not chunk.AQK_FLOAT16)
    other_aqk = "float32" if chunk.AQK_FLOAT16 else "float16"

    def forms(mode, fn):
        def run():
            with whole_chunk_forms(mode):
                fn()
        return run

    # the inference forward first (the settings on trial change it most; the 8x2K forward is the
    # furthest from FLA's): as used, and with each setting not yet on, here and at 8x2K and 1x16K
    # (64 walks of 256 chunks); the float16 walk with the other products (attempt 33); its tilings
    # at every paper shape: benchmarks/walk_settings.py
    rows = []
    for name, xx in ((f"{a.B}x{a.T}", x), ("8x2048", make_inputs(8, 2048)), ("1x16384", make_inputs(1, 16384))):
        # (FLOAT16_PRODUCTS leaves the one-pass intra stage alone since 2026-12-07: no row for it here)
        rows += [(f"{name}: inference forward as used", lambda xx=xx: ours(xx)),
                 (f"{name}: inference forward, {other_solve} solve (SOLVE_FORM)", solve(lambda xx=xx: ours(xx))),
                 (f"{name}: inference forward, Aqk {other_aqk} (AQK_FLOAT16)", aqk(lambda xx=xx: ours(xx))),
                 (f"{name}: inference forward, {other_solve} solve and Aqk {other_aqk}",
                  solve(aqk(lambda xx=xx: ours(xx)))),
                 (f"{name}: inference forward, the intra kernel's registers "
                  f"{'uncapped' if other_cap is None else 'capped at 168'} (ONE_PASS_REGISTERS)",
                  cap(lambda xx=xx: ours(xx))),
                 (f"{name}: inference forward, the walk's products "
                  f"{'one-pass TF32' if state.F16_PRODUCTS else 'float16'} (attempt 33)",
                  products(lambda xx=xx: ours(xx)))]
    rows += [
        ("l2norm q, k (PyTorch composite)", lambda: (l2norm(x["q"]), l2norm(x["k"]))),
        ("l2norm q, k (Triton, used)", lambda: (l2norm_triton(x["q"]), l2norm_triton(x["k"]))),
        ("intra fwd (Aqk, A, gated operands; three-pass, as a training forward)",
         lambda: chunk_intra_fwd(qf, kf, gf, bf, scale, chunks, modes[0], modes[1], normalized=True)),
        (f"intra fwd, the products T and Aqk {other_intra} (FLOAT16_PRODUCTS)",
         intra_products(lambda: chunk_intra_fwd(qf, kf, gf, bf, scale, chunks, modes[0], modes[1], normalized=True))),
        ("intra fwd, halving solve (SOLVE_FORM)",
         halving(lambda: chunk_intra_fwd(qf, kf, gf, bf, scale, chunks, modes[0], modes[1], normalized=True))),
        ("state fwd (o)", lambda: chunk_state_fwd(gated, vf, wf, A, Aqk, None, cu, chunks, modes, False)),
        # inside the row above since the walk's float16 products took them (untimed alone before)
        ("the float16 walk's per-sequence scales (power_of_two_scale of z, two Triton kernels)",
         lambda: state.power_of_two_scale(vf, wf, None, cu, chunks)),
        ("state fwd recompute (h, R)", lambda: chunk_state_fwd(gated, vf, wf, A, Aqk, None, cu, chunks, modes, False,
                                                               store_o=False, store_h=True, store_r=True)),
        ("backward, all stages (intra recomputed)", bwd(s)),
        ("backward from the forward's A, Aqk (used in training)", bwd(s, kept=(A, Aqk))),
        (f"backward from the forward's A, Aqk, the value and key kernels' products {other_parallel} "
         "(PARALLEL_PRODUCTS)", parallel_products(bwd(s, kept=(A, Aqk)))),
        ("g - 2 (every chunk walks): backward, all stages", bwd(w)),
        (f"g - 2: backward, the value and key kernels' products {other_parallel} (PARALLEL_PRODUCTS)",
         parallel_products(bwd(w))),
        (f"backward from the forward's A, Aqk, the key kernel's walk launch {other_walk} (KEY_WALK_PRODUCTS)",
         walk_products(bwd(s, kept=(A, Aqk)))),
        (f"g - 2: backward, the key kernel's walk launch {other_walk} (KEY_WALK_PRODUCTS)", walk_products(bwd(w))),
        (f"backward from the forward's A, Aqk, the walks' products {other_pair} (PAIR_PRODUCTS)",
         pair_products(bwd(s, kept=(A, Aqk)))),
        (f"g - 2: backward, the walks' products {other_pair} (PAIR_PRODUCTS)", pair_products(bwd(w))),
        # the split key form's launches on (32, 32) columns, the library's until attempt 28 gave the
        # walk launch 64 (KEY_TILES)
        ("backward, the split key form on (32, 32) columns", forms("split", bwd(s, key_block=(32, 32)))),
        ("backward, whole-chunk forms off", forms("off", bwd(s))),
        ("g - 2: backward, the split key form on (32, 32) columns", forms("split", bwd(w, key_block=(32, 32)))),
        ("g - 2: backward, whole-chunk forms off", forms("off", bwd(w))),
    ]
    print(f"Whole-chunk forms (intra, key): {WHOLE_CHUNK}, {KEY_WHOLE}; key tiles per launch {KEY_TILES[KEY_WHOLE]}\n")
    print(f"| stage ({a.B}x{a.T}, {torch.cuda.get_device_name()}) | ms |")
    print("|---|---|")
    for name, fn in rows:   # each row as it is timed: a failure or the call's time limit loses only the rest
        try:
            print(f"| {name} | {bench(fn):.3f} |", flush=True)
        except Exception as exc:  # a tiling this Triton cannot build is a result too
            print(f"| {name} | failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]} |", flush=True)
    guard_report(bwd, s, w)
    # the kernels by device time: ours, and FLA's where it is installed (where the two pipelines'
    # stages differ in time, not only in total); at g - 2 the value and key kernels' float16 products
    # cost time where at the benchmark's gates they save it (2026-12-07): which kernel, is here
    runs = [("gdn2: backward (intra recomputed)", bwd(s)),
            ("gdn2: backward at g - 2 (every chunk walks)", bwd(w)),
            ("gdn2: inference forward (no_grad, bfloat16 output)", lambda: ours(x)),
            ("gdn2: training step (forward + backward, autograd)", train_step(ours, x))]
    if not a.no_fla and importlib.util.find_spec("fla") is not None:
        from importlib import metadata
        try:
            fla = f"FLA {metadata.version('fla-core')} chunk_gdn2"
        except metadata.PackageNotFoundError:
            fla = "FLA chunk_gdn2"
        runs += [(f"{fla}: inference forward", lambda: fla_chunk(x)), (f"{fla}: training step", train_step(fla_chunk, x))]
    for what, fn in runs:
        try:
            fn()
            torch.cuda.synchronize()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                fn()
                torch.cuda.synchronize()
        except Exception as exc:  # an FLA without chunk_gdn2, say: the lists before it stand
            print(f"\n{what}: failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}", flush=True)
            continue
        print(f"\n{what}:")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14), flush=True)


def guard_report(bwd, *inputs):
    """How many chunks (times key heads) the value and key kernels' range guard flagged, per
    launch, at the benchmark's gates and at g - 2: each flagged one is made again three-pass."""
    from gdn2.testing import RecordedLaunches
    for name, t in zip(("benchmark's gates", "g - 2"), inputs):
        value = RecordedLaunches(backward.chunk_bwd_value_kernel)
        key = RecordedLaunches(backward.chunk_bwd_key_kernel)
        with mock.patch.object(backward, "chunk_bwd_value_kernel", value), \
                mock.patch.object(backward, "chunk_bwd_key_kernel", key):
            bwd(t)()
        print(f"\nrange guard at the {name} (GUARD, chunks x key heads flagged) of "
              f"{t.chunks.count * t.q.shape[1]}: value {value.seen}, key {key.seen}", flush=True)


def train_step(fn, x):
    """One forward and backward of ``fn`` (gradients enabled inside, whatever the caller's mode)."""
    with torch.enable_grad():
        xg = {n: t.detach().clone().requires_grad_(True) for n, t in x.items()}
        do = torch.randn_like(fn(xg)[0])

    def run():
        with torch.enable_grad():
            out, _ = fn(xg)
            torch.autograd.grad(out, list(xg.values()), do, allow_unused=True)
    return run

if __name__ == "__main__":
    with torch.no_grad():
        main()
