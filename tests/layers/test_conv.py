"""ShortConvolution: causal depthwise conv, decode cache of W - 1 inputs, packed documents."""

import pytest
import torch
import torch.nn.functional as F

from gdn2.layers import ShortConvolution
from gdn2.testing import assert_close

F64 = torch.float64


def reference(conv: ShortConvolution, x: torch.Tensor) -> torch.Tensor:
    """nn.Conv1d semantics: left-pad W - 1 zeros, depthwise, then SiLU."""
    W = conv.kernel_size
    y = F.conv1d(F.pad(x.transpose(1, 2), (W - 1, 0)), conv.weight.unsqueeze(1), groups=conv.channels)
    return F.silu(y.transpose(1, 2))


@pytest.mark.parametrize("W", [1, 2, 4])
def test_matches_causal_conv1d(W):
    conv = ShortConvolution(6, W).double()
    x = torch.randn(2, 9, 6, dtype=F64)
    y, cache = conv(x, output_cache=True)
    assert_close("conv", y, reference(conv, x), rtol=1e-14)
    assert cache.shape == (2, W - 1, 6)
    assert torch.equal(cache, x[:, 9 - (W - 1):]) if W > 1 else cache.numel() == 0


@pytest.mark.parametrize("W", [1, 2, 4])
def test_decode_keeps_only_last_inputs(W):
    conv = ShortConvolution(5, W).double()
    x = torch.randn(3, 11, 5, dtype=F64)
    y, cache = conv(x[:, :2], output_cache=True)          # a prefill shorter than the window
    outs = [y]
    for t in range(2, 11):                                # one-token steps: the weighted-sum path
        y, cache = conv(x[:, t:t + 1], cache, output_cache=True)
        assert cache.shape == (3, W - 1, 5)
        outs.append(y)
    assert_close("decode", torch.cat(outs, 1), reference(conv, x), rtol=1e-14)


def test_packed_documents_do_not_leak():
    conv = ShortConvolution(4, 4).double()
    lengths = [5, 1, 0, 7, 2]
    docs = [torch.randn(1, n, 4, dtype=F64) for n in lengths]
    caches = torch.randn(len(lengths), 3, 4, dtype=F64)
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist())
    packed, last = conv(torch.cat(docs, 1), caches, output_cache=True, cu_seqlens=cu)
    for i, doc in enumerate(docs):
        alone, alone_last = conv(doc, caches[i:i + 1], output_cache=True)
        assert_close(f"doc {i}", packed[:, cu[i]:cu[i + 1]], alone, rtol=1e-14)
        assert_close(f"cache {i}", last[i:i + 1], alone_last, rtol=1e-14)
