"""Where the numbers of a run go: a JSON-lines log (always), TensorBoard (when installed), and
a loss-curve PNG drawn from the log at the end (when matplotlib is installed).

Each log line is one record: ``{"kind": "train", "step", "loss", "lr", "grad_norm", "tokens",
"tokens_per_s", "time"}`` after an optimizer step, ``{"kind": "eval", "step", "loss", "ppl",
"tokens"}`` after a held-out evaluation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Union


class RunLog:
    """Appends records to ``path`` (JSON lines) and, if ``tensorboard`` is importable, to an event
    file under ``tensorboard_dir``. ``truncate_after(step)`` drops the records of steps after a
    checkpoint, so that a resumed run's log has every step once."""

    def __init__(self, path: Union[str, os.PathLike], tensorboard_dir: Optional[Union[str, os.PathLike]] = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self._writer = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:   # tensorboard is optional
                pass
            else:
                self._writer = SummaryWriter(str(tensorboard_dir))

    def write(self, record: Dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in record.items():
                if key not in ("kind", "step") and isinstance(value, (int, float)):
                    self._writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def truncate_after(self, step: int) -> None:
        kept = [r for r in read_log(self.path) if r["step"] <= step]
        self._file.close()
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        self._file = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()


def read_log(path: Union[str, os.PathLike]) -> List[Dict]:
    """The records of a JSON-lines file ([] when it does not exist). A last line cut short by a
    killed run is dropped, so the run can resume; a bad line anywhere else is an error."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = [json.loads(line) for line in lines[:-1]]
    try:
        records += [json.loads(line) for line in lines[-1:]]
    except json.JSONDecodeError:
        pass
    return records


def append_records(path: Union[str, os.PathLike], records: Iterable[Dict]) -> None:
    """Append ``records`` to a JSON-lines file as whole lines, safe with several processes appending
    to one file: one write under an exclusive lock (where ``fcntl`` exists), so no process's lines
    land inside another's. A last line left unfinished by a writer killed mid-line (``read_log``
    drops it) is cut off first; appended to, it would make a bad line of the next record."""
    path = Path(path)
    data = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        try:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:   # not POSIX: no lock
            pass
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            tail = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
            os.ftruncate(fd, size - len(tail) + tail.rfind(b"\n") + 1)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)   # releases the lock


def plot_losses(log_path: Union[str, os.PathLike], png_path: Union[str, os.PathLike], title: str = "") -> bool:
    """Draw the training loss (and its running mean) and the held-out loss against the step into
    ``png_path``; returns False, drawing nothing, when matplotlib is missing or the log is empty."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    records = read_log(log_path)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    if not train and not evals:
        return False
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    if train:
        steps, losses = [r["step"] for r in train], [r["loss"] for r in train]
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, lw=1, label="train (per step)")
        window = max(1, len(losses) // 25)
        smooth = [sum(losses[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1))
                  for i in range(len(losses))]
        ax.plot(steps, smooth, color="tab:blue", lw=2, label=f"train (mean of {window})")
    if evals:
        ax.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", color="tab:red", label="held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    return True
