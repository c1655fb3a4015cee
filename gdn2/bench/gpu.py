"""GPU kernel benchmark: this backend against FLA's ``chunk_gdn2`` and SDPA flash attention.

Protocol (one run, one card): for each shape (and each decay span timed), a correctness gate
first compares our output and input gradients (the training path), and our forward alone (the
no-gradient path, other kernels), with FLA's on the same inputs (the PyTorch chunk backend's
without FLA) and stops before any timing on disagreement;
then forward and forward+backward are timed as the median of ``triton.testing.do_bench``
(device events), and decode (one token, batch 64) likewise. Ratios are ours / theirs.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional

import torch

from ..ops import gated_delta_rule2
from ..testing import error
from .env import software_versions

SHAPES = [(8, 2048), (4, 4096), (2, 8192), (1, 16384)]
H, K, V = 16, 128, 128


@dataclass
class Row:
    shape: str
    times: Dict[str, float] = field(default_factory=dict)   # name -> ms


def make_inputs(B, T, device="cuda", dtype=torch.bfloat16, seed=0, g_shift=0.0):
    """Benchmark inputs; ``g_shift`` lowers every log-decay (wider sub-block spans, see
    ``diag_span``: the kernels' speed depends on them, FLA's does not)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    r = lambda *s: torch.randn(*s, device=device, generator=gen)  # noqa: E731
    q, k = r(B, T, H, K).to(dtype), r(B, T, H, K).to(dtype)
    v = r(B, T, H, V).to(dtype)
    g = -torch.nn.functional.softplus(r(B, T, H, K)) * 0.1 - g_shift  # log-decay, float32
    b = torch.sigmoid(r(B, T, H, K)).to(dtype)
    w = torch.sigmoid(r(B, T, H, V)).to(dtype)
    return dict(q=q, k=k, v=v, g=g, b=b, w=w)


def decode_floor_ms(batch: int, copy_GBps: float) -> float:
    """A one-token decode step's floor: the float32 state read and written once at ``copy_GBps``."""
    return 2 * batch * H * K * V * 4 / (copy_GBps * 1e6)


def stage_inputs(x: Dict[str, torch.Tensor], q: torch.Tensor, k: torch.Tensor) -> SimpleNamespace:
    """What the Triton pipeline's stages take, for the profilers and the smoke run: ``make_inputs``
    with q, k L2-normalised, flattened to ``[T, H, D]``, with the chunk table, gate modes and scale."""
    from ..ops.gdn2.triton.chunk import _chunks, _prepare
    from ..ops.gdn2.triton.common import gate_mode

    q, k, v, g, b, w, _, cu, uniform_T, _ = _prepare(q, k, x["v"], x["g"], x["b"], x["w"], None, None)
    return SimpleNamespace(q=q, k=k, v=v, g=g, b=b, w=w, cu=cu, chunks=_chunks(cu, uniform_T),
                           modes=(gate_mode(g, 3), gate_mode(b, 3), gate_mode(w, 3)), scale=q.shape[-1] ** -0.5)


def ours(x, **kw):
    return gated_delta_rule2(x["q"], x["k"], x["v"], x["g"], x["b"], x["w"], use_qk_l2norm=True,
                             backend="triton", **kw)


def fla_chunk(x, **kw):
    from fla.ops.gdn2 import chunk_gdn2
    return chunk_gdn2(x["q"], x["k"], x["v"], x["g"], x["b"], x["w"], use_qk_l2norm_in_kernel=True, **kw)


def fla_decode(x, **kw):
    from fla.ops.gdn2 import fused_recurrent_gdn2
    return fused_recurrent_gdn2(x["q"], x["k"], x["v"], x["g"], x["b"], x["w"], use_qk_l2norm_in_kernel=True, **kw)


def chunk_reference(x, **kw):
    """The PyTorch chunk backend on the same inputs: the gate's reference where FLA is absent."""
    return gated_delta_rule2(x["q"], x["k"], x["v"], x["g"], x["b"], x["w"], use_qk_l2norm=True,
                             backend="chunk", **kw)


def sdpa(x, **kw):
    q, k, v = (x[n].transpose(1, 2) for n in ("q", "k", "v"))
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True), None


def _with_grad(x):
    return {n: t.detach().clone().requires_grad_(True) for n, t in x.items()}


def gate(x, reference: Callable = fla_chunk, tol=1e-2) -> List[str]:
    """Our output and input gradients (the training path), and our output without gradients (the
    path the forward is timed on: one-pass products, other kernels), against ``reference``'s;
    raises on disagreement."""
    xa, xb = _with_grad(x), _with_grad(x)
    oa, _ = ours(xa)
    ob, _ = reference(xb)
    do = torch.randn_like(oa)
    ga = torch.autograd.grad(oa, list(xa.values()), do)
    gb = torch.autograd.grad(ob, list(xb.values()), do)
    with torch.no_grad():
        pairs = [("o", oa, ob), ("o (forward only)", ours(x)[0], reference(x)[0])]
    return _compare(pairs + [(f"d{n}", s, t) for n, s, t in zip(xa, ga, gb)], tol)


def _compare(pairs, tol) -> List[str]:
    lines = []
    for name, a, b_ in pairs:
        err = error(a.float(), b_.float())
        lines.append(f"{name}: {err}")
        if not (err.finite and err.rel_rms <= tol):
            raise AssertionError(f"correctness gate failed, ours vs the reference, {name}: {err} (allowed {tol})")
    return lines


def time_fwd(fn: Callable, x) -> float:
    import triton
    with torch.no_grad():
        return triton.testing.do_bench(lambda: fn(x), warmup=25, rep=100, return_mode="median")


def time_fwd_bwd(fn: Callable, x) -> float:
    import triton
    xg = _with_grad(x)
    o, _ = fn(xg)
    do = torch.randn_like(o)
    leaves = list(xg.values())

    def step():
        out, _ = fn(xg)
        torch.autograd.grad(out, leaves, do, allow_unused=True)
    return triton.testing.do_bench(step, warmup=25, rep=100, return_mode="median")


def machine_ceilings() -> Dict[str, float]:
    import triton
    a = torch.empty(2 ** 30 // 2, dtype=torch.bfloat16, device="cuda").normal_()
    bts = 2 * a.numel() * a.element_size()
    copy_ms = triton.testing.do_bench(lambda: a.clone(), warmup=10, rep=50, return_mode="median")
    m = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    mm_ms = triton.testing.do_bench(lambda: m @ m, warmup=10, rep=50, return_mode="median")
    return {"copy_GBps": bts / copy_ms / 1e6, "bf16_TFLOPs": 2 * 8192 ** 3 / mm_ms / 1e9}


def versions() -> Dict[str, str]:
    now = datetime.datetime.now(datetime.timezone.utc)
    out = {"gpu": torch.cuda.get_device_name(), **software_versions(), "date": now.date().isoformat(),
           "time": now.strftime("%H%M")}
    try:
        import fla
        out["fla"] = getattr(fla, "__version__", "?")
    except ImportError:
        out["fla"] = "not installed"
    return out


def run(log=print, shapes=SHAPES, with_fla=True) -> Dict[str, object]:
    rows, gates = [], {}
    reference = fla_chunk if with_fla else chunk_reference
    for B, T in shapes:
        x = make_inputs(B, T)
        name = f"{B}x{T // 1024}K"
        log(f"{name}: correctness gate against {'FLA' if with_fla else 'the chunk backend'} (compiles kernels on "
            f"first use) ...")
        gates[name] = gate(x, reference)
        log(f"{name}: gate passed ({gates[name][0]})")
        row = Row(shape=name)
        fns = {"gdn2": ours, "sdpa": sdpa}
        if with_fla:
            fns["fla"] = fla_chunk
        for fn_name, fn in fns.items():
            row.times[f"{fn_name}_fwd"] = time_fwd(fn, x)
            row.times[f"{fn_name}_fwdbwd"] = time_fwd_bwd(fn, x)
        log(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.times.items()))
        rows.append(row)
        del x
        torch.cuda.empty_cache()
    # the same shape with faster-forgetting channels: sub-block spans ~31 (the three-pass stages
    # take pairwise tiles, the one-pass forward does not) and ~90 (tiles everywhere)
    spans: Dict[str, Dict[str, float]] = {}
    for shift, label in ((2.0, "g - 2 (span ~31)"), (6.0, "g - 6 (span ~90)")):
        x = make_inputs(2, 8192, g_shift=shift)
        gates[f"2x8K, {label}"] = gate(x, reference)   # other kernel forms than the rows above
        spans[label] = {"fwd": time_fwd(ours, x), "fwdbwd": time_fwd_bwd(ours, x)}
        log(f"2x8K, {label}: " + ", ".join(f"{k} {v:.3f}" for k, v in spans[label].items()))
        del x
    import triton
    decode: Dict[str, Optional[float]] = {}
    x = make_inputs(64, 1)
    h0 = torch.randn(64, H, K, V, device="cuda") * 0.1
    step_ours = lambda: ours(x, initial_state=h0, output_final_state=True)  # noqa: E731
    step_fla = lambda: fla_decode(x, initial_state=h0, output_final_state=True)  # noqa: E731
    step_ref = step_fla if with_fla else (lambda: chunk_reference(x, initial_state=h0, output_final_state=True))
    with torch.no_grad():
        (o, S), (o_ref, S_ref) = step_ours(), step_ref()
        gates["decode 64x1"] = _compare([("o", o, o_ref), ("final state", S, S_ref)], 1e-2)
        decode["gdn2"] = triton.testing.do_bench(step_ours, return_mode="median")
        if with_fla:
            decode["fla"] = triton.testing.do_bench(step_fla, return_mode="median")
        # one step replayed from a CUDA graph: the device's time without the host's launch path,
        # the number to hold against the memory floor
        for name, step in (("gdn2", step_ours), ("fla", step_fla))[:1 + with_fla]:
            try:
                decode[f"{name}_graph"] = triton.testing.do_bench_cudagraph(step, return_mode="median")
            except Exception as exc:  # a path that cannot be captured is reported, not fatal
                decode[f"{name}_graph"] = None
                log(f"decode: {name} not capturable in a CUDA graph ({type(exc).__name__}: {exc})")
    log("decode: " + ", ".join(f"{k} {v:.4f}" for k, v in decode.items() if v is not None))
    return {"rows": rows, "decode": decode, "gates": gates, "spans": spans}


def results_path(folder, meta: Dict[str, str], suffix: str = ""):
    """``<folder>/<date>-<gpu><suffix>.md``, the name every GPU results file of a run takes;
    ``<date>-<HHMM UTC>-<gpu><suffix>.md`` when a run of the same day already wrote that one, and
    ``<date>-<HHMM>-<n>-<gpu><suffix>.md`` when one of the same minute did too."""
    gpu = meta["gpu"].replace("NVIDIA ", "").replace(" ", "-")
    path = Path(folder) / f"{meta['date']}-{gpu}{suffix}.md"
    if path.exists() and "time" in meta:
        path = Path(folder) / f"{meta['date']}-{meta['time']}-{gpu}{suffix}.md"
    n = 2
    while path.exists() and "time" in meta:   # two runs in one minute
        path = Path(folder) / f"{meta['date']}-{meta['time']}-{n}-{gpu}{suffix}.md"
        n += 1
    return path


def versions_line(meta: Dict[str, str]) -> str:
    """``Versions: torch ..., triton ..., ...`` of ``versions()``, without the run's date, time and card."""
    return "Versions: " + ", ".join(f"{k} {v}" for k, v in meta.items() if k not in ("date", "time", "gpu")) + "."


def format_results(res, meta, ceilings) -> str:
    lines = [f"# GPU kernels, {meta['date']}, {meta['gpu']}", "",
             versions_line(meta),
             f"Ceilings measured in the same run: device copy {ceilings['copy_GBps']:.0f} GB/s (read + write), "
             f"bf16 8192^3 matmul {ceilings['bf16_TFLOPs']:.0f} TFLOP/s.",
             "H = 16, K = V = 128, bfloat16 q/k/v/b/w, float32 g, q/k L2-normalised; times in ms, medians of "
             "`triton.testing.do_bench`. Ratio = gdn2 / FLA (below 1 is faster).", "",
             "| shape | gdn2 fwd | FLA fwd | ratio | gdn2 fwd+bwd | FLA fwd+bwd | ratio | SDPA fwd | SDPA fwd+bwd |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        t = r.times
        fla_f, fla_fb = t.get("fla_fwd"), t.get("fla_fwdbwd")
        ratio = lambda a, b: f"{a / b:.2f}" if b else "n/a"  # noqa: E731
        lines.append(f"| {r.shape} | {t['gdn2_fwd']:.3f} | {fla_f or float('nan'):.3f} | {ratio(t['gdn2_fwd'], fla_f)} | "
                     f"{t['gdn2_fwdbwd']:.3f} | {fla_fb or float('nan'):.3f} | {ratio(t['gdn2_fwdbwd'], fla_fb)} | "
                     f"{t['sdpa_fwd']:.3f} | {t['sdpa_fwdbwd']:.3f} |")
    if res.get("spans"):
        base = next((r.times for r in res["rows"] if r.shape == "2x8K"), None)
        lines += ["", "Decay-span sensitivity, 2x8K (gdn2 only; FLA's kernels do not depend on the values): "
                  "the rows above use g = -0.1 softplus(N(0, 1)), sub-block spans ~1.2"
                  + (f" (fwd {base['gdn2_fwd']:.3f}, fwd+bwd {base['gdn2_fwdbwd']:.3f})" if base else "") + "; "
                  + "; ".join(f"{label}: fwd {t['fwd']:.3f}, fwd+bwd {t['fwdbwd']:.3f}" for label, t in res["spans"].items())
                  + "."]
    d = res["decode"]
    lines += ["", f"Decode, one token, batch 64, H = 16, float32 state: gdn2 {d['gdn2']:.4f} ms"
              + (f", FLA `fused_recurrent_gdn2` {d['fla']:.4f} ms, ratio {d['gdn2'] / d['fla']:.2f}" if "fla" in d else "")
              + "."]
    if "gdn2_graph" in d:
        # the state read and written once, at the copy bandwidth measured in this run
        floor = decode_floor_ms(64, ceilings["copy_GBps"])
        fmt = lambda v: f"{v:.4f} ms ({v / floor:.2f}x the floor)" if v else "n/a (not capturable)"  # noqa: E731
        lines.append(f"Replayed from a CUDA graph (device time, no host launch path): gdn2 {fmt(d['gdn2_graph'])}"
                     + (f", FLA {fmt(d.get('fla_graph'))}" if "fla_graph" in d else "")
                     + f"; floor {floor:.4f} ms (state read and written once at the measured copy bandwidth).")
    reference = "FLA" if "fla" in d else "the PyTorch chunk backend (FLA not installed)"
    lines += ["", f"Correctness gate (ours vs {reference}, relative RMS; o (forward only): the no-gradient path "
              f"the forward is timed on):", ""]
    for shape, g in res["gates"].items():
        lines.append(f"- {shape}: " + "; ".join(g))
    return "\n".join(lines) + "\n"
