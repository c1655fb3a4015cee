"""The layers on a GPU, unchanged code (backend "auto" = Triton): full sequence, prefill + decode
and packed documents against the float64 CPU layer, no worse than the chunk backend in float32."""

import pytest
import torch

from gdn2.layers import Attention, AttentionConfig, GatedDeltaNet2, MixerConfig
from gdn2.testing import assert_close, assert_no_worse

pytestmark = pytest.mark.gpu


def _mixer_pair():
    config = MixerConfig(hidden_size=256, num_heads=4, num_v_heads=8, head_k_dim=128, head_v_dim=128)
    gpu = GatedDeltaNet2(config).cuda()
    ref = GatedDeltaNet2(MixerConfig(**{**config.__dict__, "backend": "recurrent"})).double()
    ref.load_state_dict({k: v.double().cpu() for k, v in gpu.state_dict().items()})
    chunk = GatedDeltaNet2(MixerConfig(**{**config.__dict__, "backend": "chunk"})).cuda()
    chunk.load_state_dict(gpu.state_dict())
    return gpu, chunk, ref


@torch.no_grad()
def test_mixer_prefill_decode_and_packing_on_gpu():
    torch.manual_seed(0)
    gpu, chunk, ref = _mixer_pair()
    x = torch.randn(2, 150, 256, device="cuda")
    expected = ref(x.double().cpu())
    assert_no_worse("full", gpu(x), chunk(x), expected)

    cache = gpu.init_cache(2, torch.float32, "cuda")
    pieces = [gpu(x[:, :100], cache)] + [gpu(x[:, t:t + 1], cache) for t in range(100, 150)]
    assert cache.state.dtype == torch.float32
    assert_no_worse("prefill + decode", torch.cat(pieces, 1), chunk(x), expected)

    cu = torch.tensor([0, 70, 71, 150], device="cuda")
    packed = gpu(x[:1], cu_seqlens=cu)
    for s, e in zip(cu.tolist(), cu.tolist()[1:]):
        assert_close(f"doc {s}:{e}", packed[:, s:e], gpu(x[:1, s:e]), rtol=1e-3)


@torch.no_grad()
@pytest.mark.parametrize("window", [None, 32])
def test_attention_decode_on_gpu(window):
    torch.manual_seed(0)
    layer = Attention(AttentionConfig(hidden_size=256, num_heads=4, num_kv_heads=2, window=window)).cuda()
    x = torch.randn(2, 80, 256, device="cuda")
    cache = layer.init_cache(2, torch.float32, "cuda")
    pieces = [layer(x[:, :50], cache)] + [layer(x[:, t:t + 1], cache) for t in range(50, 80)]
    assert_close("prefill + decode", torch.cat(pieces, 1), layer(x), rtol=1e-4)
