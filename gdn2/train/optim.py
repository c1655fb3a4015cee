"""AdamW with the GDN-2 weight-decay exclusions, and the warm-up + cosine learning-rate schedule.

Weight decay pulls weights towards zero. That is meant for the projection matrices, not for
``A_log`` and ``dt_bias`` (their zero is not "no effect": they set the decay rates, spec section 7),
nor for norm gains (zero silences a channel), biases or embeddings. The official implementation
decays everything; here those parameters go into a group with ``weight_decay = 0``.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Set

import torch
from torch import nn

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def no_decay_names(model: nn.Module) -> Set[str]:
    """Full names of the parameters that take no weight decay: those the model names in
    ``no_weight_decay()`` or flags ``_no_weight_decay`` (``A_log``, ``dt_bias``), and every
    parameter of an embedding or a norm (any module whose class name ends in ``Norm``), and biases."""
    names = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    for prefix, module in model.named_modules():
        whole = isinstance(module, (nn.Embedding, *NORM_TYPES)) or type(module).__name__.endswith("Norm")
        for name, param in module.named_parameters(recurse=False):
            if whole or name == "bias" or getattr(param, "_no_weight_decay", False):
                names.add(f"{prefix}.{name}" if prefix else name)
    return names


def parameter_groups(model: nn.Module, weight_decay: float, no_decay: Set[str]) -> List[Dict]:
    """Two AdamW groups: ``decay`` (weight_decay) and ``no_decay`` (0). Tied parameters appear once."""
    decay, keep = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (keep if name in no_decay else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": keep, "weight_decay": 0.0, "name": "no_decay"}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.95),
                    no_decay: Optional[Set[str]] = None) -> torch.optim.AdamW:
    """AdamW over ``parameter_groups``. ``no_decay`` defaults to ``no_decay_names(model)``; pass it
    when ``model`` is wrapped (FSDP2 replaces parameters by DTensors, which drop the flags)."""
    no_decay = no_decay_names(model) if no_decay is None else no_decay
    return torch.optim.AdamW(parameter_groups(model, weight_decay, no_decay), lr=lr, betas=betas)


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """The learning rate of update ``step`` (0-based) as a fraction of the peak: linear from
    ``1 / warmup_steps`` to 1 over the warm-up, then a cosine down to ``min_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                    min_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` of ``lr_factor``. Its state is the step count; the schedule itself follows the
    config, so a resumed run may be given more steps."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, total_steps, min_ratio))


def apply_hyperparameters(optimizer: torch.optim.Optimizer, scheduler, lr: float, weight_decay: float,
                          betas) -> None:
    """Set the peak learning rate, weight decay and betas of a run (``parameter_groups``' groups) on
    an optimizer and scheduler whose state was just loaded from a checkpoint: the loaded state
    carries the values the checkpoint was written with, and a resumed run's flags override them."""
    for group in optimizer.param_groups:
        group["weight_decay"] = weight_decay if group.get("name") == "decay" else 0.0
        group["betas"] = tuple(betas)
        group["initial_lr"] = lr
    scheduler.base_lrs = [lr for _ in optimizer.param_groups]
    for group, factor in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["lr"] = lr * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]   # what get_last_lr() reports
