"""Checkpoints for evaluation: a directory with a saved ``GDN2ForCausalLM`` and its tokenizer.

    checkpoint/
      config.json, model.safetensors      GDN2ForCausalLM.save_pretrained
      tokenizer.json, tokenizer_config.json   gdn2.data.Tokenizer.save

This is the layout the training code writes; ``save_checkpoint`` writes it too (tests, scripts).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import torch

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
PathLike = Union[str, os.PathLike]


class CheckpointError(FileNotFoundError):
    """The directory is missing or does not hold a model and a tokenizer."""


def check_checkpoint(path: PathLike) -> Path:
    """``path`` (or, for a run directory of ``gdn2 train``, its latest ``checkpoints/step-*``) as a
    ``Path`` if it holds ``config.json`` and ``tokenizer.json``, else a
    ``CheckpointError`` that says what is missing (and names checkpoints found one level down)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {str(path)!r} does not exist")
    runs = sorted(p for p in path.glob("checkpoints/step-*") if (p / CONFIG_FILE).is_file())
    if not (path / CONFIG_FILE).is_file() and runs:  # a run directory of gdn2 train: its latest checkpoint
        path = runs[-1]
    missing = [name for name in (CONFIG_FILE, TOKENIZER_FILE) if not (path / name).is_file()]
    if missing:
        below = sorted(p.parent.name for p in path.glob(f"*/{CONFIG_FILE}"))
        hint = f"; checkpoints inside it: {', '.join(below[-5:])}" if below else ""
        raise CheckpointError(f"{str(path)!r} is not a checkpoint: no {' or '.join(missing)} (expected a "
                              f"GDN2ForCausalLM.save_pretrained directory with the tokenizer saved in it){hint}")
    return path


def load_checkpoint(path: PathLike, device: Union[str, torch.device, None] = None,
                    dtype: Optional[torch.dtype] = None):
    """``(model, tokenizer)`` from a checkpoint directory; the model is in eval mode.

    Args:
        path: the directory (see the module docstring).
        device: where to put the model (default: CPU).
        dtype: cast the weights (default: as saved).
    """
    path = check_checkpoint(path)
    if device is not None:
        from ..ops.utils import usable_device
        device = usable_device(device)
    from ..data import Tokenizer
    from ..models import GDN2ForCausalLM

    tokenizer = Tokenizer.load(path)
    model = GDN2ForCausalLM.from_pretrained(path)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"{str(path)!r}: the tokenizer has {tokenizer.vocab_size} ids but the model's vocabulary "
                         f"only {model.config.vocab_size}: they do not belong together")
    model = model.to(device=device, dtype=dtype) if (device is not None or dtype is not None) else model
    return model.eval(), tokenizer


def save_checkpoint(model, tokenizer, path: PathLike) -> Path:
    """Write ``model`` (``save_pretrained``) and ``tokenizer`` (``save``) into the directory ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save(path)
    return path
