"""The GatedDeltaNet2 mixer: spec section 7 formulas, the family as settings, decode and packing."""

import math

import pytest
import torch
import torch.nn.functional as F

from gdn2.layers import MIXER_PRESETS, GatedDeltaNet2, MixerConfig
from gdn2.ops import delta_rule, gated_delta_rule, gated_delta_rule2, gated_linear_attention, kda
from gdn2.testing import assert_close

F64 = torch.float64
B, T, D, H, HV = 2, 21, 32, 2, 4


def make(preset: str, **overrides) -> GatedDeltaNet2:
    config = MixerConfig.from_preset(preset, hidden_size=D, num_heads=H, num_v_heads=HV, head_k_dim=8,
                                     head_v_dim=6, **{"backend": "chunk", **overrides})
    return GatedDeltaNet2(config).double()


def x_input(T=T):
    return torch.randn(B, T, D, dtype=F64)


def test_projections_follow_the_spec():
    """q, k, v, g, b, w written out from spec section 7, independently of the layer's code."""
    layer, x = make("gdn2", negative_eigen=True), x_input()
    p = layer.project(x)

    def conv_silu(proj, conv):
        y = F.conv1d(F.pad(proj(x).transpose(1, 2), (3, 0)), conv.weight.unsqueeze(1), groups=conv.channels)
        return F.silu(y.transpose(1, 2))

    assert_close("q", p.q, conv_silu(layer.q_proj, layer.q_conv).view(B, T, H, 8), rtol=1e-14)
    assert_close("k", p.k, conv_silu(layer.k_proj, layer.k_conv).view(B, T, H, 8), rtol=1e-14)
    assert_close("v", p.v, conv_silu(layer.v_proj, layer.v_conv).view(B, T, HV, 6), rtol=1e-14)
    A = layer.A_log.exp().view(1, 1, H, 1)
    g = -A * F.softplus(layer.f_proj(x).view(B, T, H, 8) + layer.dt_bias.view(H, 8))
    assert_close("g", p.g, g, rtol=1e-14)
    assert_close("b", p.b, 2 * torch.sigmoid(layer.b_proj(x)).view(B, T, H, 8), rtol=1e-14)   # negative eigenvalues
    assert_close("w", p.w, torch.sigmoid(layer.w_proj(x)).view(B, T, HV, 6), rtol=1e-14)     # w is never doubled


def test_forward_is_op_then_gated_norm_and_projection():
    layer, x = make("gdn2"), x_input()
    p = layer.project(x)
    o, _ = gated_delta_rule2(p.q, p.k, p.v, p.g, p.b, p.w, use_qk_l2norm=True, backend="recurrent")
    rms = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6) * layer.o_norm.weight
    expected = layer.o_proj((rms * F.silu(layer.g_proj(x)).view(B, T, HV, 6)).reshape(B, T, HV * 6))
    assert_close("layer vs float64 recurrence", layer(x), expected, rtol=1e-10)


@pytest.mark.parametrize("preset, op, decay_shape", [
    ("kda", kda, (B, T, H, 8)),
    ("gdn", gated_delta_rule, (B, T, H)),
    ("deltanet", delta_rule, None),
])
def test_tied_presets_equal_the_family_ops(preset, op, decay_shape):
    layer, x = make(preset), x_input()
    p = layer.project(x)
    beta = torch.sigmoid(layer.beta_proj(x))                      # one gate per key head
    assert torch.equal(p.b, beta) and torch.equal(p.w, beta.repeat_interleave(HV // H, dim=2))
    assert (p.g is None) == (decay_shape is None)
    args = (p.q, p.k, p.v) + (() if decay_shape is None else (p.g,)) + (beta,)
    if decay_shape is not None:
        assert p.g.shape == decay_shape
    o, _ = op(*args, use_qk_l2norm=True, backend="recurrent")
    assert_close(preset, layer(x), layer.output(o, x), rtol=1e-10)


def test_gla_preset_has_no_erase_and_full_write():
    layer, x = make("gla"), x_input()
    p = layer.project(x)
    assert p.b == 0.0 and p.w is None and not hasattr(layer, "b_proj") and not hasattr(layer, "w_proj")
    o, _ = gated_linear_attention(p.q, p.k, p.v, p.g, use_qk_l2norm=True, backend="recurrent")
    assert_close("gla", layer(x), layer.output(o, x), rtol=1e-10)


@pytest.mark.parametrize("preset, scalar", [("gdn2_b_only", "w"), ("gdn2_w_only", "b")])
def test_ablations_scalarise_one_gate_with_unchanged_projections(preset, scalar):
    full, x = make("gdn2"), x_input()
    ablated = make(preset)
    ablated.load_state_dict(full.state_dict())                    # same parameters, strict
    p_full, p = full.project(x), ablated.project(x)
    channel = "b" if scalar == "w" else "w"
    assert torch.equal(getattr(p, channel), getattr(p_full, channel))
    assert getattr(p, scalar).shape == (B, T, H if scalar == "b" else HV)
    assert_close(scalar, getattr(p, scalar), getattr(p_full, scalar).mean(-1), rtol=1e-15)
    o, _ = gated_delta_rule2(p.q, p.k, p.v, p.g, p.b, p.w, use_qk_l2norm=True, backend="recurrent")
    assert_close(preset, ablated(x), ablated.output(o, x), rtol=1e-10)


def test_initialisation():
    layer = GatedDeltaNet2(MixerConfig(hidden_size=64, num_heads=4, head_k_dim=16, head_v_dim=16))
    A = layer.A_log.exp()
    assert A.shape == (4,) and bool(((A >= 1) & (A <= 16)).all())
    dt = F.softplus(layer.dt_bias)
    assert layer.dt_bias.shape == (64,) and bool(((dt >= 1e-3 * 0.999) & (dt <= 1e-1 * 1.001)).all())
    assert layer.A_log._no_weight_decay and layer.dt_bias._no_weight_decay
    assert sorted(layer.no_weight_decay()) == ["A_log", "dt_bias"]
    for name, module in layer.named_modules():
        if isinstance(module, torch.nn.Linear):
            fan_out, fan_in = module.weight.shape
            bound = 2 ** -2.5 * math.sqrt(6 / (fan_in + fan_out))
            assert module.weight.abs().max() <= bound, name
            assert module.weight.abs().max() > 0.5 * bound, name


def test_decoding_with_state_equals_full_sequence():
    layer, x = make("gdn2"), x_input(T=40)
    full = layer(x)
    cache = layer.init_cache(B, F64, "cpu")
    pieces = [layer(x[:, :9], cache), layer(x[:, 9:30], cache)]     # a chunked prefill
    sizes = [t.shape for t in cache.tensors()]
    for t in range(30, 40):
        pieces.append(layer(x[:, t:t + 1], cache))
        assert [t.shape for t in cache.tensors()] == sizes          # fixed-size state
    assert cache.state.shape == (B, HV, 8, 6) and cache.conv_q.shape == (B, 3, H * 8)
    assert_close("prefill + decode", torch.cat(pieces, 1), full, rtol=1e-12)


def test_float32_state_for_float32_layer():
    layer = make("gdn2").float()
    cache = layer.init_cache(1, torch.float32, "cpu")
    layer(torch.randn(1, 5, D), cache)
    assert cache.state.dtype == torch.float32


def test_packed_documents_equal_separate_runs():
    layer = make("gdn2")
    lengths = [7, 1, 13]
    docs = [torch.randn(1, n, D, dtype=F64) for n in lengths]
    cu = torch.tensor([0, 7, 8, 21])
    packed = layer(torch.cat(docs, 1), cu_seqlens=cu)
    for i, doc in enumerate(docs):
        assert_close(f"doc {i}", packed[:, cu[i]:cu[i + 1]], layer(doc), rtol=1e-12)


def test_gradients_reach_every_parameter():
    layer = make("gdn2").float()
    layer(torch.randn(1, 12, D)).square().mean().backward()
    missing = [n for n, p in layer.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_presets_cover_the_family():
    assert set(MIXER_PRESETS) >= {"gdn2", "kda", "gdn", "deltanet", "gla", "gdn2_b_only", "gdn2_w_only"}


@pytest.mark.parametrize("overrides, field", [
    (dict(num_v_heads=3), "num_v_heads"),
    (dict(hidden_size=30, num_heads=4), "head_k_dim"),
    (dict(decay="vector"), "decay"),
    (dict(erase="tied", write="channel"), "erase"),
    (dict(write="half"), "write"),
    (dict(conv_size=0), "conv_size"),
    (dict(backend="cuda"), "backend"),
])
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        MixerConfig(**{"hidden_size": 32, "num_heads": 2, **overrides})
    with pytest.raises(ValueError, match="mixer preset"):
        MixerConfig.from_preset("mamba")
