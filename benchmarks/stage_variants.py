"""Where the time goes inside the key kernel and the intra stage: times variants of each with
one part switched off or replaced (the pairwise-decay tile as a cumulative product), and the
warp counts of the sequential state kernels (2x8K, bf16,
H = 16, K = V = 128). The variants are built from the kernels' current source by inserting
compile-time switches into a temporary copy, so the library's kernels carry no profiling flags;
a change to a marked line makes this script fail rather than time something else.

    python benchmarks/stage_variants.py ["2 stages" "bf16x3" ...]   # all variants, or those named
"""

import importlib.util
import inspect
import re
import sys
import tempfile
import textwrap
from pathlib import Path

import torch
import triton

from gdn2.bench.gpu import make_inputs, stage_inputs
from gdn2.ops.gdn2.triton import backward, intra, key, state
from gdn2.ops.gdn2.triton.backward import chunk_bwd_value_kernel, chunk_state_bwd_kernel, chunk_state_pair_kernel
from gdn2.ops.gdn2.triton.chunk import AQK_FLOAT16, BT
from gdn2.ops.gdn2.triton.common import diag_span
from gdn2.ops.gdn2.triton.intra import chunk_intra_fwd
from gdn2.ops.gdn2.triton.l2norm import l2norm
from gdn2.ops.gdn2.triton.state import chunk_state_fwd_kernel


def find(src: str, marker: str, start: int = 0) -> int:
    if marker not in src[start:]:
        raise SystemExit(f"stage_variants: kernel source changed, marker not found: {marker.strip()[:70]!r}")
    return src.index(marker, start)


def replace(src: str, old: str, new: str) -> str:
    find(src, old)
    return src.replace(old, new, 1)


PAIRWISE = "b_D = tl.where(lower, tl.exp(tl.cumsum(tl.where(below, b_g[:, None, :], 0.0), axis=0)), 0.0)"
# the same tile as a running product of per-row decays: one exponential per row instead of one
# per pair (no cancellation either: a product of factors <= 1)
CUMPROD = "b_D = tl.where(lower, tl.cumprod(tl.where(below, tl.exp(b_g)[:, None, :], 1.0), axis=0), 0.0)"


def with_cumprod(src: str) -> str:
    """Put the pairwise-decay tile under a CUMPROD switch (the kernel's line, or the product)."""
    at = find(src, PAIRWISE)
    indent = src[src.rindex("\n", 0, at) + 1:at]
    return replace(src, PAIRWISE, f"if CUMPROD:\n{indent}    {CUMPROD}\n{indent}else:\n{indent}    {PAIRWISE}")


def module_source(module) -> str:
    """A kernel module's source with its relative imports made absolute (it is loaded from a file)."""
    s = inspect.getsource(module).replace("from . import ", "from gdn2.ops.gdn2.triton import ")
    return s.replace("from .", "from gdn2.ops.gdn2.triton.")


def with_switches(src: str, switches: dict) -> str:
    """Module-level compile-time switches before the first kernel (the kernels' helpers read them)."""
    lines = "".join(f"{name}: tl.constexpr = tl.constexpr({value!r})\n" for name, value in switches.items())
    at = find(src, "@triton.jit")
    return src[:at] + lines + "\n\n" + src[at:]


KEY_SWITCHES = dict(DIAG=True, EARLY=True, LATE=True, CUMPROD=False, DOTS=1)
INTRA_SWITCHES = dict(OFF=True, DIAG=True, SOLVE=True, SUBST=True, NEUMANN=True, CUMPROD=False, DOTS=1)


def key_source(**switches) -> str:
    """The key kernel with DIAG (diagonal blocks), EARLY and LATE (the two block loops) switches,
    acting on the sub-block walk (the whole-chunk form has none)."""
    s = module_source(key)
    s = with_dots(with_switches(s, {**KEY_SWITCHES, **switches}))
    start = find(s, "        # pairs inside block i")
    end = find(s, "        # earlier blocks", start)
    zeros = "".join(f"        {n} = tl.zeros([SUB, BK], dtype=tl.float32)\n" for n in ("b_pq", "b_pk", "b_pe", "b_pke", "b_ady"))
    s = s[:start] + zeros + "        if DIAG:\n" + textwrap.indent(s[start:end], "    ") + s[end:]
    s = with_cumprod(replace(s, "for i_j in range(0, i):", "for i_j in range(0, i * EARLY):"))
    return replace(s, "for j in range(i + 1, NB):", "for j in range(i + 1, NB * LATE):")


def intra_source(**switches) -> str:
    """The intra kernel with OFF, DIAG (on the sub-block walk) and SOLVE switches (the gated
    operands: its own FUSE_GATED); inside the solve, SUBST (the diagonal blocks' substitution) and
    NEUMANN (the four block products)."""
    s = module_source(intra)
    s = with_cumprod(with_dots(with_switches(s, {**INTRA_SWITCHES, **switches})))
    s = replace(s, "            if i_b > 0:\n", "            if i_b * OFF > 0:\n")
    start = find(s, "            b_lft, b_rgt, b_span = centred_factors(b_lc)")
    end = find(s, "        # the rows' columns outside the block", start)
    s = s[:start] + "            if DIAG:\n" + textwrap.indent(s[start:end], "    ") + s[end:]
    s = replace(s, "    for j in range(1, SUB):\n", "    for j in range(1, SUB * SUBST):\n")
    start = find(s, "    b_N = ")
    end = find(s, "    tl.debug_barrier()\n", start)
    s = s[:start] + "    b_A = b_P\n    if NEUMANN:\n" + textwrap.indent(s[start:end], "    ") + s[end:]
    return replace(s, "    if ERASE:\n        if mine:\n            if IN_REG:\n",
                   "    if ERASE and SOLVE:\n        if mine:\n            if IN_REG:\n")


STATE_SWITCHES = dict(DOTS=1, CACHED=False)
# a module's products (its ``tl.dot`` and ``common.mma`` calls) through ``walk_mma``: DOTS 1 as the
# library's, 2 ``mma``'s "f16" (one float16 pass; elsewhere than the forward walk timing only, as it
# rounds what the backward needs in float32), 3 its "f16x3" (the two-term float16 split; timing only
# here: without the walks' scale, values outside float16's range are lost), 0 none (row and column
# sums keep every operand's load and the chunk-to-chunk dependency, without the tensor cores)
WALK_DOT = """
from gdn2.ops.gdn2.triton.common import mma


@triton.jit
def walk_mma(a, b, PREC: tl.constexpr):
    if DOTS == 0:
        return tl.sum(a, 1)[:, None] + tl.sum(b, 0)[None, :]
    elif DOTS == 2:
        return mma(a, b, "f16")
    elif DOTS == 3:
        return mma(a, b, "f16x3")
    else:
        return mma(a, b, PREC)


@triton.jit
def walk_dot(a, b, input_precision: tl.constexpr = None):
    return walk_mma(a, b, input_precision)


"""


def with_dots(src: str) -> str:
    """Every product of a kernel module through ``walk_dot`` / ``walk_mma`` (the DOTS switch)."""
    at = find(src, "@triton.jit")
    return src[:at] + WALK_DOT + re.sub(r"\bmma\(", "walk_mma(", src[at:].replace("tl.dot(", "walk_dot("))


# per walk module: the line of its chunk loop after which the cached-loads row is set, and the loads
# that read it
CACHED_ROW = "t_ld = bos if CACHED else t0\n"
WALK_LOADS = {
    "state": ("    for t0 in range(bos, eos, BT):\n        ",
              ("load_write(v, w, t0,", "load_rows(A, t0,", "load_rows(y, t0,", "load_rows(kt, t0,",
               "load_rows(Aqk, t0,", "load_rows(qg, t0,", "tl.store(o + (t0 +")),
    "backward": ("        t0 = bos + idx * BT\n        ",
                 ("tl.load(do + (t0 +", "load_rows(Aqk, t0,", "load_rows(kt, t0,", "load_rows(qg, t0,",
                  "load_rows(y, t0,")),
}


def walk_source(module, **switches) -> str:
    """A walk's module (``state``: the forward walk; ``backward``: the reverse walk) with DOTS (the
    products: see WALK_DOT) and CACHED (every chunk operand the walk loads, and the forward's o,
    at the sequence's first chunk every step: served by the caches, so the walk without its memory
    traffic; the per-chunk decays and the reverse walk's dh and dR stores stay) switches."""
    s = module_source(module)
    s = with_dots(with_switches(s, {**STATE_SWITCHES, **switches}))
    line, loads = WALK_LOADS[module.__name__.rsplit(".", 1)[1]]
    s = replace(s, line, line + CACHED_ROW + line.rsplit("\n", 1)[1])
    for call in loads:   # the first occurrence of each is the walk's (state_fwd, state_bwd)
        s = replace(s, call, call.replace("t0", "t_ld"))
    return s


# the patched source of each kind of variant
SOURCES = {"key": key_source, "intra": intra_source,
           "state": lambda **sw: walk_source(state, **sw), "reverse": lambda **sw: walk_source(backward, **sw)}


class Variants:
    """Kernel modules built from the patched sources, one per combination of switches (loaded on
    first use: each is a separate Triton compilation)."""

    def __init__(self, folder: Path):
        self.folder, self.modules = folder, {}

    def get(self, kind: str, switches: dict):
        key = (kind, tuple(sorted(switches.items())))
        if key not in self.modules:
            source = SOURCES[kind](**switches)
            self.modules[key] = load(f"{kind}_variants_{len(self.modules)}", source, self.folder)
        return self.modules[key]

    def split(self, kind: str, flags: dict):
        """``flags`` -> (the module for its switches, the rest as launch arguments)."""
        names = {"key": KEY_SWITCHES, "intra": INTRA_SWITCHES}.get(kind, STATE_SWITCHES)
        switches = {n: flags.pop(n) for n in list(flags) if n in names}
        return self.get(kind, switches), flags


def load(name: str, source: str, folder: Path):
    path = folder / f"{name}.py"
    path.write_text(source)  # Triton's JIT reads kernel source from a real file
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def state_runners(s, A, Aqk, gated):
    """Launchers of the state kernels over stage inputs ``s`` (``stage_inputs``) with the intra
    stage's outputs: ``state_run(nw, prec, recompute, ns=1, BV=32)``, ``state_bwd_run(nw, prec, ns=1,
    BV=32)``, ``state_pair_run(BV=32)`` (the backward's recompute and reverse walk in one launch, as
    used), and the buffers they write (o, dh, dr) and read (do); ``f16`` reads float16 gated operands."""
    vf, wf, cu, chunks, modes = s.v, s.w, s.cu, s.chunks, s.modes
    T, H, K = s.k.shape
    f32 = dict(dtype=torch.float32, device="cuda")
    o = torch.empty_like(vf)

    # the one-pass walk's operands as the forward stores them now (float16 Q_γ, K_tail, Y)
    half = tuple(t.half() if i < 3 and t is not None else t for i, t in enumerate(gated))

    def state_run(nw, prec, recompute, ns=1, BV=32, f16=False, module=None):
        h = torch.empty(chunks.count, H, K, K, **f32) if recompute else o
        r = torch.empty(T, H, K, **f32) if recompute else o
        kernel = chunk_state_fwd_kernel if module is None else module.chunk_state_fwd_kernel
        grid = (cu.numel() - 1, H, triton.cdiv(K, BV))
        # float16 products with the range guard's record and scale, as the library runs them (its
        # second walk, where nothing is recorded, returns at once, and the scale's reductions: not
        # timed here)
        guard = dict(flag=torch.empty(grid[0] * grid[1] * grid[2], dtype=torch.int32, device="cuda"),
                     zscale=torch.ones(grid[0], H, device="cuda"), GUARD=1) if prec == "f16" else {}
        return lambda: kernel[grid](
            *(half if f16 else gated), vf, wf, A, Aqk, o, o, o, h, r, cu, chunks.first, H=H, HV=H, K=K, V=K, BT=BT, BK=K, BV=BV,
            B_MODE=modes[1], W_MODE=modes[2], USE_H0=False, STORE_HT=False, STORE_O=not recompute, STORE_H=recompute,
            STORE_R=recompute, PREC=prec, num_warps=nw, num_stages=ns, **guard)

    dh, dr, do = torch.empty(chunks.count, H, K, K, **f32), torch.empty(T, H, K, **f32), torch.randn_like(vf)

    def state_bwd_run(nw, prec="tf32x3", ns=1, BV=32, module=None):
        kernel = chunk_state_bwd_kernel if module is None else module.chunk_state_bwd_kernel
        return lambda: kernel[(cu.numel() - 1, H, triton.cdiv(K, BV))](
            *gated, Aqk, do, o, dh, o, dr, cu, chunks.first, H=H, HV=H, K=K, V=K, BT=BT, BK=K, BV=BV,
            B_MODE=modes[1], USE_DHT=False, STORE_DH0=False, PREC=prec, num_warps=nw, num_stages=ns)

    def state_pair_run(BV=32, module=None, prec="tf32x3"):
        h, r = torch.empty(chunks.count, H, K, K, **f32), torch.empty(T, H, K, **f32)
        kernel = chunk_state_pair_kernel if module is None else module.chunk_state_pair_kernel
        return lambda: kernel[(cu.numel() - 1, H, 2 * triton.cdiv(K, BV))](
            *gated, vf, wf, A, Aqk, o, h, r, do, o, dh, o, dr, cu, chunks.first, H=H, HV=H, K=K, V=K, BT=BT, BK=K,
            BV=BV, B_MODE=modes[1], W_MODE=modes[2], USE_H0=False, USE_DHT=False, STORE_DH0=False, PREC=prec,
            num_warps=4, num_stages=1)

    return state_run, state_bwd_run, state_pair_run, (o, dh, dr, do)


def long_sequence_rows():
    """The state kernels at 1x16K, where one sequence x 16 heads x 4 value tiles of 32 columns is 64
    programs for 132 multiprocessors, against 16-column tiles (128 programs). 16-column state tiles
    raised an illegal address on an H100 under Triton 3.6 once (2026-11-25): these rows run last."""
    x = make_inputs(1, 16384)
    s = stage_inputs(x, l2norm(x["q"]), l2norm(x["k"]))
    A, Aqk, gated = chunk_intra_fwd(s.q, s.k, s.g, s.b, s.scale, s.chunks, s.modes[0], s.modes[1], prec="tf32x3")
    state_run, state_bwd_run, state_pair_run, _ = state_runners(s, A, Aqk, gated)
    return [(f"1x16K: {name}, {BV} value columns", run)
            for BV in (32, 16)
            for name, run in (("state fwd (o, one-pass, float16 operands, 2 stages: as used)",
                               state_run(4, "f16" if state.F16_PRODUCTS else "tf32", False, ns=2, BV=BV, f16=True)),
                              ("state fwd recompute (three-pass), 4 warps", state_run(4, "tf32x3", True, BV=BV)),
                              ("state bwd (three-pass), 4 warps", state_bwd_run(4, BV=BV)),
                              ("state pair (recompute + bwd, one launch, used)", state_pair_run(BV=BV)))]


def main(only=()):
    """``only``: time just the variants whose names contain one of these words."""
    variants = Variants(Path(tempfile.mkdtemp()))
    for kind in ("key", "intra", "state", "reverse"):   # the sources still take every switch
        variants.get(kind, {})
    if not torch.cuda.is_available():
        print("variants built; timing needs a CUDA device")
        return 0
    bench = lambda fn: triton.testing.do_bench(fn, warmup=5, rep=30, return_mode="median")  # noqa: E731
    x = make_inputs(2, 8192)
    s = stage_inputs(x, l2norm(x["q"]), l2norm(x["k"]))
    qf, kf, vf, gf, bf, wf, chunks, modes, scale = s.q, s.k, s.v, s.g, s.b, s.w, s.chunks, s.modes, s.scale
    T, H, K = kf.shape
    A, Aqk, gated = chunk_intra_fwd(qf, kf, gf, bf, scale, chunks, modes[0], modes[1], prec="tf32x3")
    stride = (3 * BT + 1) * K + 2 * BT * BT
    scratch = torch.randn(chunks.count, H, stride, device="cuda") * 0.01
    dq, dk, dg, db = torch.empty_like(qf), torch.empty_like(kf), torch.empty_like(gf), torch.empty(bf.shape, device="cuda")
    f32 = dict(dtype=torch.float32, device="cuda")

    def key_run(BK, nw, DIAG_SPAN=diag_span("tf32x3"), PREC="tf32x3", ns=1, **flags):
        kv, flags = variants.split("key", flags)
        return lambda: kv.chunk_bwd_key_kernel[(chunks.count, H, triton.cdiv(K, BK))](
            qf, kf, gf, bf, A, scratch, dq, dk, dg, db, chunks.start, chunks.end, scale, H=H, K=K, BT=BT, BK=BK, SUB=16,
            SCRATCH=stride, G_MODE=modes[0], B_MODE=modes[1], PREC=PREC, DIAG_SPAN=DIAG_SPAN, num_warps=nw,
            num_stages=ns, **flags)

    outs = [torch.empty(T, H, BT, **f32) for _ in range(2)] + [torch.empty(T, H, K, **f32) for _ in range(3)]
    dec = torch.empty(chunks.count, H, K, **f32)

    outs16 = [outs[1].half()] + [t.half() for t in outs[2:]]   # Aqk, then the gated operands

    def intra_run(BK=32, nw=4, DIAG_SPAN=None, ns=1, prec="tf32", f16=False, **flags):
        """``f16``: the fused gated operands stored as float16 (as the one-pass forward keeps them), Aqk
        too where ``chunk.AQK_FLOAT16``; the solve's form the library's for ``prec`` unless given."""
        iv, flags = variants.split("intra", flags)
        flags.setdefault("SOLVE_FORM", intra.solve_form(prec))
        aqk = outs16[0] if prec == "tf32" and AQK_FLOAT16 else outs[1]
        bufs = [outs[0], aqk] + (outs16[1:] if f16 else outs[2:])
        return lambda: iv.chunk_intra_fwd_kernel[(chunks.count, H)](
            qf, kf, gf, bf, *bufs, dec, chunks.start, chunks.end, scale, H=H, K=K, BT=BT, BK=BK, SUB=16,
            G_MODE=modes[0], B_MODE=modes[1], PREC=prec, DIAG_SPAN=diag_span(prec) if DIAG_SPAN is None else DIAG_SPAN,
            num_warps=nw, num_stages=ns, **flags)

    def gated_run(BK=32, nw=4, prec="tf32", f16=False, DOTS=1):
        kernel = (intra if DOTS == 1 else variants.get("intra", {"DOTS": DOTS})).chunk_gated_kernel
        return lambda: kernel[(chunks.count * triton.cdiv(K, BK), H)](
            qf, kf, gf, bf, outs[0], *(outs16[1:] if f16 else outs[2:]), dec, chunks.start, chunks.end, scale, H=H, K=K, BT=BT, BK=BK,
            G_MODE=modes[0], B_MODE=modes[1], PREC=prec, num_warps=nw, num_stages=1)

    def split_run(maxnreg=None, prec="tf32", forms=(0,), **kw):
        """The intra kernel (one launch per whole-chunk FORM) then the gated-operands kernel."""
        firsts = [intra_run(FUSE_GATED=False, prec=prec, FORM=form, **({"maxnreg": maxnreg} if maxnreg else {}))
                  for form in forms]
        second = gated_run(prec=prec, **kw)
        return lambda: ([first() for first in firsts], second())

    def intra_forms(forms, **flags):
        """The intra kernel as one launch per whole-chunk FORM."""
        runs = [intra_run(FORM=form, **flags) for form in forms]
        return lambda: [run() for run in runs]

    def key_forms(BK, nw, forms, **kw):
        """The key kernel as one launch per whole-chunk FORM (two: the split form); ``BK`` the columns
        of every launch, or a tuple of them per launch (as ``backward.KEY_TILES``)."""
        blocks = BK if isinstance(BK, tuple) else (BK,) * len(forms)
        runs = [key_run(bk, nw, FORM=form, **kw) for bk, form in zip(blocks, forms)]
        return lambda: [run() for run in runs]

    state_run, state_bwd_run, state_pair_run, (o, dh, dr, do) = state_runners(s, A, Aqk, gated)

    def walk_run(BV=32, prec=None, **switches):
        """The one-pass walk as the library runs it (float16 operands, two stages; its products'
        precision ``prec``, default the library's) with ``switches``."""
        prec = prec or ("f16" if state.F16_PRODUCTS else "tf32")
        return state_run(4, prec, False, ns=2, BV=BV, f16=True, module=variants.get("state", switches))

    def reverse_run(**switches):
        """The reverse walk as the backward runs it (three-pass, alone rather than paired) with ``switches``."""
        return state_bwd_run(4, module=variants.get("reverse", switches))

    h = torch.randn(chunks.count, H, K, K, **f32)
    dv, dw = torch.empty_like(vf), torch.empty(wf.shape, **f32)

    def value_run(BK, BV, nw, ns=1, prec="tf32x3", module=None):
        kernel = chunk_bwd_value_kernel if module is None else module.chunk_bwd_value_kernel
        return lambda: kernel[(chunks.count, H, triton.cdiv(K, BK) + 1)](
            vf, wf, A, h, dh, dr, dr, do, dv, dw, scratch, chunks.start, chunks.end, H=H, HV=H, K=K, V=K, BT=BT,
            BK=BK, BV=BV, SCRATCH=stride, B_MODE=modes[1], W_MODE=modes[2], PREC=prec, num_warps=nw, num_stages=ns)

    rows = [
        ("key, 64 columns, 8 warps: all", key_run(64, 8)),
        ("key, 64 columns, 8 warps: without the diagonal blocks", key_run(64, 8, DIAG=False)),
        ("key, 64 columns, 8 warps: without the earlier-block loop", key_run(64, 8, EARLY=False)),
        ("key, 64 columns, 8 warps: without the later-block loop", key_run(64, 8, LATE=False)),
        ("key, 64 columns, 8 warps: without products", key_run(64, 8, DIAG=False, EARLY=False, LATE=False)),
        ("key, 64 columns, 4 warps: all", key_run(64, 4)),
        # the whole-chunk form (this run's gates span ~5 over a chunk: every key tile takes it)
        # in one launch with the walk (attempt 24), and split (attempt 25: a launch compiled with the
        # whole form alone, then one with the walk for the rest, here empty)
        ("key, 64 columns, 4 warps: whole-chunk form", key_run(64, 4, FORM=1)),
        ("key, 64 columns, 8 warps: whole-chunk form", key_run(64, 8, FORM=1)),
        ("key, 32 columns, 4 warps: whole-chunk form", key_run(32, 4, FORM=1)),
        ("key, 32 columns, 8 warps: whole-chunk form", key_run(32, 8, FORM=1)),
        ("key, 16 columns, 4 warps: whole-chunk form", key_run(16, 4, FORM=1)),
        ("key, 64 columns, 8 warps: whole-chunk form, split launches", key_forms(64, 8, (2, 3))),
        ("key, 32 columns, 8 warps: whole-chunk form, split launches", key_forms(32, 8, (2, 3))),
        ("key, 32 columns, 4 warps: whole-chunk form, split launches", key_forms(32, 4, (2, 3))),
        ("key, 16 columns, 4 warps: whole-chunk form, split launches", key_forms(16, 4, (2, 3))),
        ("key, 16 columns, 8 warps: whole-chunk form, split launches", key_forms(16, 8, (2, 3))),
        # register caps (the intra kernel gained 14% from three programs a multiprocessor)
        ("key, 64 columns, 4 warps: capped at 168 registers", key_run(64, 4, maxnreg=168)),
        ("key, 64 columns, 4 warps: capped at 128 registers", key_run(64, 4, maxnreg=128)),
        ("key, 32 columns, 4 warps: capped at 128 registers", key_run(32, 4, maxnreg=128)),
        ("key, 128 columns, 8 warps: all", key_run(128, 8)),
        ("key, 32 columns, 4 warps: all", key_run(32, 4)),
        ("key, 64 columns, 4 warps: every diagonal block as a pairwise tile", key_run(64, 4, DIAG_SPAN=-1.0)),
        ("key, 64 columns, 4 warps: pairwise tiles by cumulative product", key_run(64, 4, DIAG_SPAN=-1.0, CUMPROD=True)),
        ("intra (one-pass): all, gated operands fused (used until attempt 21)", intra_run()),
        ("intra (one-pass): split, intra then the gated-operands kernel (attempt 21)", split_run()),
        # split, intra needs 202 registers (ptxas, sm_90a): capped at 168, three programs fit a
        # multiprocessor instead of two (64 bytes of spill stores)
        ("intra (one-pass): split, intra capped at 168 registers", split_run(maxnreg=168)),
        ("intra (one-pass): split, capped, float16 gated operands (used)", split_run(maxnreg=168, f16=True)),
        # the whole-chunk form (span of this run's gates over a chunk ~5, so every chunk takes it)
        ("intra (one-pass): whole-chunk form, split, capped, float16 gated operands",
         split_run(maxnreg=168, f16=True, forms=(1,))),
        ("intra (one-pass): whole-chunk form, split, float16 gated operands", split_run(f16=True, forms=(1,))),
        ("intra (three-pass): whole-chunk form, split", split_run(prec="tf32x3", forms=(1,))),
        ("intra (one-pass): whole-chunk form, split launches, capped, float16 gated operands",
         split_run(maxnreg=168, f16=True, forms=(2, 3))),
        ("intra (one-pass): whole-chunk form, split launches, float16 gated operands",
         split_run(f16=True, forms=(2, 3))),
        ("intra (three-pass): whole-chunk form, split launches", split_run(prec="tf32x3", forms=(2, 3))),
        # the gated operands inside the whole-form launch (255 registers, no spills one-pass) against
        # their own kernel, both with float32 operands
        ("intra (one-pass): whole-chunk form, split launches, float32 gated operands", split_run(forms=(2, 3))),
        ("intra (one-pass): whole-chunk form, split launches, gated operands fused (float32)",
         intra_forms((2, 3), FUSE_GATED=True)),
        ("intra (one-pass): whole-chunk form, split launches, gated operands fused (float16)",
         intra_forms((2, 3), FUSE_GATED=True, f16=True)),
        # the three-pass intra (training forward, backward) is not capped: measure it first
        ("intra (three-pass): split", split_run(prec="tf32x3")),
        ("intra (three-pass): split, intra capped at 168 registers", split_run(maxnreg=168, prec="tf32x3")),
        ("intra (three-pass): split, intra capped at 192 registers", split_run(maxnreg=192, prec="tf32x3")),
        ("intra alone, split, capped at 168 registers", intra_run(FUSE_GATED=False, maxnreg=168)),
        ("gated-operands kernel alone: 32 columns, 4 warps, float32 out (the backward's)", gated_run()),
        ("gated-operands kernel alone: 32 columns, 4 warps, float16 out (one-pass forward)", gated_run(f16=True)),
        ("gated-operands kernel alone: 64 columns, 4 warps", gated_run(BK=64)),
        ("gated-operands kernel alone: 32 columns, 2 warps", gated_run(nw=2)),
        ("intra: without off-diagonal products", intra_run(OFF=False)),
        ("intra: without diagonal blocks", intra_run(DIAG=False)),
        ("intra: without the solve", intra_run(SOLVE=False)),
        ("intra: without the gated operands", intra_run(FUSE_GATED=False)),
        ("intra: nothing but loads and stores", intra_run(OFF=False, DIAG=False, SOLVE=False, FUSE_GATED=False)),
        ("intra: every diagonal block as a pairwise tile", intra_run(DIAG_SPAN=-1.0)),
        ("intra: pairwise tiles by cumulative product", intra_run(DIAG_SPAN=-1.0, CUMPROD=True)),
        ("intra: 16 columns, 4 warps", intra_run(BK=16)),
        ("intra: 32 columns, 8 warps", intra_run(nw=8)),
        ("state fwd (o, one-pass): 4 warps, float32 operands (used until attempt 23)", state_run(4, "tf32", False)),
        ("state fwd (o, one-pass): 4 warps, float16 operands (attempt 23), one-pass TF32 products", state_run(4, "tf32", False, f16=True)),
        ("state fwd (o, one-pass): 4 warps, float16 operands, 2 stages", state_run(4, "tf32", False, ns=2, f16=True)),
        ("state fwd (o, one-pass): 4 warps, float16 operands, 64 value columns",
         state_run(4, "tf32", False, BV=64, f16=True)),
        ("state fwd (o, one-pass): 8 warps", state_run(8, "tf32", False)),
        ("state fwd recompute (h, R, three-pass): 4 warps", state_run(4, "tf32x3", True)),
        # the walk without the output (FLA's split: o from the stored states in a parallel kernel):
        # what the serial part would cost in a one-pass forward
        ("state fwd without o (h, R, one-pass): 4 warps, float16 operands", state_run(4, "tf32", True, f16=True)),
        ("state fwd recompute (h, R, three-pass): 8 warps", state_run(8, "tf32x3", True)),
        # the walk's anatomy (FLA's walks a chunk in 1.8 us, ours in 5.1: the 1614 results file):
        # products on float16 operands as FLA's bfloat16 ones, no products (which also leaves the
        # two-stage prefetch nothing to overlap: Triton pipelines loads feeding a dot), no memory traffic
        ("walk anatomy: as used (float16 operands, 2 stages)", walk_run()),
        ("walk anatomy: one-pass TF32 products", walk_run(prec="tf32")),
        ("walk anatomy: float16 products", walk_run(prec="f16")),
        ("walk anatomy: float16 products, 64 value columns", walk_run(BV=64, prec="f16")),
        # twice the programs (256 at 2x8K: two a multiprocessor fit, by registers and shared memory),
        # half the work each: does the walk gain from a second program to hide its latency?
        ("walk anatomy: 16 value columns", walk_run(BV=16)),
        ("walk anatomy: no products (nor prefetch)", walk_run(DOTS=0)),
        ("walk anatomy: loads from the caches", walk_run(CACHED=True)),
        ("walk anatomy: no products (nor prefetch), loads from the caches", walk_run(DOTS=0, CACHED=True)),
        # the reverse walk, alone (the backward pairs it with the recompute: 1.43 ms alone, 2.38
        # paired): what three passes cost
        ("walk anatomy, reverse: alone, three-pass (as the pair runs it)", reverse_run()),
        ("walk anatomy, reverse: one-pass TF32", state_bwd_run(4, "tf32", module=variants.get("reverse", {}))),
        ("walk anatomy, reverse: float16 products", reverse_run(DOTS=2)),
        ("walk anatomy, reverse: no products", reverse_run(DOTS=0)),
        ("walk anatomy, reverse: loads from the caches", reverse_run(CACHED=True)),
        # the whole-chunk forms' launches (one-pass intra as the inference forward runs it): the
        # solve's share, and what the second launch costs where every program returns at once
        # (it recomputes the chunk's decay span to decide; a flag from the first launch would not)
        ("intra anatomy: whole form launch (one-pass, capped: as used)",
         intra_run(FORM=2, FUSE_GATED=False, maxnreg=168)),
        ("intra anatomy: whole form launch without the solve", intra_run(FORM=2, FUSE_GATED=False, maxnreg=168,
                                                                          SOLVE=False)),
        # the solve's two steps (0.2 ms of the launch's 0.57 at 2x8K, 2026-12-06): the 15-step
        # substitution of the 16x16 diagonal blocks, then the four 64x64 block products
        ("intra anatomy: whole form launch, blocks solve", intra_run(FORM=2, FUSE_GATED=False, maxnreg=168,
                                                                     SOLVE_FORM="blocks")),
        ("intra anatomy: whole form launch, blocks solve without the substitution",
         intra_run(FORM=2, FUSE_GATED=False, maxnreg=168, SUBST=False, SOLVE_FORM="blocks")),
        ("intra anatomy: whole form launch, blocks solve without the block products",
         intra_run(FORM=2, FUSE_GATED=False, maxnreg=168, NEUMANN=False, SOLVE_FORM="blocks")),
        ("intra anatomy: whole form launch, halving solve (intra.SOLVE_FORM)",
         intra_run(FORM=2, FUSE_GATED=False, maxnreg=168, SOLVE_FORM="halving")),
        ("intra anatomy: whole form launch, three-pass (training, used)",
         intra_run(FORM=2, FUSE_GATED=False, prec="tf32x3", DIAG_SPAN=diag_span("tf32x3"))),
        ("intra anatomy: whole form launch, three-pass, halving solve",
         intra_run(FORM=2, FUSE_GATED=False, prec="tf32x3", DIAG_SPAN=diag_span("tf32x3"), SOLVE_FORM="halving")),
        ("intra anatomy: walk-for-the-rest launch, every program returning",
         intra_run(FORM=3, FUSE_GATED=False, maxnreg=168)),
        ("key anatomy: walk-for-the-rest launch (64 columns), every program returning", key_run(64, 4, FORM=3)),
        # what three passes cost the backward's parallel kernels, as used (the criterion needs them)
        ("three passes: key, split whole-chunk form on (32, 64) columns (used)", key_forms((32, 64), 4, (2, 3))),
        ("three passes: key, split whole-chunk form on (32, 64) columns, one-pass TF32",
         key_forms((32, 64), 4, (2, 3), PREC="tf32", DIAG_SPAN=diag_span("tf32"))),
        # the backward's gated operands (three-pass): 255 registers and 132 bytes of spill stores on
        # 4 warps with Triton 3.6 (the card's; none with 3.7), 154 registers and none on 8
        ("three passes: gated operands (the backward's), 4 warps (used)", gated_run(prec="tf32x3")),
        ("three passes: gated operands (the backward's), 8 warps", gated_run(nw=8, prec="tf32x3")),
        ("three passes: value, 64 key rows, 2 stages (used)", value_run(64, 32, 4, ns=2)),
        ("three passes: value, 64 key rows, 2 stages, one-pass TF32", value_run(64, 32, 4, ns=2, prec="tf32")),
        # ("hilo") products on float16 operands: one pass (where the outputs are bfloat16: the inference
        # forward's intra and gated kernels), and a two-term split (hi*hi + hi*lo + lo*hi, ~22 bits:
        # the lead for the three-pass kernels, twice the rate of TF32 and half its operand bytes a
        # term; timed here without the scaling that would keep gradients in float16's range)
        ("hilo: intra whole form, one-pass TF32 (inference, used)",
         intra_run(FORM=2, FUSE_GATED=False, maxnreg=168)),
        ("hilo: intra whole form, float16 one pass", intra_run(FORM=2, FUSE_GATED=False, maxnreg=168,
                                                                          DOTS=2)),
        ("hilo: gated operands, one-pass TF32 (inference, used)", gated_run(f16=True)),
        ("hilo: gated operands, float16 one pass", gated_run(f16=True, DOTS=2)),
        ("hilo: intra whole form, three-pass TF32 (training, used)",
         intra_run(FORM=2, FUSE_GATED=False, prec="tf32x3", DIAG_SPAN=diag_span("tf32x3"))),
        ("hilo: intra whole form, float16 hi/lo", intra_run(FORM=2, FUSE_GATED=False, prec="tf32x3",
                                                                       DIAG_SPAN=diag_span("tf32x3"), DOTS=3)),
        ("hilo: gated operands (the backward's), three-pass TF32 (used)", gated_run(prec="tf32x3")),
        ("hilo: gated operands (the backward's), float16 hi/lo", gated_run(prec="tf32x3", DOTS=3)),
        ("hilo: key, split form on (32, 64) columns, three-pass TF32 (used)", key_forms((32, 64), 4, (2, 3))),
        ("hilo: key, split form on (32, 64) columns, float16 hi/lo", key_forms((32, 64), 4, (2, 3), DOTS=3)),
        ("hilo: value, 64 key rows, 2 stages, three-pass TF32 (used)", value_run(64, 32, 4, ns=2)),
        ("hilo: value, 64 key rows, 2 stages, float16 hi/lo",
         value_run(64, 32, 4, ns=2, module=variants.get("reverse", {"DOTS": 3}))),
        ("hilo: state pair, three-pass TF32 (used)", state_pair_run()),
        # both walks ("f16x3" in common.mma, as backward.PAIR_PRODUCTS runs them, without its scales' two
        # reductions and the guard's second launch)
        ("hilo: state pair, float16 hi/lo", state_pair_run(prec="f16x3")),
        ("hilo: reverse walk alone, float16 hi/lo", state_bwd_run(4, "f16x3")),
        ("state bwd (three-pass): 4 warps", state_bwd_run(4)),
        ("state pair (recompute + bwd in one launch, used): 4 warps", state_pair_run()),
        ("state bwd (three-pass): 8 warps", state_bwd_run(8)),
        ("value (three-pass): 32 key rows, 32 value columns, 4 warps", value_run(32, 32, 4)),
        ("value: 32 key rows, 32 value columns, 8 warps", value_run(32, 32, 8)),
        ("value: 64 key rows, 32 value columns, 4 warps", value_run(64, 32, 4)),
        ("value: 32 key rows, 64 value columns, 4 warps", value_run(32, 64, 4)),
        ("value: 64 key rows, 64 value columns, 4 warps", value_run(64, 64, 4)),
        # split-bf16 products (Triton >= 3.6 on NVIDIA): bf16 tensor cores run at twice TF32's rate;
        # speed only here, their accuracy is for the GPU tests to judge
        ("key, 64 columns, 4 warps: bf16x3 products", key_run(64, 4, PREC="bf16x3")),
        ("key, 64 columns, 4 warps: bf16x6 products", key_run(64, 4, PREC="bf16x6")),
        ("state bwd, 4 warps: bf16x3 products", state_bwd_run(4, "bf16x3")),
        ("state bwd, 4 warps: bf16x6 products", state_bwd_run(4, "bf16x6")),
        # software pipelining: the serial state kernels load ~140 KB of chunk operands per step with
        # nothing in flight while the products run (num_stages=1 everywhere so far)
        ("state fwd (o, one-pass): 4 warps, 2 stages", state_run(4, "tf32", False, ns=2)),
        ("state fwd recompute (h, R, three-pass): 4 warps, 2 stages", state_run(4, "tf32x3", True, ns=2)),
        ("state bwd (three-pass): 4 warps, 2 stages", state_bwd_run(4, ns=2)),
        ("value (three-pass): 32 key rows, 32 value columns, 4 warps, 2 stages", value_run(32, 32, 4, ns=2)),
        ("value: 64 key rows, 32 value columns, 4 warps, 2 stages (used)", value_run(64, 32, 4, ns=2)),
        ("key, 64 columns, 4 warps: 2 stages", key_run(64, 4, ns=2)),
        ("intra (one-pass): 2 stages", intra_run(ns=2)),
    ]
    if not only or any("16K" in word for word in only):
        rows += long_sequence_rows()
    if only:
        rows = [(name, fn) for name, fn in rows if any(word in name for word in only)]
    print(f"| variant (2x8K, {torch.cuda.get_device_name()}) | ms |\n|---|---|")
    for name, fn in rows:
        try:
            print(f"| {name} | {bench(fn):.3f} |", flush=True)
        except Exception as exc:  # a precision or tiling this Triton cannot build is a result too
            print(f"| {name} | failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(tuple(sys.argv[1:])))
