"""Helpers shared by the experiment scripts: list flags, the run environment of a record, and
reading appended JSON-lines results."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
import math
import statistics
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from gdn2.bench.env import software_versions

ROOT = Path(__file__).resolve().parents[1]


def parse_list(kind: Callable):
    """An argparse type: ``"1,2"`` -> ``[kind("1"), kind("2")]``; argparse names it in its errors."""
    def parse(text: str) -> list:
        return [kind(s.strip()) for s in text.split(",") if s.strip()]
    parse.__name__ = f"comma-separated {getattr(kind, '__name__', 'value')} list"
    return parse


def require_args(p, args, nonempty: Sequence[str] = (), positive: Sequence[str] = ()) -> None:
    """``p.error`` (exit 2) naming the first flag among ``nonempty`` that is an empty list or among
    ``positive`` that is not above 0 (a number, or each number of a list): what would otherwise
    run nothing, fail deep in a cell, or append an untrained record."""
    for name in nonempty:
        if not getattr(args, name):
            p.error(f"--{name.replace('_', '-')}: expected at least one value, got none")
    for name in positive:
        value = getattr(args, name)
        if value is not None and any(not v > 0 for v in (value if isinstance(value, list) else [value])):
            p.error(f"--{name.replace('_', '-')}: expected a positive value, got {value}")


def require_mixers(p, names: Sequence[str], allow_attention: bool = False) -> None:
    """``p.error`` naming ``--mixers`` for the first name ``split_mixer`` rejects."""
    for name in names:
        try:
            split_mixer(name, allow_attention)
        except ValueError as e:
            p.error(f"--mixers: {e}")


def environment(device: torch.device) -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except Exception:
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return dict(device=str(device),
                device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                **software_versions(), git_commit=git("rev-parse", "--short", "HEAD"),
                git_dirty=None if status is None else bool(status), source_digest=source_digest())


def source_digest(root: Path = ROOT) -> str:
    """12 hex digits of SHA-256 over the code that makes a record (``gdn2/`` and ``experiments/``
    Python files, paths and contents), read from the tree itself. A copy of a checkout can carry an
    older ``.git`` than its files (the device machine's did, 2026-12-07), and then ``git_commit`` names
    the wrong tree; this names the right one: run it at a commit and compare."""
    h = hashlib.sha256()
    for path in sorted([*(root / "gdn2").rglob("*.py"), *(root / "experiments").glob("*.py")]):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def split_mixer(name: str, allow_attention: bool = False) -> Tuple[str, bool]:
    """``"gdn2+neg"`` -> ``("gdn2", True)`` (the erase gate in [0, 2]); validates the name: a
    linear mixer preset, or ``attention`` / ``attention_conv`` where the experiment allows it (never
    with ``+neg``)."""
    from gdn2.eval.mqar_train import ATTENTIONS, mqar_mixers

    names = [m for m in mqar_mixers() if allow_attention or m not in ATTENTIONS]
    preset, neg = (name[:-4], True) if name.endswith("+neg") else (name, False)
    if preset not in names or (neg and preset in ATTENTIONS):
        raise ValueError(f"unknown mixer {name!r}; choose from {', '.join(names)} (presets also as NAME+neg)")
    return preset, neg


def loss_curve(values: Sequence[float], points: int = 10) -> List[float]:
    """A training loss as ``points`` means of consecutive stretches (NaN steps left out)."""
    values = [v for v in values if not math.isnan(v)]
    return [round(statistics.fmean(chunk), 4) for i in range(points)
            if (chunk := values[i * len(values) // points:(i + 1) * len(values) // points])]


def first_step_below(values: Sequence[float], threshold: float, window: int = 50) -> Optional[int]:
    """The first step (1-based, counting every step) at which the mean of the last ``window``
    non-NaN losses is under ``threshold``, once ``window`` of them are in; None if never. For a run
    that sits on a plateau and then leaves it, when it left."""
    recent: List[float] = []
    total = 0.0
    for step, v in enumerate(values, 1):
        if math.isnan(v):
            continue
        recent.append(v)
        total += v
        if len(recent) > window:
            total -= recent.pop(0)
        if len(recent) == window and total / window < threshold:
            return step
    return None
