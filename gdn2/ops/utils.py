"""Small numerical helpers shared by every backend."""

import functools
import weakref

import torch


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / sqrt(sum(x**2) + eps)`` over the last axis, computed in float32 or wider.

    >>> l2norm(torch.tensor([[3.0, 4.0]]))
    tensor([[0.6000, 0.8000]])
    """
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    return (xf * torch.rsqrt((xf * xf).sum(-1, keepdim=True) + eps)).to(x.dtype)


def last_tensor_cache(fn):
    """``fn(x, *args)`` remembered for the last call: the same tensor object ``x``, unmodified
    since (its version counter), and equal ``args``. Every layer of a model's forward and backward
    gets the same packed offsets ``cu_seqlens``, and reading them on the host waits for the GPU:
    with this, once per step instead of once per layer and pass. Holds only a weak reference.

    >>> calls = []
    >>> f = last_tensor_cache(lambda x, n: calls.append(n) or x.sum().item() * n)
    >>> x = torch.ones(3)
    >>> f(x, 2), f(x, 2), len(calls)
    (6.0, 6.0, 1)
    """
    last = {}

    @functools.wraps(fn)
    def cached(x: torch.Tensor, *args):
        # not a tensor: fn's own checks say so; inference tensors keep no version counter
        if not isinstance(x, torch.Tensor) or torch.compiler.is_compiling() or x.is_inference():
            return fn(x, *args)
        ref = last.get("ref")
        key = (x._version, args)
        if ref is not None and ref() is x and last["key"] == key:
            return last["value"]
        value = fn(x, *args)
        last.update(ref=weakref.ref(x), key=key, value=value)
        return value
    return cached
