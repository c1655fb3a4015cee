"""The inference forward at each paper shape under the float16 walk's settings (pipeline stages,
value columns, warps): which setting wins where, as the walk's program count changes.

    python benchmarks/walk_settings.py
"""

import contextlib
from unittest import mock

import torch
import triton

from gdn2.bench.gpu import make_inputs, ours
from gdn2.ops.gdn2.triton import state

# "as used": the tiling state.f16_walk_tiling picks for the shape; the others fixed for every shape
SETTINGS = {"as used": {},
            "32 columns, 2 stages": {"F16_WALK_COLUMNS": 32, "F16_WALK_STAGES": 2},
            "32 columns, 1 stage": {"F16_WALK_COLUMNS": 32, "F16_WALK_STAGES": 1},
            "16 columns, 2 stages": {"F16_WALK_COLUMNS": 16, "F16_WALK_STAGES": 2},
            "8 warps": {"F16_WALK_WARPS": 8},
            # half the programs, each reading Q_γ, K_tail, Y, A and Aqk once for twice the columns
            # (FLA's walk tile): for the shapes with more programs than multiprocessors (8x2K, 4x4K)
            "64 columns, 1 stage": {"F16_WALK_COLUMNS": 64, "F16_WALK_STAGES": 1},
            "64 columns, 1 stage, 8 warps": {"F16_WALK_COLUMNS": 64, "F16_WALK_STAGES": 1, "F16_WALK_WARPS": 8}}

if __name__ == "__main__":
    with torch.no_grad():
        print(f"| shape ({torch.cuda.get_device_name()}) | " + " | ".join(SETTINGS) + " |")
        print("|---|" + "---|" * len(SETTINGS))
        for B, T in ((8, 2048), (4, 4096), (2, 8192), (1, 16384)):
            x = make_inputs(B, T)
            row = []
            for patch in SETTINGS.values():
                with mock.patch.multiple(state, **patch) if patch else contextlib.nullcontext():
                    row.append(triton.testing.do_bench(lambda: ours(x), warmup=10, rep=50, return_mode="median"))
            print(f"| {B}x{T} | " + " | ".join(f"{t:.3f}" for t in row) + " |", flush=True)
