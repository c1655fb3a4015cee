"""The needle experiment's records and their summary (``experiments/needle.py``): the fields
that define a protocol, ``<results>/needle_summary.md`` (mean +- sample std over seeds per kind,
mixer, task and length, and the step each seed left the plateau) and ``<results>/needle_accuracy.png``
(accuracy against evaluation length, when matplotlib is installed).

    python experiments/needle.py --summary-only --out RESULTS   # rewrite both from RESULTS/needle.jsonl
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from gdn2.train.metrics import read_log

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"recurrent": "L", "hybrid": "LS"}
ALL_TASKS = "S-NIAH-1,S-NIAH-2,S-NIAH-3,MK-NIAH-1"
RESULTS = "needle.jsonl"
SUMMARY = "needle_summary.md"
PLOT = "needle_accuracy.png"
EXIT_NATS = 1.0       # the needle answers' loss (50-step mean) under which a run has left the plateau
# fields of a record that must agree for --resume to count it, and that separate summary sections
PROTOCOL = ("d_model", "num_layers", "num_heads", "intermediate_size", "sliding_window", "seq_len", "steps",
            "batch_size", "lr", "warmup_steps", "weight_decay", "needle_fraction", "needle_loss", "train_tasks",
            "train_pool", "vocab_size", "corpus", "eval_tasks", "eval_lengths", "eval_examples", "eval_seed",
            "train_lengths", "amp", "no_document_resets")


def fmt_length(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def _mean_std(values: Sequence[float]) -> str:
    if len(values) < 2:  # a sample std needs two seeds
        return f"{statistics.fmean(values):.1f}"
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"


def _exit_steps(rs: Sequence[dict]) -> str:
    """Steps to leave the plateau, per seed in seed order ("never" within the run's steps; "-" for
    records made before it was kept)."""
    cells = []
    for r in rs:
        if "needle_steps_to_1_nat" not in r:
            cells.append("-")
        else:
            step = r["needle_steps_to_1_nat"]
            cells.append(str(step) if step is not None else "never")
    return ", ".join(cells)


def summarize(results: Path = ROOT / "experiments" / "results", out: Optional[Path] = None) -> str:
    """``<results>/needle_summary.md`` from ``<results>/needle.jsonl`` (or ``results`` itself if it is a
    file): per protocol and kind, one row per mixer, accuracy (%) mean ± sample std over seeds for
    every (task, length) and their average; n = seeds. A cell recorded twice counts once (the latest)."""
    results = Path(results)
    path = results if results.is_file() else results / RESULTS
    out = Path(out) if out is not None else path.parent / SUMMARY
    latest: Dict[tuple, dict] = {}
    for r in read_log(path):
        if r.get("task") == "needle":
            # a field missing from a record (made before the field existed) reads as None, its
            # default, as --resume reads it
            protocol = tuple((k, json.dumps(r.get(k))) for k in PROTOCOL)
            latest[(protocol, r["kind"], r["mixer"], r["seed"])] = r
    sections: Dict[tuple, Dict[str, Dict[str, List[dict]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for (protocol, kind, mixer, _), r in latest.items():
        sections[protocol][kind][mixer].append(r)
    lines = ["# Needle retrieval under interference (experiment 2)", "",
             "Accuracy (%) of greedy answers (RULER string match) on held-out samples, mean ± sample std over "
             "seeds (n seeds; the mean alone when n = 1). Trained at seq_len tokens on corpus + needle rows; longer "
             "lengths test length generalisation. State: floats of one recurrent layer's state (heads x K x V). "
             f"Steps to < {EXIT_NATS:g} nat: per seed, the first step at which the needle answers' loss (mean of 50 "
             "steps) fell under it, when the run left the plateau.",
             ""]
    if not latest:
        lines.append("No records yet.")
    kind_order, task_order = list(KINDS), ALL_TASKS.split(",")
    for protocol, kinds in sections.items():
        values = {k: json.loads(v) for k, v in protocol}
        about = ", ".join(f"{k}={v if not isinstance(v, list) else ','.join(map(str, v))}"
                          for k, v in values.items() if k not in ("eval_tasks", "eval_lengths") and v is not None)
        lines += [f"## {about}", ""]
        for kind in sorted(kinds, key=lambda k: (kind_order.index(k) if k in kind_order else len(kind_order), k)):
            mixers = kinds[kind]
            columns = []
            for rs in mixers.values():
                for r in rs:
                    for task, by_length in r["accuracy"].items():
                        for length in by_length:
                            columns.append((task, int(length)))
            columns = sorted(set(columns), key=lambda c: (task_order.index(c[0]) if c[0] in task_order
                                                          else len(task_order), c[0], c[1]))
            pattern = next(iter(mixers.values()))[0].get("pattern", KINDS.get(kind, "?"))
            lines += [f"### {kind} (pattern {pattern})", "",
                      "| Mixer | State | n | " + " | ".join(f"{t} {fmt_length(n)}" for t, n in columns)
                      + f" | Average | steps to < {EXIT_NATS:g} nat |", "|---|---:|---:|" + "---:|" * (len(columns) + 2)]
            for mixer, rs in mixers.items():
                rs = sorted(rs, key=lambda r: r["seed"])
                cells = []
                for task, length in columns:
                    vals = [r["accuracy"][task][str(length)] for r in rs if str(length) in r["accuracy"].get(task, {})]
                    cells.append(_mean_std(vals) + (f" ({len(vals)})" if len(vals) != len(rs) else "") if vals else "")
                averages = [statistics.fmean(v for by in r["accuracy"].values() for v in by.values())
                            for r in rs if r["accuracy"]]
                lines.append(f"| {mixer} | {rs[0].get('state_size', '')} | {len(rs)} | " + " | ".join(cells)
                             + f" | {_mean_std(averages) if averages else ''} | {_exit_steps(rs)} |")
            lines += [""] + _beyond_reach_table(mixers, columns)
    out.parent.mkdir(parents=True, exist_ok=True)
    if latest:
        png = out.parent / PLOT
        lines += ([f"![accuracy against evaluation length]({PLOT})", ""] if needle_plot(sections, png)
                  else ["(matplotlib is not installed: no plot)", ""])
    text = "\n".join(lines).rstrip() + "\n"
    out.write_text(text, encoding="utf-8")
    return text


def _beyond_reach_table(mixers: Dict[str, List[dict]], columns: Sequence[tuple]) -> List[str]:
    """Markdown lines: the accuracy over the samples whose needle lies beyond the attention layers'
    reach (``accuracy_beyond_reach``), mean over seeds with the samples per seed; none for models
    without attention or records made before it was kept."""
    reach = {r.get("attention_reach") for rs in mixers.values() for r in rs if "accuracy_beyond_reach" in r} - {None}
    if not reach or reach == {0}:
        return []
    columns = [(t, n) for t, n in columns
               if any(str(n) in r.get("accuracy_beyond_reach", {}).get(t, {}) for rs in mixers.values() for r in rs)]
    if not columns:   # every needle within reach (short evaluation lengths)
        return []
    lines = [f"Beyond the attention's reach ({', '.join(map(str, sorted(reach)))} tokens: attention layers x window "
             "+ the short convolutions), "
             "where only the recurrent state can carry the needle: accuracy (%), mean over seeds (samples a seed).", "",
             "| Mixer | n | " + " | ".join(f"{t} {fmt_length(n)}" for t, n in columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for mixer, rs in mixers.items():
        rs = [r for r in sorted(rs, key=lambda r: r["seed"]) if "accuracy_beyond_reach" in r]
        if not rs:
            continue
        cells = []
        for task, length in columns:
            got = [r["accuracy_beyond_reach"].get(task, {}).get(str(length)) for r in rs]
            got = [g for g in got if g]
            cells.append(f"{_mean_std([g[0] for g in got])} ({got[0][1]})" if got else "")
        lines.append(f"| {mixer} | {len(rs)} | " + " | ".join(cells) + " |")
    return lines + [""]


def needle_plot(sections: Dict[tuple, Dict[str, Dict[str, List[dict]]]], path: Path) -> Optional[str]:
    """Accuracy (mean ± std over seeds) against evaluation length, one line per mixer; one row of
    subplots per (protocol, kind), one column per task. None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    task_order = ALL_TASKS.split(",")
    panels = []
    for protocol, kinds in sections.items():
        values = dict((k, json.loads(v)) for k, v in protocol)
        for kind, mixers in kinds.items():
            tasks = sorted({t for rs in mixers.values() for r in rs for t in r["accuracy"]},
                           key=lambda t: (task_order.index(t) if t in task_order else len(task_order), t))
            panels.append((f"{kind}, trained at {values.get('seq_len')} tokens, {values.get('steps')} steps",
                           mixers, tasks))
    cols = max(len(tasks) for _, _, tasks in panels)
    fig, axes = plt.subplots(len(panels), cols, figsize=(4 * cols, 3.2 * len(panels)), squeeze=False)
    for row, (title, mixers, tasks) in zip(axes, panels):
        for ax, task in zip(row, tasks):
            for mixer, rs in mixers.items():
                lengths = sorted({int(n) for r in rs for n in r["accuracy"].get(task, {})})
                runs = [[r["accuracy"][task][str(n)] for r in rs if str(n) in r["accuracy"].get(task, {})]
                        for n in lengths]
                ax.errorbar(lengths, [statistics.fmean(v) for v in runs],
                            yerr=[statistics.stdev(v) if len(v) > 1 else 0.0 for v in runs],
                            marker="o", capsize=3, label=f"{mixer} (n={len(rs)})")
            ax.set_xscale("log", base=2)
            ticks = sorted({int(n) for rs in mixers.values() for r in rs for n in r["accuracy"].get(task, {})})
            ax.set_xticks(ticks, [fmt_length(n) for n in ticks])
            ax.minorticks_off()
            ax.set_xlabel("evaluation length (tokens)")
            ax.set_ylabel("accuracy (%)")
            ax.set_ylim(-2, 102)
            ax.set_title(f"{task}: {title}", fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        for ax in row[len(tasks):]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
