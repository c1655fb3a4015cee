"""Scoring of RULER samples: RULER's string match, per-(task, length) accuracy, a markdown
table in the layout of the papers' Table 3 (tasks by rows, lengths by columns) and JSON."""

from __future__ import annotations

import json
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .ruler import TASKS


def string_match_all(prediction: str, answers: Sequence[str]) -> float:
    """RULER's NIAH metric for one sample: the fraction of ``answers`` contained in
    ``prediction``, ignoring case (1.0 or 0.0 for a single answer)."""
    if not answers:
        raise ValueError("a sample needs at least one reference answer")
    pred = prediction.lower()
    return sum(answer.lower() in pred for answer in answers) / len(answers)


def _task_order(task: str) -> Tuple[int, str]:
    names = list(TASKS)
    return (names.index(task), "") if task in names else (len(names), task)


def score_ruler(predictions: Sequence[str], samples: Sequence[Mapping]) -> List[dict]:
    """Accuracy per (task, context length), in percent, as RULER reports it.

    Args:
        predictions: the generated continuation of each sample's ``input``, in sample order.
        samples: the samples (``task``, ``context_length`` and ``answers`` are read).

    Returns:
        Rows ``{"task", "context_length", "accuracy", "num_samples"}``, tasks in the order of
        ``TASKS`` (unknown names after them, alphabetically), lengths ascending.
    """
    if len(predictions) != len(samples):
        raise ValueError(f"{len(predictions)} predictions for {len(samples)} samples")
    groups: Dict[Tuple[str, int], List[float]] = {}
    for prediction, sample in zip(predictions, samples):
        key = (sample["task"], int(sample["context_length"]))
        groups.setdefault(key, []).append(string_match_all(prediction, sample["answers"]))
    rows = [{"task": task, "context_length": length, "accuracy": 100.0 * sum(s) / len(s), "num_samples": len(s)}
            for (task, length), s in groups.items()]
    return sorted(rows, key=lambda r: (_task_order(r["task"]), r["context_length"]))


def _length_label(length: int) -> str:
    return f"{length // 1024}K" if length % 1024 == 0 else str(length)


def ruler_table(scores: Sequence[Mapping], digits: int = 1) -> str:
    """A markdown table of ``score_ruler`` rows: one row per task, one column per length, and
    an ``Average`` row over tasks when there are several (blank where a task lacks a length)."""
    tasks = list(dict.fromkeys(r["task"] for r in scores))
    lengths = sorted({int(r["context_length"]) for r in scores})
    cell = {(r["task"], int(r["context_length"])): float(r["accuracy"]) for r in scores}
    lines = ["| Task | " + " | ".join(_length_label(n) for n in lengths) + " |",
             "|---|" + "---:|" * len(lengths)]

    def fmt(value: Optional[float]) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    for task in tasks:
        lines.append(f"| {task} | " + " | ".join(fmt(cell.get((task, n))) for n in lengths) + " |")
    if len(tasks) > 1:
        averages = []
        for n in lengths:
            column = [cell[(t, n)] for t in tasks if (t, n) in cell]
            averages.append(sum(column) / len(column) if column else None)
        lines.append("| Average | " + " | ".join(fmt(a) for a in averages) + " |")
    return "\n".join(lines) + "\n"


def write_ruler_json(path: Union[str, os.PathLike], scores: Sequence[Mapping],
                     samples: Optional[Sequence[Mapping]] = None, predictions: Optional[Sequence[str]] = None,
                     meta: Optional[Mapping] = None) -> None:
    """Write ``{"meta", "scores", "samples"}`` to ``path``. Each sample entry keeps everything
    but the (long) ``input`` and ``input_ids`` and, given ``predictions``, adds ``prediction`` and
    ``score``."""
    if predictions is not None and (samples is None or len(predictions) != len(samples)):
        raise ValueError("predictions need the samples they answer, one each")
    entries = []
    for i, sample in enumerate(samples or ()):
        entry = {k: v for k, v in sample.items() if k not in ("input", "input_ids")}
        if predictions is not None:
            entry["prediction"] = predictions[i]
            entry["score"] = string_match_all(predictions[i], sample["answers"])
        entries.append(entry)
    payload = {"meta": dict(meta or {}), "scores": [dict(r) for r in scores], "samples": entries}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")
