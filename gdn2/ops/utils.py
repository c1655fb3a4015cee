"""Small helpers shared by every backend (and the device check of the commands above them)."""

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


def last_tensor_cache(fn=None, *, host: bool = False):
    """``fn(x, *args)`` remembered for the last call: the same CUDA tensor object ``x``, unmodified
    since (its version counter), and equal ``args``. Every layer of a model's forward and backward
    gets the same packed offsets ``cu_seqlens``, and reading them on the host waits for the GPU:
    with this, once per step instead of once per layer and pass. Host tensors (reading them costs
    nothing), inference tensors (no version counter), ``torch.compile`` tracing and CUDA graph
    capture (a cached host read would freeze the offsets into the graph) always call ``fn``, and a
    value that is an inference tensor (made under ``torch.inference_mode``) is not kept. Writes
    that bypass the version counter (through ``.data`` or the storage) are not seen. Holds only a
    weak reference. ``host``: cache host tensors too (for tests on machines without a GPU).

    >>> offsets = last_tensor_cache(lambda cu: cu.tolist())   # a decorator
    """
    if fn is None:
        return functools.partial(last_tensor_cache, host=host)
    last = [None]   # (weak reference to x, key, value), replaced whole so that threads see one call's

    @functools.wraps(fn)
    def cached(x: torch.Tensor, *args):
        if not isinstance(x, torch.Tensor) or torch.compiler.is_compiling() or x.is_inference():
            return fn(x, *args)
        if torch.cuda.is_current_stream_capturing() if x.is_cuda else not host:
            return fn(x, *args)
        key = (x._version, args)
        entry = last[0]
        if entry is not None and entry[0]() is x and entry[1] == key:
            return entry[2]
        value = fn(x, *args)
        # not an inference tensor (made under inference mode): a later training call could not
        # save it for its backward
        if not (isinstance(value, torch.Tensor) and value.is_inference()):
            last[0] = (weakref.ref(x), key, value)
        return value
    return cached


def usable_device(device) -> torch.device:
    """``device`` (a name or a ``torch.device``) as a ``torch.device``, or a ``ValueError`` naming it
    when this machine cannot use it (a CUDA device without a GPU, a malformed name), before a model
    is loaded rather than as torch's assertion deep inside ``.to()``.

    >>> usable_device("cpu")
    device(type='cpu')
    """
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} needs a CUDA GPU, and this machine's torch sees none")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
