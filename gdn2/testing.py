"""The project's one tolerance helper and random inputs for the operator family.

Used by the tests (CPU and GPU) and by the benchmarks' correctness gates, so that every
comparison reports the same two numbers: relative RMS error and max absolute error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch


@dataclass(frozen=True)
class Error:
    rel_rms: float   # ||actual - expected|| / ||expected||
    max_abs: float   # max |actual - expected|
    finite: bool

    def __str__(self) -> str:
        return f"rel RMS error {self.rel_rms:.3e}, max abs error {self.max_abs:.3e}" + (
            "" if self.finite else " (non-finite values)")


def error(actual: torch.Tensor, expected: torch.Tensor) -> Error:
    """Relative RMS and max absolute error of ``actual`` against ``expected``, in float64. A
    non-finite value on either side makes both errors infinite (``finite`` False): a reference
    broken into NaN must fail a comparison, not pass it by comparing false with every bound."""
    if actual.shape != expected.shape:
        raise AssertionError(f"shape mismatch: actual {list(actual.shape)} vs expected {list(expected.shape)}")
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    finite = bool(torch.isfinite(a).all()) and bool(torch.isfinite(e).all())
    diff = (a - e)
    denom = e.norm().item()
    rel = diff.norm().item() / denom if denom > 0 else diff.norm().item()
    max_abs = diff.abs().max().item() if diff.numel() else 0.0
    if not finite:
        rel = max_abs = float("inf")
    return Error(rel_rms=rel, max_abs=max_abs, finite=finite)


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, rtol: float,
                 atol: Optional[float] = None) -> Error:
    """Fail unless ``actual`` is finite and within ``rtol`` relative RMS error of ``expected``
    (and within ``atol`` max absolute error when given). Returns the measured error."""
    err = error(actual, expected)
    if not (err.finite and err.rel_rms <= rtol and (atol is None or err.max_abs <= atol)):
        bound = f"rel RMS <= {rtol:.1e}" + ("" if atol is None else f", max abs <= {atol:.1e}")
        raise AssertionError(f"{name}: {err}; allowed {bound}")
    return err


def no_worse_bound(baseline: Error, factor: float = 2.0, floor: float = 1e-5) -> float:
    """The largest relative RMS error :func:`assert_no_worse` allows beside ``baseline``'s."""
    return factor * baseline.rel_rms + floor


def assert_no_worse(name: str, fast: torch.Tensor, baseline: torch.Tensor, reference: torch.Tensor,
                    factor: float = 2.0, floor: float = 1e-5) -> Error:
    """The flash-attention criterion: ``fast``'s error against ``reference`` is at most ``factor``
    times ``baseline``'s (a plain implementation in the same dtype) plus ``floor`` (relative RMS),
    and never non-finite. Returns the fast version's error."""
    err, base = error(fast, reference), error(baseline, reference)
    if not base.finite:  # the bound would be NaN, and every comparison with it false
        raise AssertionError(f"{name}: the baseline is not finite ({base}): no bound to hold {err} to")
    if not (err.finite and err.rel_rms <= no_worse_bound(base, factor, floor)):
        raise AssertionError(f"{name}: {err}; baseline {base}; allowed rel RMS <= {factor:g} x baseline + {floor:.0e}")
    return err


def random_inputs(B: int = 1, T: int = 64, H: int = 2, K: int = 32, V: int = 32, HV: Optional[int] = None,
                  gate: str = "channel", erase: str = "channel", write: str = "channel",
                  dtype: torch.dtype = torch.float32, device: str = "cpu", b_max: float = 1.0,
                  g_min: float = -1.0, initial_state: bool = False, N: Optional[int] = None,
                  seed: Optional[int] = None, requires_grad: bool = False) -> Dict[str, object]:
    """Keyword arguments for ``gated_delta_rule2`` with random values.

    ``gate``/``erase``/``write`` are ``"channel"``, ``"scalar"``, ``"none"`` (and ``"zero"`` for the
    erase). k is L2-normalised (as in the layer, which keeps the recurrence contractive), g is
    uniform in ``[g_min, 0]`` and b uniform in ``[0, b_max]``.
    """
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    HV = H if HV is None else HV
    N = B if N is None else N

    def rand(*shape, lo=0.0, hi=1.0):
        x = torch.rand(*shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo
        return x.to(dtype=dtype, device=device)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)

    def gate_tensor(kind, heads, width, lo, hi):
        if kind == "channel":
            return rand(B, T, heads, width, lo=lo, hi=hi)
        if kind == "scalar":
            return rand(B, T, heads, lo=lo, hi=hi)
        if kind == "none":
            return None
        if kind == "zero":
            return 0.0
        raise ValueError(f"gate kind must be channel, scalar, none or zero, got {kind!r}")

    k = randn(B, T, H, K)
    k = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    out = dict(q=randn(B, T, H, K), k=k, v=randn(B, T, HV, V),
               g=gate_tensor(gate, H, K, g_min, 0.0), b=gate_tensor(erase, H, K, 0.0, b_max),
               w=gate_tensor(write, HV, V, 0.0, 1.0))
    if gate == "channel" or gate == "scalar":
        out["g"] = out["g"].float() if dtype in (torch.float16, torch.bfloat16) else out["g"]
    if initial_state:
        state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        out["initial_state"] = (torch.randn(N, HV, K, V, generator=gen, dtype=torch.float64) * 0.1).to(
            dtype=state_dtype, device=device)
    if requires_grad:
        for key, x in out.items():
            if isinstance(x, torch.Tensor):
                x.requires_grad_(True)
    return out


def run_with_grads(fn, inputs, seed=0, **kwargs):
    """Call ``fn`` (a gated_delta_rule2-like op) and backprop fixed random cotangents into
    o and the final state. Returns (o, final_state, {name: grad}) for every tensor input."""
    leaves = {name: x.detach().clone().requires_grad_(True) for name, x in inputs.items()
              if isinstance(x, torch.Tensor) and x.is_floating_point()}
    args = {**inputs, **leaves}
    o, S = fn(**args, output_final_state=True, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    do = torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o)
    dS = torch.randn(S.shape, generator=gen, dtype=torch.float64).to(S)
    grads = torch.autograd.grad((o * do).sum() + (S * dS).sum(), list(leaves.values()), allow_unused=True)
    return o.detach(), S.detach(), {n: gr for n, gr in zip(leaves, grads)}


def backend_outputs(inputs: Dict[str, object], backend: str, baseline: str = "chunk",
                    **kwargs) -> Dict[str, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``{name: (backend's, baseline's, float64 recurrence's)}`` for the output, the final state,
    the forward alone (no final state, no gradients: a backend may take cheaper products there, as
    the Triton one-pass forward of bfloat16 inputs does) and every input gradient."""
    from .ops import gated_delta_rule2
    ref = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    o_ref, S_ref, g_ref = run_with_grads(gated_delta_rule2, ref, backend="recurrent", **kwargs)
    o_pt, S_pt, g_pt = run_with_grads(gated_delta_rule2, inputs, backend=baseline, **kwargs)
    o, S, grads = run_with_grads(gated_delta_rule2, inputs, backend=backend, **kwargs)
    with torch.no_grad():
        o_fwd = gated_delta_rule2(**inputs, backend=backend, **kwargs)
    out = {"o": (o, o_pt, o_ref), "final_state": (S, S_pt, S_ref),
           "o (forward only)": (o_fwd[0] if isinstance(o_fwd, tuple) else o_fwd, o_pt, o_ref)}
    out.update({f"d{name}": (grads[name], g_pt[name], g_ref[name]) for name in g_ref})
    return out


def check_backend(inputs: Dict[str, object], backend: str, baseline: str = "chunk", **kwargs) -> None:
    """``backend`` against the float64 recurrence with the flash-attention criterion (see
    :func:`assert_no_worse`), for the output, the final state and every input gradient."""
    for name, (fast, base, ref) in backend_outputs(inputs, backend, baseline, **kwargs).items():
        assert_no_worse(name, fast, base, ref)


class RecordedLaunches:
    """A Triton kernel (``kernel[grid](...)``) whose launches are recorded, in order, as (its GUARD,
    how many entries its ``flag`` buffer marks after the launch; None without one), in
    ``flags`` a copy of that buffer after each guarded launch (the range guards' first launch
    flags, the second makes again only what was flagged), and in ``options`` each launch's
    compile-time string options (``PREC``, say)."""

    def __init__(self, kernel):
        self.kernel, self.seen, self.flags, self.options = kernel, [], [], []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.options.append({name: x for name, x in kwargs.items() if isinstance(x, str)})
            self.kernel[grid](*args, **kwargs)
            flag = kwargs.get("flag")
            self.seen.append((kwargs.get("GUARD", 0), int(flag.sum()) if flag is not None else None))
            if flag is not None:
                self.flags.append(flag.detach().cpu().clone())
        return launch
