"""``last_tensor_cache``: the packed offsets read on the host once per step, never a stale value."""

import gc

import pytest
import torch

from gdn2.ops.gdn2.checks import check_cu_seqlens
from gdn2.ops.utils import last_tensor_cache


def counted(host=True):
    calls = []

    @last_tensor_cache(host=host)
    def offsets(x, scale):
        calls.append(1)
        return [v * scale for v in x.tolist()]
    return offsets, calls


def test_same_tensor_same_arguments_hit():
    f, calls = counted()
    x = torch.tensor([0, 3, 5])
    assert f(x, 1) == f(x, 1) == [0, 3, 5]
    assert len(calls) == 1


def test_in_place_change_other_tensor_or_arguments_miss():
    f, calls = counted()
    x = torch.tensor([0, 3, 5])
    f(x, 1)
    x[1] = 2                                     # the version counter moves
    assert f(x, 1) == [0, 2, 5]
    assert f(x.clone(), 1) == [0, 2, 5]          # equal values, another object
    assert f(x, 2) == [0, 4, 10]
    assert len(calls) == 4


def test_inference_tensors_are_not_cached():
    f, calls = counted()
    with torch.inference_mode():
        x = torch.tensor([0, 1])
        f(x, 1), f(x, 1)
    assert len(calls) == 2


def test_host_tensors_are_not_cached_by_default():
    """Reading a host tensor costs no GPU wait, and writes through numpy or ``.data`` would go
    unseen: only device tensors are cached."""
    f, calls = counted(host=False)
    x = torch.tensor([0, 1])
    f(x, 1)
    x.numpy()[1] = 5                             # no version bump
    assert f(x, 1) == [0, 5] and len(calls) == 2


def test_holds_no_reference():
    f, _ = counted()
    x = torch.tensor([0, 1])
    f(x, 1)
    ref = __import__("weakref").ref(x)
    del x
    gc.collect()
    assert ref() is None


def test_invalid_offsets_raise_every_time():
    cu = torch.tensor([0, 5, 3])
    for _ in range(2):
        with pytest.raises(ValueError, match="non-decreasing"):
            check_cu_seqlens(cu, 1, 3)
    good = torch.tensor([0, 2, 3])
    assert check_cu_seqlens(good, 1, 3) == 2
    with pytest.raises(ValueError, match="end at T = 4"):    # the same tensor, another T
        check_cu_seqlens(good, 1, 4)


def test_a_value_made_in_inference_mode_is_not_kept():
    """A normal tensor first seen under inference mode: its value there is an inference tensor,
    which a later training call could not save for its backward, so it is not kept; plain values
    (the offsets as a list) are."""
    calls = []

    @last_tensor_cache(host=True)
    def as_int32(x):
        calls.append(1)
        return x.to(torch.int32)

    x = torch.tensor([0, 3, 5])
    with torch.inference_mode():
        assert as_int32(x).is_inference()
    again = as_int32(x)
    assert not again.is_inference() and len(calls) == 2
    assert as_int32(x) is again and len(calls) == 2      # outside inference mode: kept
    f, list_calls = counted()
    with torch.inference_mode():
        f(x, 1)
    f(x, 1)
    assert len(list_calls) == 1
