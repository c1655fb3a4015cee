"""Helpers shared by the experiment scripts: list flags, the run environment of a record, and
reading appended JSON-lines results."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable

import torch

from gdn2.bench.env import software_versions

ROOT = Path(__file__).resolve().parents[1]


def parse_list(kind: Callable):
    return lambda text: [kind(s.strip()) for s in text.split(",") if s.strip()]


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
                git_dirty=None if status is None else bool(status))
