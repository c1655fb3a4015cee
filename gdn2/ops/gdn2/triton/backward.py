"""Backward of the Triton backend."""

from __future__ import annotations

import torch


def chunk_bwd(q, k, v, g, b, w, h0, scale, cu, do, dht):
    """Gradients for (q, k, v, g, b, w, h0) over the flattened layout, by recomputing the
    forward through the PyTorch chunk backend and differentiating it."""
    from ..chunk import chunk_gdn2
    unsq = lambda x: x.unsqueeze(0) if isinstance(x, torch.Tensor) else x  # noqa: E731
    leaves = [x.detach().requires_grad_(True) if isinstance(x, torch.Tensor) else x
              for x in (q, k, v, g, b, w, h0)]
    with torch.enable_grad():
        o, ht = chunk_gdn2(*(unsq(x) for x in leaves[:6]), scale, leaves[6], True, cu.long())
        outs, grads_in = [o], [do.unsqueeze(0)]
        if dht is not None:
            outs.append(ht)
            grads_in.append(dht)
        wrt = [x for x in leaves if isinstance(x, torch.Tensor)]
        dx = iter(torch.autograd.grad(outs, wrt, grads_in, allow_unused=True))
    return tuple((next(dx) if isinstance(x, torch.Tensor) else None) for x in leaves)
