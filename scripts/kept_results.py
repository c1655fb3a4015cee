"""Experiment records kept on a warm GPU machine between calls (used by gpu_experiments.sh).

    python scripts/kept_results.py take RESULTS KEPT   # at a call's start
    python scripts/kept_results.py save RESULTS KEPT [COPY]   # while it runs and at its end

Each call gets a fresh copy of the checkout, so records a call appended are gone from the next
one's ``RESULTS`` unless they were copied home in between; ``--resume`` would then run their cells
again. A warm machine keeps ``/tmp``, so ``save`` keeps the complete lines of each results file
under ``KEPT`` (a periodic save survives a call killed at its time limit), and ``take`` puts them
back when the checkout's file arrived as the last call's did (``<file>.base``: nothing changed it
at home since) and the kept file extends it. A checkout changed at home (records copied home,
trimmed or merged) is left as it is: kept records never override a decision made at home.
``save`` also writes the same complete lines to ``COPY`` where given (the call's output folder, so
that a call cut off at its limit still brings them home).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

FILES = ("mqar.jsonl", "needle.jsonl")
NEWLINE = b"\n"


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")   # the periodic save and the final one may overlap
    tmp.write_bytes(data)
    os.replace(tmp, path)


def take(results: Path, kept: Path) -> None:
    for name in FILES:
        here, there, base = results / name, kept / name, kept / (name + ".base")
        current = _read(here)
        if there.exists() and base.exists() and current == _read(base):
            records = _read(there)
            if len(records) > len(current) and records.startswith(current):
                _write(here, records)
                count = records.count(NEWLINE) - current.count(NEWLINE)
                print(f"took back {count} record(s) of {name} from this machine's last call ({there})")
        _write(base, current)   # the checkout as it came: the next call compares its own with it


def _read_locked(path: Path) -> bytes:
    """The file as no appender is writing it: ``gdn2.train.metrics.append_records`` writes a model's
    records in one write under an exclusive lock, so a shared one never sees part of a model's lines."""
    if not path.exists():
        return b""
    with open(path, "rb") as f:
        try:
            import fcntl
            fcntl.flock(f, fcntl.LOCK_SH)
        except ImportError:   # not POSIX: whole lines only, below
            pass
        return f.read()   # the lock goes with the file


def save(results: Path, kept: Path, *copies: Path) -> None:
    for name in FILES:
        data = _read_locked(results / name)
        whole = data[:data.rfind(NEWLINE) + 1]   # a line being appended now is left for the next save
        if whole:
            for folder in (kept, *copies):
                _write(folder / name, whole)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[0] not in ("take", "save") or len(argv) > (3 if argv[0] == "take" else 4):
        print(__doc__.strip().splitlines()[0] + "\nusage: kept_results.py take RESULTS KEPT | save RESULTS KEPT [COPY]",
              file=sys.stderr)
        return 2
    (take if argv[0] == "take" else save)(*map(Path, argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
