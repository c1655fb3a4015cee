"""Compile every Triton kernel for sm_90 on a machine without a GPU and report shared memory
and registers (ptxas), so resource failures show up before a GPU call.

    PYTHONPATH=/tmp/tri36:. python scripts/compile_check.py   # after pip install --no-deps --target /tmp/tri36 triton==3.6.0

Run it with the Triton the card has (3.6.0 on the lent H100): registers and spills differ between
versions (3.6 spills in kernels where 3.7 does not).
"""

import re
import subprocess
import sys
import tempfile
import time

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from gdn2.ops.gdn2.triton.backward import (KEY_TILES, KEY_WARPS, chunk_bwd_value_kernel, chunk_state_bwd_kernel,
                                          chunk_state_pair_kernel)
from gdn2.ops.gdn2.triton.common import diag_span
from gdn2.ops.gdn2.triton.key import chunk_bwd_dt_kernel, chunk_bwd_key_kernel
from gdn2.ops.gdn2.triton.decode import fused_recurrent_fwd_kernel
from gdn2.ops.gdn2.triton.intra import chunk_gated_kernel, chunk_intra_fwd_kernel
from gdn2.ops.gdn2.triton.state import chunk_state_fwd_kernel, chunk_zmax_kernel, sequence_scale_kernel

SMEM_LIMIT = 232448
INT_ARGS = {"cu_seqlens", "chunk_first", "chunk_start", "chunk_end"}


def signature(fn, consts, dtype, overrides=None):
    sig = {}
    for name in fn.arg_names:
        if overrides and name in overrides:
            sig[name] = overrides[name]
        elif name in consts:
            sig[name] = "constexpr"
        elif name == "scale":
            sig[name] = "fp32"
        elif name in INT_ARGS:
            sig[name] = "*i32"
        elif name in ("q", "k", "v", "o", "do", "dq", "dk", "dv"):
            sig[name] = dtype
        else:
            sig[name] = "*fp32"
    return sig


def ptxas_registers(ptx: str) -> str:
    import glob
    import os
    ptxas = glob.glob(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/ptxas*"))[0]
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(ptx)
        f.flush()
        out = subprocess.run([ptxas, "-v", "--gpu-name=sm_90a", f.name, "-o", "/dev/null"],
                             capture_output=True, text=True).stderr
    regs = re.findall(r"Used (\d+) registers", out)
    spill = re.findall(r"(\d+) bytes spill stores", out)
    return f"regs {regs[-1] if regs else '?'} spill-stores {spill[-1] if spill else '?'}"


def check(fn, consts, dtype="*bf16", num_warps=4, num_stages=1, overrides=None, note=""):
    start = time.time()
    # compile-time parameters left out take their defaults (a launch does the same; named
    # nowhere, they would be typed as pointers)
    consts = {**{p.name: p.default for p in fn.params if p.is_constexpr and p.has_default}, **consts}
    ck = triton.compile(ASTSource(fn=fn, signature=signature(fn, consts, dtype, overrides), constexprs=consts),
                        target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps, num_stages=num_stages))
    smem = ck.metadata.shared
    flag = "OK" if smem <= SMEM_LIMIT else "OVER"
    tag = "" if "FUSE_GATED" not in consts else (" (fused)" if consts["FUSE_GATED"] else " (split)")
    tag += note
    # a cache seeded by scripts/triton_seed.py holds binaries without their ptx
    regs = ptxas_registers(ck.asm["ptx"]) if "ptx" in ck.asm else "registers unknown (cached binary, no ptx)"
    print(f"{fn.__name__ + tag:28s} {str(consts.get('K')):>4s} smem {smem:7d} {flag} {regs} "
          f"({time.time() - start:.0f}s)", flush=True)
    return smem <= SMEM_LIMIT


PREC = sys.argv[1] if len(sys.argv) > 1 else "tf32x3"
FORMS = {1: "both forms", 2: "whole only", 3: "walk for the rest"}


def main(Ks=(128, 256)):
    ok = True
    for K in Ks:
        BK = max(16, triton.next_power_of_2(K))
        gates = dict(G_MODE=2, B_MODE=2, W_MODE=2)
        for fuse in (False, True):   # the gated operands in their own launch (used) or inside
            ok &= check(chunk_intra_fwd_kernel, dict(H=16, K=K, BT=64, BK=min(32, BK), SUB=16, G_MODE=2, B_MODE=2,
                                                     PREC=PREC, DIAG_SPAN=diag_span(PREC), FUSE_GATED=fuse))
        for form, name in FORMS.items():   # the whole-chunk forms (common.FORM_*)
            ok &= check(chunk_intra_fwd_kernel, dict(H=16, K=K, BT=64, BK=min(32, BK), SUB=16, G_MODE=2, B_MODE=2,
                                                     PREC=PREC, DIAG_SPAN=diag_span(PREC), FUSE_GATED=False,
                                                     FORM=form), note=f" ({name})")
        # intra.SOLVE_FORM's halving solve (the one-pass solves' form) on a three-pass whole-chunk form
        ok &= check(chunk_intra_fwd_kernel, dict(H=16, K=K, BT=64, BK=min(32, BK), SUB=16, G_MODE=2, B_MODE=2,
                                                 PREC=PREC, DIAG_SPAN=diag_span(PREC), FUSE_GATED=False, FORM=2,
                                                 SOLVE_FORM="halving"), note=" (whole only, halving solve)")
        ok &= check(chunk_gated_kernel, dict(H=16, K=K, BT=64, BK=32, G_MODE=2, B_MODE=2, PREC=PREC))
        ok &= check(chunk_state_fwd_kernel, dict(H=16, HV=16, K=K, V=K, BT=64, BK=BK, BV=32, B_MODE=2, W_MODE=2,
                                                 USE_H0=True,
                                                 STORE_HT=True, STORE_O=True, STORE_H=True, STORE_R=True,
                                                 PREC=PREC))
        # the one-pass forward walk: float16 gated operands (attempt 23) at 1 and 2 stages, with
        # one-pass TF32 products (the range guard's second walk) and float16 ones (attempt 33, the
        # first walk); 64 value columns at one stage on 4 and 8 warps (walk_settings.py times them)
        half = {"qg": "*fp16", "kt": "*fp16", "y": "*fp16"}
        for stages, prec, guard, BV, warps in ((1, "tf32", 0, 32, 4), (2, "tf32", 2, 32, 4), (1, "f16", 1, 32, 4),
                                               (2, "f16", 1, 32, 4), (1, "tf32", 0, 64, 4), (1, "tf32", 0, 64, 8)):
            ok &= check(chunk_state_fwd_kernel, dict(H=16, HV=16, K=K, V=K, BT=64, BK=BK, BV=BV, B_MODE=2, W_MODE=2,
                                                     USE_H0=False, STORE_HT=False, STORE_O=True, STORE_H=False,
                                                     STORE_R=False, PREC=prec, GUARD=guard),
                        num_stages=stages, num_warps=warps, overrides={**half, "flag": "*i32"},
                        note=f" (f16, {prec} products, guard {guard}, {stages} st, {BV} columns, {warps} warps)")
        # the float16 walks' per-sequence scales (state.power_of_two_scale)
        ok &= check(chunk_zmax_kernel, dict(HV=16, V=K, BT=64, BV=128, W_MODE=2), num_warps=8)
        ok &= check(sequence_scale_kernel, dict(HV=16, K=K, V=K, BT=64, NV=K // 128, BJ=K // 128, BC=128, BK=32, BV=64,
                                                USE_H0=True))
        ok &= check(chunk_state_bwd_kernel, dict(H=16, HV=16, K=K, V=K, BT=64, BK=BK, BV=32, B_MODE=2,
                                                 USE_DHT=True, STORE_DH0=True, PREC=PREC))
        # two programs of it share a multiprocessor only within half its shared memory
        ok &= check(chunk_state_pair_kernel, dict(H=16, HV=16, K=K, V=K, BT=64, BK=BK, BV=32, B_MODE=2, W_MODE=2,
                                                  USE_H0=True, USE_DHT=True, STORE_DH0=True, PREC=PREC))
        # the walks on float16 hi/lo products with their guard (backward.PAIR_PRODUCTS), and the guard's
        # second launch
        for prec, guard in (("f16x3", 1), (PREC, 2)):
            ok &= check(chunk_state_pair_kernel, dict(H=16, HV=16, K=K, V=K, BT=64, BK=BK, BV=32, B_MODE=2,
                                                      W_MODE=2, USE_H0=True, USE_DHT=True, STORE_DH0=True, PREC=prec,
                                                      GUARD=guard), overrides={"flag": "*i32"},
                        note=f" ({prec}, guard {guard})")
        ok &= check(chunk_bwd_value_kernel, dict(H=16, HV=16, K=K, V=K, BT=64, BK=64, BV=32, SCRATCH=1, B_MODE=2, W_MODE=2,
                                                 PREC=PREC), num_warps=4, num_stages=2)
        # the value and key kernels on float16 hi/lo products with their guard (backward.PARALLEL_PRODUCTS),
        # and the guard's second launch
        guarded = {"flag": "*i32", "chunk_seq": "*i32"}
        for prec, guard in (("f16x3", 1), (PREC, 2)):
            ok &= check(chunk_bwd_value_kernel, dict(H=16, HV=16, K=K, V=K, BT=64, BK=64, BV=32, SCRATCH=1, B_MODE=2,
                                                     W_MODE=2, PREC=prec, GUARD=guard, GQP=1),
                        num_warps=4, num_stages=2, overrides=guarded, note=f" ({prec}, guard {guard})")
            for form, BKk in ((2, KEY_TILES["split"][0]), (3, KEY_TILES["split"][-1])):
                ok &= check(chunk_bwd_key_kernel, dict(H=16, K=K, BT=64, BK=BKk, SUB=16, SCRATCH=1, G_MODE=2,
                                                       B_MODE=2, PREC=prec, DIAG_SPAN=diag_span(PREC), FORM=form,
                                                       GUARD=guard, HV=16, GQP=1),
                            num_warps=KEY_WARPS, overrides=guarded,
                            note=f" ({FORMS[form]}, {BKk} columns, {prec}, guard {guard})")
        # the split form's walk launch three-pass on the scaled scratch (backward.KEY_WALK_PRODUCTS)
        ok &= check(chunk_bwd_key_kernel, dict(H=16, K=K, BT=64, BK=KEY_TILES["split"][-1], SUB=16, SCRATCH=1,
                                               G_MODE=2, B_MODE=2, PREC=PREC, DIAG_SPAN=diag_span(PREC), FORM=3,
                                               GUARD=3, HV=16, GQP=1),
                    num_warps=KEY_WARPS, overrides=guarded, note=f" ({FORMS[3]}, {PREC}, guard 3)")
        ok &= check(chunk_bwd_dt_kernel, dict(H=16, K=K, BT=64, BK=32, SCRATCH=1, G_MODE=2, B_MODE=2, PREC=PREC))
        # at the tiles each setting launches, and the split walk on 64 columns (attempt 28)
        for form, name, BKk in ((0, "walk", KEY_TILES["off"][0]), (1, FORMS[1], KEY_TILES["inline"][0]),
                                (2, FORMS[2], KEY_TILES["split"][0]), (3, FORMS[3], KEY_TILES["split"][-1]),
                                (3, FORMS[3], 64)):
            ok &= check(chunk_bwd_key_kernel, dict(H=16, K=K, BT=64, BK=BKk, SUB=16, SCRATCH=1, G_MODE=2, B_MODE=2,
                                                   PREC=PREC, DIAG_SPAN=diag_span(PREC), FORM=form),
                        num_warps=KEY_WARPS, note=f" ({name}, {BKk} columns)")
        ok &= check(fused_recurrent_fwd_kernel, dict(H=16, HV=16, K=K, V=K, BK=BK, BV=32, **gates, USE_H0=True,
                                                     STORE_HT=True))
    return ok


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
