"""Where a training step's time goes: the device kernels ``torch.profiler`` recorded, per step."""

from __future__ import annotations

from collections import defaultdict
from typing import List, Tuple

import torch


def kernel_table(prof, steps: int, top: int = 12) -> Tuple[float, float, List[Tuple[str, float, float]]]:
    """From a finished ``torch.profiler.profile`` over ``steps`` steps: the device time of its
    kernels a step (ms; copies and fills included), the launches a step, and the ``top``
    costliest kernels as (name, launches a step, ms a step).

    >>> with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as p:
    ...     _ = torch.ones(2) + 1
    >>> kernel_table(p, 1)[:2]   # no device: no kernels
    (0.0, 0.0)
    """
    kernels = defaultdict(lambda: [0, 0.0])            # name -> [launches, device microseconds]
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            kernels[e.name][0] += 1
            kernels[e.name][1] += e.time_range.elapsed_us()
    device_ms = sum(v[1] for v in kernels.values()) / 1e3 / steps
    launches = sum(v[0] for v in kernels.values()) / steps
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1][1])[:top]
    return device_ms, launches, [(name, c / steps, us / steps / 1e3) for name, (c, us) in ranked]
