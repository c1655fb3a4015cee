"""Checkpoints: written atomically, the last few kept, found again by ``--resume``.

A checkpoint is a directory ``RUN/checkpoints/step-NNNNNNN`` holding

- ``config.json`` + ``model.safetensors``: the model (``save_pretrained``), so
  ``AutoModelForCausalLM.from_pretrained(dir)`` loads it after ``import gdn2``;
- ``tokenizer.json`` + ``tokenizer_config.json``: the tokenizer (``Tokenizer.load(dir)``);
- ``train_config.json``: the ``TrainConfig``;
- ``trainer_state.pt``: step, optimizer and scheduler state, data position, RNG states.

It is written into a temporary directory beside its final place, every file is fsync'ed, and
then the directory is renamed: an interruption at any point leaves either the whole new
checkpoint or none (the earlier ones untouched), and a left-over temporary directory is never
mistaken for a checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import torch

CHECKPOINTS = "checkpoints"
TRAIN_CONFIG = "train_config.json"
TRAINER_STATE = "trainer_state.pt"
_NAME = re.compile(r"^step-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def step_of(path: Union[str, os.PathLike]) -> Optional[int]:
    """The step a checkpoint directory's name gives (None for another name)."""
    match = _NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(parent: Union[str, os.PathLike]) -> List[Path]:
    """The complete checkpoints under ``parent``, oldest step first."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    found = [p for p in parent.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / TRAIN_CONFIG).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def resolve(path: Union[str, os.PathLike]) -> Path:
    """The checkpoint ``path`` names: a checkpoint directory, or a run directory (its latest one)."""
    path = Path(path)
    if (path / TRAIN_CONFIG).is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint or run directory at {path}")
    for parent in (path / CHECKPOINTS, path):
        found = list_checkpoints(parent)
        if found:
            return found[-1]
    raise FileNotFoundError(f"{path} holds no checkpoint (a directory with {TRAIN_CONFIG}, or a run directory "
                            f"with {CHECKPOINTS}/step-*)")


def save(parent: Union[str, os.PathLike], step: int, write: Callable[[Path], None], keep_last: int) -> Path:
    """Write checkpoint ``step`` under ``parent`` atomically: ``write(tmp)`` fills a temporary
    directory in ``parent``, which is fsync'ed and renamed to ``step-NNNNNNN`` (replacing one of
    the same step); then all but the ``keep_last`` newest checkpoints are deleted. If ``write``
    raises, the temporary directory is removed and nothing else changes."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / checkpoint_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=parent))
    old = None
    try:
        write(tmp)
        _fsync_tree(tmp)
        if final.exists():   # rename() cannot replace a non-empty directory: move the old one aside first
            old = Path(tempfile.mkdtemp(prefix=f".old-{final.name}-", dir=parent))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
        _fsync_dir(parent)
    except BaseException:
        if old is not None and not final.exists():
            os.replace(old / final.name, final)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    for stale in list_checkpoints(parent)[:-keep_last]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def remove_leftovers(parent: Union[str, os.PathLike]) -> None:
    """Delete the temporary directories of saves that were interrupted (by a crash or a kill); a
    checkpoint that was moved aside to be replaced, and not replaced, goes back in its place."""
    parent = Path(parent)
    if parent.is_dir():
        for path in parent.iterdir():
            if path.is_dir() and path.name.startswith(".old-step-"):
                for moved in path.iterdir():
                    if _NAME.match(moved.name) and not (parent / moved.name).exists():
                        os.replace(moved, parent / moved.name)
            if path.is_dir() and path.name.startswith((".tmp-step-", ".old-step-")):
                shutil.rmtree(path, ignore_errors=True)


def write_files(directory: Path, model, model_state: Dict[str, torch.Tensor], tokenizer, config: Dict[str, Any],
                trainer_state: Dict[str, Any]) -> None:
    """The contents of a checkpoint (see the module docstring) into ``directory``."""
    with quiet_transformers():
        model.save_pretrained(directory, state_dict=model_state, safe_serialization=True)
    tokenizer.save(directory)
    (directory / TRAIN_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    torch.save(trainer_state, directory / TRAINER_STATE)


@contextlib.contextmanager
def quiet_transformers():
    """Without transformers' progress bars (saving and loading draw one, which would cut into the
    training bar and the command's output)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def read_config(checkpoint: Union[str, os.PathLike]) -> Dict[str, Any]:
    return json.loads((Path(checkpoint) / TRAIN_CONFIG).read_text(encoding="utf-8"))


def read_trainer_state(checkpoint: Union[str, os.PathLike], map_location: Optional[str] = "cpu") -> Dict[str, Any]:
    return torch.load(Path(checkpoint) / TRAINER_STATE, map_location=map_location, weights_only=True)


def _fsync_tree(root: Path) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(directory))


def _fsync_dir(directory: Path) -> None:
    """Make a directory's entries (a rename into it) durable; not possible on every platform."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
