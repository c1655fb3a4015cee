#!/usr/bin/env python3
"""The report of ``scripts/multi_gpu_check.sh``: ``OUT/multi-gpu.md`` (also printed).

Reads what the check wrote under OUT: ``logs/NAME.jsonl`` (the runs' JSON-lines logs, see
``gdn2.train.metrics``: train records hold ``step``, ``loss``, ``tokens_per_s``), ``phases.tsv``
(name, processes, engine, exit code, seconds), ``config.json`` and ``env.json``. Runs: ``single``
(1 GPU), ``ddp`` and ``fsdp`` (N GPUs, the same global batch), ``resume-1gpu`` and ``resume-ngpu``
(the FSDP run's step-K checkpoint continued on 1 and on N GPUs).

Targets (the multi-GPU issue):

- loss: the N-GPU curves follow the 1-GPU one within bf16 noise. Tolerance: every common step's
  ``|loss_N - loss_1| / loss_1 <= 2e-2`` (``--loss-rtol``). Why this much: the runs are the same
  computation in another reduction order, so at step 1 (same weights, same rows) they agree to
  ~1e-4 or better; bf16 autocast rounds every matmul input to 8 significant bits (relative step
  2^-8 = 3.9e-3), and the different summation orders of gradients (one GPU accumulates
  micro-batches, N GPUs all-reduce or reduce-scatter them) then move the weights apart by rounding
  that compounds over the steps. Runs that differ only this way typically stay within ~1e-2 of
  each other over 50 steps at this scale; 2e-2 (~5 bf16 steps) leaves room for that while a real
  bug (rows read twice or never, gradients summed instead of averaged without clipping, unsynced
  replicas) either diverges or shows at step 1 already. The step-1 difference is reported too.
- scaling: tokens/s per GPU over the 1-GPU tokens/s >= 0.9 (``--efficiency``). Tokens/s is the
  median of the logged ``tokens_per_s`` (global tokens of a step / its wall time, synchronised
  by the loss's all-reduce) after the first ``--warmup-steps`` steps (Triton compilation, NCCL
  set-up, allocator growth).
- resume: a resumed run's first step is the checkpoint's step + 1, and its losses repeat the
  uninterrupted FSDP run's (the same weights, data position and schedule) within the same
  tolerance.

Exit code 0 whenever the report is written, targets missed or not; 1 when a run's log is missing
(the report is still written, with the run marked missing).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

RUNS = [("single", "1 GPU"), ("ddp", "DDP"), ("fsdp", "FSDP2")]
RESUMES = [("resume-1gpu", "resume on 1 GPU"), ("resume-ngpu", "resume on N GPUs")]


def read_jsonl(path: Path) -> Optional[List[Dict]]:
    if not path.is_file():
        return None
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:   # a line cut by a killed run
                pass
    return records


def read_json(path: Path) -> Dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def read_phases(path: Path) -> Dict[str, Dict]:
    phases = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            fields = line.split("\t")
            if len(fields) >= 5:
                phases[fields[0]] = dict(nproc=fields[1], parallel=fields[2], rc=fields[3], seconds=fields[4])
    return phases


def train_losses(records: List[Dict]) -> Dict[int, float]:
    return {r["step"]: r["loss"] for r in records if r.get("kind") == "train"}


def last_eval(records: List[Dict]) -> Optional[float]:
    evals = [r for r in records if r.get("kind") == "eval"]
    return evals[-1]["loss"] if evals else None


def median_speed(records: List[Dict], warmup: int) -> Optional[float]:
    """Median tokens/s of the train steps after the first ``warmup`` (at least one skipped, and at
    most half of them, so short runs still give a number)."""
    rates = [r["tokens_per_s"] for r in records if r.get("kind") == "train" and "tokens_per_s" in r]
    if not rates:
        return None
    skip = max(1, min(warmup, len(rates) // 2)) if len(rates) > 1 else 0
    return statistics.median(rates[skip:])


def compare(losses: Dict[int, float], reference: Dict[int, float]) -> Optional[Dict]:
    """Differences over the common steps: max absolute, max relative (and its step), the first
    common step's relative difference, the mean relative difference; None when nothing is common."""
    steps = sorted(set(losses) & set(reference))
    if not steps:
        return None
    rel = {}
    for s in steps:
        a, b = losses[s], reference[s]
        rel[s] = abs(a - b) / abs(b) if math.isfinite(a) and math.isfinite(b) and b else math.inf
    worst = max(steps, key=lambda s: rel[s])
    return dict(steps=len(steps), first=steps[0], last=steps[-1],
                max_abs=max(abs(losses[s] - reference[s]) for s in steps),
                max_rel=rel[worst], worst_step=worst, first_rel=rel[steps[0]],
                mean_rel=sum(rel.values()) / len(steps))


def fmt(value, spec: str = ".4f", missing: str = "-") -> str:
    if value is None:
        return missing
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


def verdict(ok: Optional[bool]) -> str:
    return "MISSING" if ok is None else ("PASS" if ok else "FAIL")


def parameter_count(out: Path) -> Optional[str]:
    import re
    path = out / "single.log"
    if path.is_file():
        match = re.search(r"([\d.]+M) parameters, vocabulary (\d+)", path.read_text(encoding="utf-8", errors="replace"))
        if match:
            return f"{match.group(1)} parameters, vocabulary {match.group(2)}"
    return None


def plot(out: Path, curves: Dict[str, Dict[int, float]]) -> Optional[Path]:
    """The loss curves and their relative differences from the 1-GPU run, when matplotlib is there."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    reference = curves.get("single")
    if not reference:
        return None
    fig = Figure(figsize=(10, 4))
    ax, bx = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for i, (name, losses) in enumerate(curves.items()):
        color = f"C{i}"
        steps = sorted(losses)
        ax.plot(steps, [losses[s] for s in steps], label=name, lw=1, color=color)
        common = [s for s in steps if s in reference]
        if name != "single" and common:
            bx.plot(common, [(losses[s] - reference[s]) / reference[s] for s in common], label=name, lw=1, color=color)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    ax.legend()
    bx.set_xlabel("step")
    bx.set_ylabel("relative difference from 1 GPU")
    bx.legend()
    fig.tight_layout()
    path = out / "multi-gpu-loss.png"
    fig.savefig(path, dpi=100)
    return path


def report(out: Path, warmup: int, loss_rtol: float, efficiency_target: float) -> Tuple[str, bool]:
    env, config, phases = read_json(out / "env.json"), read_json(out / "config.json"), read_phases(out / "phases.tsv")
    logs = {name: read_jsonl(out / "logs" / f"{name}.jsonl") for name, _ in RUNS + RESUMES}
    missing = [name for name, records in logs.items() if not records]
    n = int(config.get("nproc") or phases.get("ddp", {}).get("nproc") or 0)
    card = ", ".join(sorted(set(env.get("gpus") or []))) or ("CPU" if env.get("device") == "cpu" else "unknown")
    lines = [f"# Multi-GPU training check: {n} x {card}, {env.get('date', 'date unknown')}", ""]
    lines.append(f"Versions: torch {env.get('torch')}, triton {env.get('triton')}, NCCL {env.get('nccl')}, "
                 f"CUDA {env.get('cuda')}, transformers {env.get('transformers')}, gdn2 {env.get('gdn2')}, "
                 f"python {env.get('python')}; NCCL_NVLS_ENABLE={env.get('NCCL_NVLS_ENABLE')}. "
                 f"Commit: {env.get('git_commit', 'unknown')}. GPUs visible: {env.get('gpu_count')}.")
    params = parameter_count(out)
    if config:
        lines.append(f"Setup: model `{config.get('model')}` ({config.get('model_args')}"
                     f"{'; ' + params if params else ''}), corpus `{config.get('corpus')}`, "
                     f"{config.get('global_batch')} rows x {config.get('seq_len')} tokens per step "
                     f"({config.get('global_batch', 0) * config.get('seq_len', 0):,} tokens), "
                     f"{config.get('steps')} steps, lr {config.get('lr')} (warm-up {config.get('warmup_steps')}), "
                     f"bf16 autocast on GPU. Micro-batches per process: 1 GPU {config.get('micro_1')} rows x "
                     f"{config.get('accum_1')}, N GPUs {config.get('micro_n')} rows x {config.get('accum_n')}.")
    if env.get("device") == "cpu":
        lines.append("CPU dry run (gloo, float32): the timings say nothing about GPUs.")
    lines += ["", "Command: `bash scripts/multi_gpu_check.sh OUT "
              f"{n} {config.get('steps', '')}`. Tokens/s: global tokens per second of a step, median over the steps "
              f"after the first {warmup} (at least 1, at most half of them are left out); scaling efficiency = "
              "(tokens/s / GPUs) / (1-GPU tokens/s).", ""]

    single = train_losses(logs["single"] or [])
    base_speed = median_speed(logs["single"] or [], warmup)
    lines += ["| run | GPUs | exit | steps | final loss | final eval loss | max abs diff vs 1 GPU | max rel diff "
              "(step) | step-1 rel diff | tokens/s | tokens/s per GPU | scaling efficiency | wall s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    results = {}
    for name, label in RUNS:
        records, phase = logs[name], phases.get(name, {})
        gpus = 1 if name == "single" else n
        if not records:
            lines.append(f"| {label} | {gpus} | {phase.get('rc', '-')} | missing | | | | | | | | | "
                         f"{phase.get('seconds', '-')} |")
            results[name] = None
            continue
        losses = train_losses(records)
        diff = compare(losses, single) if name != "single" else None
        speed = median_speed(records, warmup)
        per_gpu = speed / gpus if speed else None
        eff = per_gpu / base_speed if per_gpu and base_speed else None
        results[name] = dict(diff=diff, eff=eff, losses=losses)
        final = losses[max(losses)] if losses else None
        lines.append(
            f"| {label} | {gpus} | {phase.get('rc', '-')} | {max(losses) if losses else 0} | {fmt(final)} | "
            f"{fmt(last_eval(records))} | {fmt(diff and diff['max_abs'], '.2e')} | "
            + (f"{diff['max_rel']:.2e} ({diff['worst_step']})" if diff else "-")
            + f" | {fmt(diff and diff['first_rel'], '.1e')} | {fmt(speed, ',.0f')} | {fmt(per_gpu, ',.0f')} | "
            f"{fmt(eff, '.3f')} | {phase.get('seconds', '-')} |")

    resume_step, resume_end = config.get("resume_step"), config.get("resume_end")
    fsdp = results.get("fsdp")
    reference = fsdp["losses"] if fsdp else {}
    lines += ["", f"Resume: the FSDP run's step-{resume_step} checkpoint ({n} processes) continued to step "
              f"{resume_end}; reference = the uninterrupted FSDP run.", "",
              "| run | GPUs | exit | first step (expected) | first loss | uninterrupted loss | rel diff | "
              "max rel diff over resumed steps | vs 1-GPU run, max rel | last step |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    resumed = {}
    expected = resume_step + 1 if isinstance(resume_step, int) else None
    for name, label in RESUMES:
        records, phase = logs[name], phases.get(name, {})
        gpus = 1 if name == "resume-1gpu" else n
        losses = train_losses(records or [])
        if not losses:
            lines.append(f"| {label} | {gpus} | {phase.get('rc', '-')} | missing ({expected}) | | | | | | |")
            resumed[name] = None
            continue
        first = min(losses)
        ref = reference.get(first)
        diff = compare(losses, reference)
        vs_single = compare(losses, single)
        first_rel = abs(losses[first] - ref) / abs(ref) if ref else None
        resumed[name] = dict(started=first == expected, first_rel=first_rel,
                             max_rel=diff["max_rel"] if diff else None, last=max(losses))
        lines.append(f"| {label} | {gpus} | {phase.get('rc', '-')} | {first} ({expected}) | {losses[first]:.4f} | "
                     f"{fmt(ref)} | {fmt(first_rel, '.1e')} | {fmt(diff and diff['max_rel'], '.1e')} | "
                     f"{fmt(vs_single and vs_single['max_rel'], '.1e')} | {max(losses)} |")

    lines += ["", f"## Targets (loss: relative difference <= {loss_rtol:g} at every common step; "
              f"scaling efficiency >= {efficiency_target:g})", ""]
    for name, label in RUNS[1:]:
        r = results.get(name)
        diff = r and r["diff"]
        ok = None if not diff else diff["max_rel"] <= loss_rtol
        lines.append(f"- {verdict(ok)} loss {label} x{n} vs 1 GPU: " + (
            f"max rel diff {diff['max_rel']:.2e} at step {diff['worst_step']} over {diff['steps']} steps "
            f"(mean {diff['mean_rel']:.1e}, step {diff['first']}: {diff['first_rel']:.1e})" if diff else "no data"))
    for name, label in RUNS[1:]:
        r = results.get(name)
        eff = r and r["eff"]
        ok = None if eff is None else eff >= efficiency_target
        lines.append(f"- {verdict(ok)} scaling {label} x{n}: efficiency " + (f"{eff:.3f}" if eff else "no data"))
    for name, label in RESUMES:
        r = resumed.get(name)
        if r is None:
            lines.append(f"- {verdict(None)} {label}: no log")
            continue
        ok = r["started"] and r["first_rel"] is not None and r["first_rel"] <= loss_rtol \
            and (r["max_rel"] is None or r["max_rel"] <= loss_rtol)
        lines.append(f"- {verdict(ok)} {label}: started at the saved step + 1: {r['started']}; first-step rel diff "
                     f"{fmt(r['first_rel'], '.1e')}, max {fmt(r['max_rel'], '.1e')} (vs uninterrupted FSDP); "
                     f"ran to step {r['last']}")
    png = plot(out, {name: r["losses"] for name, r in results.items() if r})
    if png is not None:
        lines += ["", f"Loss curves and relative differences: `{png.name}`."]
    if missing:
        lines += ["", f"Missing logs: {', '.join(missing)} (see OUT/NAME.log and phases.tsv)."]
    return "\n".join(lines) + "\n", not missing


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the OUT_DIR of scripts/multi_gpu_check.sh")
    parser.add_argument("--warmup-steps", type=int, default=10, help="steps left out of the tokens/s median")
    parser.add_argument("--loss-rtol", type=float, default=2e-2, help="bf16-noise tolerance of the loss curves")
    parser.add_argument("--efficiency", type=float, default=0.9, help="scaling efficiency target")
    args = parser.parse_args(argv)
    text, complete = report(args.out, args.warmup_steps, args.loss_rtol, args.efficiency)
    (args.out / "multi-gpu.md").write_text(text, encoding="utf-8")
    print(text, end="")
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
