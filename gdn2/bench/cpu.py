"""CPU benchmark of the operator backends: forward+backward time and peak resident memory.

Protocol: the chunk backend's output and gradients are first checked against the float64
recurrence on the benchmark's own inputs (no number is printed if that fails), then each
backend is timed as the median of several forward+backward passes; peak memory is the peak
resident set of a fresh process running one forward at a long length.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch

from ..ops import gated_delta_rule2
from ..testing import assert_close, random_inputs, run_with_grads
from .env import software_versions


@dataclass
class CpuReport:
    shape: str
    chunk_ms: float
    recurrent_ms: float
    speedup: float
    memory_shape: str
    peak_rss_gb: float
    baseline_rss_gb: float
    torch_version: str
    threads: int
    cpu: str
    date: str = ""       # UTC, of the run
    versions: str = ""   # the software stack (``env.software_versions``)


def cpu_name() -> str:
    """The processor's model name (``platform.processor()`` is empty on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _time_fwd_bwd(inputs, backend, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_with_grads(gated_delta_rule2, inputs, backend=backend)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


# VmHWM (not ru_maxrss, which survives exec and would report the parent's peak)
_MEMORY_PROBE = """
import sys, torch
from gdn2.ops import gated_delta_rule2
from gdn2.testing import random_inputs
def hwm():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
base = hwm()
B, T, H, K, V = (int(a) for a in sys.argv[1:6])
x = random_inputs(B=B, T=T, H=H, K=K, V=V, seed=0)
with torch.no_grad():
    o, _ = gated_delta_rule2(**x, backend="chunk")
assert torch.isfinite(o).all()
print(base, hwm())
"""


def peak_forward_memory(B=1, T=16384, H=16, K=128, V=128):
    """Peak RSS (GB) of a fresh process running one chunk forward, and of its imports alone."""
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, *map(str, (B, T, H, K, V))],
                         check=True, capture_output=True, text=True).stdout.split()
    base_kb, peak_kb = int(out[-2]), int(out[-1])
    return peak_kb / 1e6, base_kb / 1e6


def run(B=1, T=2048, H=4, K=64, V=64, repeats=3, memory=True, log=print) -> CpuReport:
    inputs = random_inputs(B=B, T=T, H=H, K=K, V=V, seed=0)
    log(f"correctness gate: chunk (float32) vs recurrent (float64) at B={B} T={T} H={H} K={K} V={V}")
    o, S, grads = run_with_grads(gated_delta_rule2, inputs, backend="chunk")
    ref = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    o_ref, S_ref, g_ref = run_with_grads(gated_delta_rule2, ref, backend="recurrent")
    assert_close("o", o, o_ref, 1e-4)
    assert_close("final state", S, S_ref, 1e-4)
    for name in grads:
        assert_close(f"d{name}", grads[name], g_ref[name], 1e-4)
    log("  passed")
    log("timing forward+backward ...")
    chunk_ms = _time_fwd_bwd(inputs, "chunk", repeats)
    recurrent_ms = _time_fwd_bwd(inputs, "recurrent", max(1, repeats // 2))
    peak, base = peak_forward_memory() if memory else (float("nan"), float("nan"))
    return CpuReport(shape=f"B={B} T={T} H={H} K={K} V={V} float32", chunk_ms=chunk_ms,
                     recurrent_ms=recurrent_ms, speedup=recurrent_ms / chunk_ms,
                     memory_shape="forward B=1 T=16384 H=16 K=V=128 float32", peak_rss_gb=peak,
                     baseline_rss_gb=base, torch_version=torch.__version__,
                     threads=torch.get_num_threads(), cpu=cpu_name(),
                     date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     versions=", ".join(f"{k} {v}" for k, v in software_versions().items() if v is not None))


def format_report(r: CpuReport) -> str:
    return "\n".join([
        f"| backend | forward+backward ({r.shape}) |",
        "|---|---|",
        f"| recurrent (float64 token loop) | {r.recurrent_ms:.1f} ms |",
        f"| chunk (PyTorch WY, C = 64) | {r.chunk_ms:.1f} ms |",
        f"| speed-up | {r.speedup:.1f}x |",
        "",
        f"Peak resident memory, {r.memory_shape}: {r.peak_rss_gb:.2f} GB "
        f"(of which {r.baseline_rss_gb:.2f} GB is the interpreter and torch; inputs and output "
        f"are 0.94 GB).",
        f"torch {r.torch_version}, {r.threads} threads, {r.cpu}; {r.date}; {r.versions}.",
    ])


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(prog="gdn2 bench cpu", description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, default=2048, help="sequence length for the timing")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per backend (median)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probe")
    p.add_argument("--json", help="also write the report as JSON to this path")
    args = p.parse_args(argv)
    r = run(T=args.T, repeats=args.repeats, memory=not args.no_memory)
    print(format_report(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(asdict(r), f, indent=2)
    return r


if __name__ == "__main__":
    main()
