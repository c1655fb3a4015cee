"""Several processes with PyTorch's own engines: DDP or FSDP2 around single-device model code.

``torchrun --nproc_per_node N`` starts the processes; ``setup`` joins the process group (gloo on
CPU, NCCL on GPU) or, in a single process, does nothing. Every process holds the same data state
and reads its own rows of each global batch. State dicts are gathered whole (``full_state_dict``),
so a checkpoint written by N processes under either engine loads in one, and the other way round.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_optimizer_state_dict,
)


@dataclass
class Process:
    """Where this process stands: ``rank`` of ``world_size``, and its device."""

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False   # setup() created the process group, so teardown() destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> Process:
    """Join the process group when launched by ``torchrun`` (or use the one already initialised),
    and choose the device: with ``"auto"``, the process's GPU when there is one, else the CPU."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no GPU is visible")
    owns_group = False
    if not dist.is_initialized() and dist.is_torchelastic_launched():
        dist.init_process_group("nccl" if use_cuda else "gloo")
        owns_group = True
    if not dist.is_initialized():
        return Process(0, 1, torch.device("cuda" if use_cuda else "cpu"))
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if use_cuda:
        local_rank = dist.get_node_local_rank(fallback_rank=rank % torch.cuda.device_count())
        torch.cuda.set_device(local_rank)
        return Process(rank, world_size, torch.device("cuda", local_rank), owns_group)
    return Process(rank, world_size, torch.device("cpu"), owns_group)


def teardown(process: Process) -> None:
    if process.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, process: Process, engine: str) -> nn.Module:
    """The model as the engine runs it: unchanged in one process; DDP replicates it; FSDP2
    (``fully_shard``) shards each block of ``model._no_split_modules``, then the rest."""
    if process.world_size == 1:
        return model
    if engine == "ddp":
        device_ids = [process.device] if process.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if engine == "fsdp":
        from torch.distributed.fsdp import fully_shard

        block_types = tuple(getattr(model, "_no_split_modules", None) or ())
        for module in model.modules():
            if type(module).__name__ in block_types:
                fully_shard(module)
        return fully_shard(model)
    raise ValueError(f"engine must be 'ddp' or 'fsdp', got {engine!r}")


def unwrap(model: nn.Module) -> nn.Module:
    """The model without its DDP wrapper (FSDP2 changes the model in place and has none)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def gradient_sync(model: nn.Module, sync: bool):
    """A context for one micro-batch's forward and backward: when ``sync`` is False the gradients
    only accumulate locally (the last micro-batch of a step reduces them all at once)."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext() if sync else model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def all_reduce_sum(tensor: torch.Tensor, process: Process) -> torch.Tensor:
    """The sum of ``tensor`` over the processes (a new tensor; the input is left alone)."""
    tensor = tensor.detach().clone()
    if process.world_size > 1:
        dist.all_reduce(tensor)
    return tensor


def barrier(process: Process) -> None:
    if process.world_size > 1:
        dist.barrier()


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer) -> Tuple[Dict, Dict]:
    """Whole, CPU copies of the model and optimizer state dicts, keyed by parameter name (a
    collective: every process calls it; with FSDP2 only rank 0's copies are complete)."""
    return get_state_dict(model, optimizer, options=_FULL)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: Dict) -> None:
    """Load a whole optimizer state dict (as ``full_state_dicts`` gives it, on every process) into
    the optimizer of the possibly wrapped or sharded model."""
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
