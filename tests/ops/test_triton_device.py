"""Triton launches on the current CUDA device: the launchers make the inputs' device current
when it is not (a CUDA-free check of the choice; the launch itself needs two GPUs)."""

import contextlib
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("triton")


def test_on_device_of_switches_only_when_needed(monkeypatch):
    from gdn2.ops.gdn2.triton import common
    entered = []
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda d: entered.append(d) or contextlib.nullcontext())
    on_card = lambda i: SimpleNamespace(is_cuda=True, device=SimpleNamespace(index=i))  # noqa: E731
    with common.on_device_of(on_card(1)):
        pass
    with common.on_device_of(on_card(0)):
        pass
    with common.on_device_of(torch.zeros(1)):
        pass
    assert [d.index for d in entered] == [1]
