"""Summaries of the experiment results in ``experiments/results/*.jsonl``.

    python experiments/report.py [--results experiments/results]

MQAR (records with ``"task": "mqar"``) -> ``<results>/mqar_summary.md`` and
``<results>/mqar_accuracy.png`` (the plot needs matplotlib; without it the summary says so).
Per (mixer, d_model, setting, protocol): the learning rate the sweep chose (the best at the first
seed, as ``experiments/mqar.py`` runs the other seeds only there), and the mean +- sample std over
the seeds at that learning rate (n shown). The best mean would favour learning rates run at one seed. A cell recorded twice (same
mixer, d_model, setting, protocol, lr, seed) counts once, the latest record.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
# The fields of an MQAR record that define its training protocol, each with the value that
# records written before the field existed were trained with.
# ``tests``: the settings a mixture-trained model was tested at, whose mean chooses its rate (None
# for --train single, where each record is its own setting); before the field, Zoology's under the
# vocabulary for Zoology's mixture (the sweep's default), unknown (None) for another mixture.
PROTOCOL = {"steps": None, "batch_size": None, "vocab_size": None, "num_layers": None, "num_heads": None,
            "lr_schedule": "cosine", "train": "single", "tests": None}


def tested_at(settings) -> str:
    """``[(64, 4), (128, 8)]`` -> ``"64:4,128:8"``, a protocol's ``tests``."""
    return ",".join(f"{t}:{p}" for t, p in settings)


@functools.lru_cache(maxsize=None)
def _zoology_tests(vocab_size: int) -> str:
    from gdn2.eval.mqar import ZOOLOGY_TEST_SETTINGS
    return tested_at(s for s in ZOOLOGY_TEST_SETTINGS if s[0] < vocab_size)


def protocol_of(record: dict) -> tuple:
    values = {k: record.get(k, default) for k, default in PROTOCOL.items()}
    # the sweep's default applies to Zoology's mixture only: a record of another mixture without the
    # field was tested at settings of its own, which its protocol key cannot know
    if values["tests"] is None and values["train"] == "zoology":
        values["tests"] = _zoology_tests(values["vocab_size"])
    return tuple(values.values())


def load(results: Path) -> List[dict]:
    records = []
    for path in sorted(results.glob("*.jsonl")):
        with path.open(encoding="utf-8") as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records


def choose_lr(at_first: Dict[float, float], seeds: Optional[Dict[float, int]] = None) -> Optional[float]:
    """The learning rate a sweep keeps, from each rate's accuracy at the first seed: the highest; on
    a tie, the rate with more ``seeds`` on record (the one the sweep already ran its other seeds at),
    then the smaller rate. None if no rate has a result. The one rule of the MQAR sweep's phase 3
    (``experiments/mqar.py``) and of this report, so the report names the rate the seeds ran at.

    >>> choose_lr({1e-3: 0.5, 3e-3: 0.5}), choose_lr({1e-3: 0.5, 3e-3: 0.5}, {3e-3: 3})
    (0.001, 0.003)
    """
    if not at_first:
        return None
    seeds = seeds or {}
    return max(sorted(at_first), key=lambda lr: (at_first[lr], seeds.get(lr, 0), -lr))


def chosen_lr(by_lr: Dict[float, List[dict]]) -> float:
    """The sweep's learning rate (``choose_lr``, the rule its phase 3 follows) from each rate's
    accuracy at the first seed: a mixture-trained model's mean over its tested settings
    (``selection_accuracy``), as the sweep chose."""
    first = min(r["seed"] for rs in by_lr.values() for r in rs)
    at_first = {lr: next(r.get("selection_accuracy", r["accuracy"]) for r in rs if r["seed"] == first)
                for lr, rs in by_lr.items() if any(r["seed"] == first for r in rs)}
    return choose_lr(at_first, {lr: len(rs) for lr, rs in by_lr.items()})


def _cell(r: dict) -> tuple:
    return (r["mixer"], r["d_model"], r["seq_len"], r["num_kv_pairs"], *protocol_of(r), float(r["lr"]), r["seed"])


def superseded(records: Sequence[dict]) -> int:
    """MQAR records that a later record of the same cell replaces (a cell run twice: the summary
    keeps the latest and says how many it set aside)."""
    cells = [_cell(r) for r in records if r.get("task") == "mqar"]
    return len(cells) - len(set(cells))


def mqar_rows(records: Sequence[dict]) -> List[dict]:
    """One row per (mixer, d_model, seq_len, pairs, protocol): best LR, mean, std, n, LRs tried."""
    latest: Dict[tuple, dict] = {}
    for r in records:
        if r.get("task") == "mqar":
            latest[_cell(r)] = r
    groups: Dict[tuple, Dict[float, List[dict]]] = defaultdict(lambda: defaultdict(list))
    for key, r in latest.items():
        groups[key[:-2]][key[-2]].append(r)
    rows = []
    for key, by_lr in groups.items():
        mean = {lr: statistics.fmean(r["accuracy"] for r in rs) for lr, rs in by_lr.items()}
        lr = chosen_lr(by_lr)
        accs = [r["accuracy"] for r in sorted(by_lr[lr], key=lambda r: r["seed"])]
        first = by_lr[lr][0]
        exits = [r.get("steps_to_half_loss", "-") for r in sorted(by_lr[lr], key=lambda r: r["seed"])]
        rows.append(dict(mixer=key[0], d_model=key[1], seq_len=key[2], num_kv_pairs=key[3],
                         **dict(zip(PROTOCOL, key[4:])), best_lr=lr, mean=mean[lr], exits=exits,
                         std=statistics.stdev(accs) if len(accs) > 1 else 0.0, n=len(accs),
                         state_size=first.get("state_size"), state_kind=first.get("state_kind"),
                         lrs={x: (mean[x], len(by_lr[x])) for x in sorted(by_lr)}))
    order = {m: i for i, m in enumerate(dict.fromkeys(r["mixer"] for r in records if r.get("task") == "mqar"))}
    # one section per setting and protocol: every protocol field in the key, before the mixers;
    # Zoology's protocol (issue 8's) first, the single-setting probes after it
    rows.sort(key=lambda r: (r["train"] != "zoology", r["seq_len"], r["num_kv_pairs"],
                             tuple(_sortable(r[k]) for k in PROTOCOL), r["d_model"], order[r["mixer"]]))
    return rows


def mqar_markdown(rows: Sequence[dict], plot_note: str = "", replaced: int = 0) -> str:
    lines = ["# MQAR results", "",
             "Accuracy (%) at the learning rate the sweep chose (the best at the first seed), mean ± sample std over the n seeds (the mean alone when n = 1) "
             "at that LR. State: floats of one layer's recurrent state (heads x K x V); for attention, its KV "
             "cache at seq_len. The other LRs are shown as lr: mean (n). Left the plateau: per seed at the chosen LR, "
             "the step at which the loss (mean of 50 steps) fell under half its first 50 steps' ('never' within the "
             "run; '-' for records made before it was kept)."
             + (f" {replaced} record(s) of cells run twice are set aside for the later run of the same cell."
                if replaced else ""), ""]
    if not rows:
        return "\n".join(lines + ["No MQAR records found.", ""])
    lines += glance(rows)
    header = None
    for r in rows:
        setting = (r["seq_len"], r["num_kv_pairs"], *(r[k] for k in PROTOCOL))
        if setting != header:
            header = setting
            lines += ["", f"## T={r['seq_len']}, P={r['num_kv_pairs']} "
                          f"({', '.join(f'{k}={r[k]}' for k in PROTOCOL if r[k] is not None)})", "",
                      "| Mixer | d_model | State | Best LR | Accuracy (%) | n | All LRs | Left the plateau |",
                      "|---|---:|---:|---:|---:|---:|---|---|"]
        others = ", ".join(f"{lr:g}: {100 * m:.1f} ({n})" for lr, (m, n) in r["lrs"].items())
        state = f"{r['state_size']}" + (" (KV)" if r["state_kind"] == "kv_cache" else "")
        lines.append(f"| {r['mixer']} | {r['d_model']} | {state} | {r['best_lr']:g} | "
                     + (f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}" if r['n'] > 1 else f"{100 * r['mean']:.1f}")
                     + f" | {r['n']} | {others} | {', '.join('never' if e is None else str(e) for e in r['exits'])} |")
    if plot_note:
        lines += ["", plot_note]
    return "\n".join(lines) + "\n"


def _sortable(value) -> tuple:
    """A protocol field's value as a sort key: numbers as numbers (4000 before 16000), None first."""
    return (value is not None, value if isinstance(value, (int, float)) else 0, str(value))


def glance(rows: Sequence[dict]) -> List[str]:
    """Zoology-protocol models one row each (mixer, d_model), every tested setting a column: the
    accuracy at the chosen learning rate (mean over seeds; n, as a range where settings differ, in
    the last column). Where several Zoology protocols have records, a column names each row's."""
    zoo = [r for r in rows if r["train"] == "zoology"]
    if not zoo:
        return []
    settings = sorted({(r["seq_len"], r["num_kv_pairs"]) for r in zoo})
    models: Dict[tuple, Dict[tuple, dict]] = defaultdict(dict)
    for r in zoo:
        models[(tuple(r[k] for k in PROTOCOL), r["d_model"], r["mixer"])][(r["seq_len"], r["num_kv_pairs"])] = r
    several = len({key[0] for key in models}) > 1
    varying = [k for i, k in enumerate(PROTOCOL) if len({key[0][i] for key in models}) > 1]
    out = ["", "## Zoology's protocol at a glance", "",
           "Accuracy (%) per tested setting (T:P), mean over the seeds at the chosen learning rate (one model "
           "per mixer, trained on Zoology's mixture, tested everywhere). Sections below give each setting "
           "with standard deviations and every learning rate.", "",
           "| Mixer | d_model | " + ("Protocol | " if several else "") + "Best LR | "
           + " | ".join(f"{t}:{p}" for t, p in settings) + " | n |",
           "|---|---:|" + ("---|" if several else "") + "---:|" + "---:|" * len(settings) + "---:|"]
    for (protocol, d, mixer), cells in sorted(models.items(),
                                              key=lambda kv: (tuple(map(_sortable, kv[0][0])), kv[0][1])):
        lrs = sorted({c["best_lr"] for c in cells.values()})
        ns = sorted({c["n"] for c in cells.values()})
        named = ", ".join(f"{k}={v}" for k, v in zip(PROTOCOL, protocol) if k in varying)
        out.append(f"| {mixer} | {d} | " + (f"{named} | " if several else "")
                   + ("/".join(f"{lr:g}" for lr in lrs) + (" (differs by setting)" if len(lrs) > 1 else "")) + " | "
                   + " | ".join(f"{100 * cells[s]['mean']:.1f}" if s in cells else "" for s in settings)
                   + f" | {ns[0] if len(ns) == 1 else f'{ns[0]}-{ns[-1]}'} |")
    return out + [""]


def mqar_plot(rows: Sequence[dict], path: Path) -> Optional[str]:
    """Writes ``mqar_figure(rows)`` to ``path``; None if matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig = mqar_figure(rows)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def mqar_figure(rows: Sequence[dict]):
    """Accuracy against state size, one line per mixer, one panel per setting (Zoology's protocol only
    where it has records; else, where one setting was run with several protocols, the one with the
    most steps), the legend in a panel of its own. Needs matplotlib."""
    import matplotlib.pyplot as plt
    keep: Dict[tuple, dict] = {}
    rows = [r for r in rows if r["train"] == "zoology"] or rows
    for r in rows:
        key = (r["seq_len"], r["num_kv_pairs"], r["mixer"], r["d_model"])
        if key not in keep or (r["steps"] or 0) > (keep[key]["steps"] or 0):
            keep[key] = r
    settings = sorted({k[:2] for k in keep})
    mixers = list(dict.fromkeys(k[2] for k in keep))
    # one colour per mixer on every panel, one legend for the figure (in the spare panel when there is one)
    colour = {m: plt.get_cmap("tab10" if len(mixers) <= 10 else "tab20")(i) for i, m in enumerate(mixers)}
    ncols = min(4, len(settings) + 1)
    nrows = -(-(len(settings) + 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False)
    flat = list(axes.flat)
    handles: Dict[str, object] = {}
    for ax, (t, p) in zip(flat, settings):
        for m in mixers:
            pts = sorted((r["state_size"], r["mean"], r["std"]) for k, r in keep.items() if k[:3] == (t, p, m))
            if not pts:
                continue
            kv = any(r["state_kind"] == "kv_cache" for k, r in keep.items() if k[:3] == (t, p, m))
            h = ax.errorbar([x for x, _, _ in pts], [100 * y for _, y, _ in pts], yerr=[100 * s for _, _, s in pts],
                            marker="o", capsize=3, color=colour[m], linestyle="--" if kv else "-")
            handles.setdefault(m + (" (KV cache)" if kv else ""), h)
        ax.set_xscale("log", base=2)
        ax.set_title(f"MQAR T={t}, P={p}")
        ax.set_xlabel("state size per layer (floats)")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    for ax in flat[len(settings):]:
        ax.axis("off")
    flat[len(settings)].legend(list(handles.values()), list(handles), loc="center", fontsize=8,
                               title="mean ± std over seeds")
    fig.tight_layout()
    return fig


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", type=Path, default=ROOT / "experiments" / "results")
    args = p.parse_args(argv)
    records = load(args.results)
    rows = mqar_rows(records)
    if not rows:   # a folder of other experiments' records (the needle probe's) gets no empty summary
        print(f"no MQAR records in {args.results}: nothing written")
        return 0
    png = args.results / "mqar_accuracy.png"
    note = ("![accuracy against state size](mqar_accuracy.png)" if mqar_plot(rows, png)
            else "(matplotlib is not installed: no plot)")
    md = args.results / "mqar_summary.md"
    md.write_text(mqar_markdown(rows, note, superseded(records)), encoding="utf-8")
    print(f"wrote {md}" + (f" and {png}" if note.startswith("!") else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
