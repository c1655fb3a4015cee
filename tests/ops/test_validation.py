"""Input validation of the GDN-2 operator and its family wrappers.

Every bad input must raise ``ValueError`` or ``TypeError`` whose message starts with the
argument's name and, where it helps, shows what was received (shape, dtype or value).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from gdn2.ops import delta_rule, gated_delta_rule, gated_delta_rule2, gated_linear_attention, kda

B, T, H, HV, K, V = 1, 4, 2, 4, 3, 5


def pattern(name: str, *fragments: str) -> str:
    """Regex: the message starts with ``name`` and then shows each fragment, in order."""
    return rf"^{re.escape(name)}\b" + "".join(".*" + re.escape(f) for f in fragments)


def inputs(b_: int = B, t_: int = T, h_: int = H, hv_: int = HV, dtype=torch.float32, **extra):
    gen = torch.Generator().manual_seed(0)
    out = dict(q=torch.randn(b_, t_, h_, K, generator=gen, dtype=dtype),
               k=torch.randn(b_, t_, h_, K, generator=gen, dtype=dtype),
               v=torch.randn(b_, t_, hv_, V, generator=gen, dtype=dtype))
    out.update(extra)
    return out


def call(**kw):
    q, k, v = kw.pop("q"), kw.pop("k"), kw.pop("v")
    return gated_delta_rule2(q, k, v, **kw)



QKV_SHAPE_CASES = [
    # (id, argument, shape, name in message, fragments)
    ("k_batch", "k", (2, T, H, K), "k", ["[2, 4, 2, 3]"]),
    ("k_time", "k", (B, 5, H, K), "k", ["[1, 5, 2, 3]"]),
    ("k_heads", "k", (B, T, 1, K), "k", ["[1, 4, 1, 3]"]),
    ("k_width", "k", (B, T, H, 4), "k", ["[1, 4, 2, 4]"]),
    ("v_batch", "v", (2, T, HV, V), "v", ["B = 1", "[2, 4, 4, 5]"]),
    ("v_time", "v", (B, 3, HV, V), "v", ["T = 4", "[1, 3, 4, 5]"]),
    ("v_3d", "v", (B, T, V), "v", ["[1, 4, 5]"]),
    ("hv_not_multiple", "v", (B, T, 3, V), "v", ["H = 2", "HV = 3"]),
    ("hv_zero", "v", (B, T, 0, V), "v", ["H = 2", "HV = 0"]),
    ("v_width_zero", "v", (B, T, HV, 0), "v", ["V >= 1", "[1, 4, 4, 0]"]),
    ("q_3d", "q", (B, T, K), "q", ["[1, 4, 3]"]),
    ("q_5d", "q", (B, T, H, K, 1), "q", ["[1, 4, 2, 3, 1]"]),
]


@pytest.mark.parametrize("arg,shape,name,fragments",
                         [c[1:] for c in QKV_SHAPE_CASES], ids=[c[0] for c in QKV_SHAPE_CASES])
def test_qkv_shape_errors(arg, shape, name, fragments):
    kw = inputs()
    kw[arg] = torch.randn(*shape)
    with pytest.raises(ValueError, match=pattern(name, *fragments)):
        call(**kw)


def test_q_batch_mismatch_is_reported_on_k_and_v():
    # q with another batch size than k and v: k (checked against q) is named
    kw = inputs()
    kw["q"] = torch.randn(2, T, H, K)
    with pytest.raises(ValueError, match=pattern("k", "[2, 4, 2, 3]", "[1, 4, 2, 3]")):
        call(**kw)


@pytest.mark.parametrize("arg", ["q", "k", "v"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_non_floating_qkv(arg, dtype):
    kw = inputs()
    kw[arg] = kw[arg].to(dtype)
    with pytest.raises(TypeError, match=pattern(arg, "floating", str(dtype))):
        call(**kw)


@pytest.mark.parametrize("arg", ["q", "k", "v"])
def test_qkv_not_a_tensor(arg):
    kw = inputs()
    kw[arg] = kw[arg].tolist()
    with pytest.raises(TypeError, match=pattern(arg, "list")):
        call(**kw)


@pytest.mark.parametrize("arg,dtype", [("k", torch.float64), ("v", torch.float16), ("q", torch.bfloat16)])
def test_qkv_mixed_dtypes(arg, dtype):
    kw = inputs()
    kw[arg] = kw[arg].to(dtype)
    with pytest.raises(TypeError, match=pattern("q, k and v", "dtype", str(dtype))):
        call(**kw)



GATE_SHAPE_CASES = [
    ("g_width", "g", (B, T, H, V)),           # K replaced by V
    ("g_value_heads", "g", (B, T, HV, K)),     # channel gate on value heads
    ("g_scalar_value_heads", "g", (B, T, HV)),
    ("g_2d", "g", (B, T)),
    ("g_time", "g", (B, T + 1, H, K)),
    ("b_value_heads", "b", (B, T, HV, K)),
    ("b_width", "b", (B, T, H, V)),
    ("b_batch", "b", (2, T, H)),
    ("b_5d", "b", (B, T, H, K, 1)),
    ("w_key_heads", "w", (B, T, H, V)),        # write gate lives on value heads
    ("w_width", "w", (B, T, HV, K)),
    ("w_scalar_key_heads", "w", (B, T, H)),
    ("w_time", "w", (B, T - 1, HV)),
]


@pytest.mark.parametrize("arg,shape", [c[1:] for c in GATE_SHAPE_CASES], ids=[c[0] for c in GATE_SHAPE_CASES])
def test_gate_shape_errors(arg, shape):
    kw = inputs()
    kw[arg] = torch.rand(*shape)
    received = "[" + ", ".join(str(s) for s in shape) + "]"
    heads, width = (HV, V) if arg == "w" else (H, K)
    expected = str([B, T, heads, width])
    with pytest.raises(ValueError, match=pattern(arg, expected, received)):
        call(**kw)


@pytest.mark.parametrize("value", [-0.5, 0, -1])
def test_g_as_python_number(value):
    kw = inputs(g=value)
    with pytest.raises(TypeError, match=pattern("g", str(value))):
        call(**kw)


@pytest.mark.parametrize("arg", ["g", "b", "w"])
def test_integer_gate_tensor(arg):
    shape = (B, T, HV) if arg == "w" else (B, T, H)
    kw = inputs(**{arg: torch.zeros(*shape, dtype=torch.int64)})
    with pytest.raises(TypeError, match=pattern(arg, "floating", "int64")):
        call(**kw)


@pytest.mark.parametrize("arg", ["b", "w"])
def test_gate_of_wrong_python_type(arg):
    kw = inputs(**{arg: [0.5, 0.5]})
    with pytest.raises(TypeError, match=pattern(arg, "list")):
        call(**kw)



def test_cu_seqlens_needs_batch_one():
    kw = inputs(b_=2, cu_seqlens=torch.tensor([0, 2, 4]))
    with pytest.raises(ValueError, match=pattern("cu_seqlens", "B == 1", "B = 2")):
        call(**kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int16])
def test_cu_seqlens_dtype(dtype):
    kw = inputs(cu_seqlens=torch.tensor([0, 2, 4], dtype=dtype))
    with pytest.raises(TypeError, match=pattern("cu_seqlens", "int32 or int64", str(dtype))):
        call(**kw)


@pytest.mark.parametrize("offsets,fragments", [
    ([1, 2, 4], ["start at 0", "got 1"]),
    ([0, 3, 2, 4], ["non-decreasing", "[0, 3, 2, 4]"]),
    ([0, 2, 3], ["end at T = 4", "got 3"]),
    ([0, 2, 5], ["end at T = 4", "got 5"]),
], ids=["not_starting_at_0", "decreasing", "ending_before_T", "ending_after_T"])
def test_cu_seqlens_values(offsets, fragments):
    kw = inputs(cu_seqlens=torch.tensor(offsets))
    with pytest.raises(ValueError, match=pattern("cu_seqlens", *fragments)):
        call(**kw)


@pytest.mark.parametrize("cu", [torch.tensor([[0, 2, 4]]), torch.tensor([0]), torch.tensor(4)],
                         ids=["2d", "one_offset", "0d"])
def test_cu_seqlens_shape(cu):
    kw = inputs(cu_seqlens=cu)
    received = "[" + ", ".join(str(s) for s in cu.shape) + "]"
    with pytest.raises(ValueError, match=pattern("cu_seqlens", "[N + 1]", received)):
        call(**kw)


def test_cu_seqlens_not_a_tensor():
    kw = inputs(cu_seqlens=[0, 2, 4])
    with pytest.raises(TypeError, match=pattern("cu_seqlens", "list")):
        call(**kw)



@pytest.mark.parametrize("shape,extra", [
    ((1, H, K, V), {}),                      # key heads instead of value heads
    ((1, HV, V, K), {}),                     # K and V swapped
    ((2, HV, K, V), {}),                     # N = 2 but B = 1
    ((HV, K, V), {}),                        # no N axis
    ((1, HV, K, V), {"cu_seqlens": torch.tensor([0, 1, 4])}),  # N = 2 packed sequences
], ids=["key_heads", "k_v_swapped", "wrong_n", "3d", "packed_n"])
def test_initial_state_shape(shape, extra):
    kw = inputs(initial_state=torch.zeros(*shape), **extra)
    N = 1 if not extra else 2
    received = "[" + ", ".join(str(s) for s in shape) + "]"
    with pytest.raises(ValueError, match=pattern("initial_state", str([N, HV, K, V]), received)):
        call(**kw)


@pytest.mark.parametrize("input_dtype,state_dtype", [
    (torch.float32, torch.float16),
    (torch.float32, torch.bfloat16),
    (torch.float32, torch.float64),          # float64 state only with float64 inputs
    (torch.float16, torch.float64),
    (torch.float64, torch.float16),
    (torch.float32, torch.int64),
])
def test_initial_state_dtype(input_dtype, state_dtype):
    kw = inputs(dtype=input_dtype, initial_state=torch.zeros(B, HV, K, V, dtype=state_dtype))
    with pytest.raises(TypeError, match=pattern("initial_state", "float32", str(state_dtype))):
        call(**kw)


@pytest.mark.parametrize("state", [np.zeros((B, HV, K, V), dtype=np.float32), 0.0,
                                   torch.zeros(B, HV, K, V).tolist()], ids=["numpy", "float", "list"])
def test_initial_state_not_a_tensor(state):
    kw = inputs(initial_state=state)
    with pytest.raises(TypeError, match=pattern("initial_state", "torch.Tensor", type(state).__name__)):
        call(**kw)



@pytest.mark.parametrize("backend", ["fast", "cuda", "Chunk", ""])
def test_unknown_backend(backend):
    kw = inputs(backend=backend)
    with pytest.raises(ValueError, match=pattern("backend", "recurrent", repr(backend))):
        call(**kw)


@pytest.mark.parametrize("scale", [0, 0.0, -1.0, -1e-9])
def test_non_positive_scale(scale):
    kw = inputs(scale=scale)
    with pytest.raises(ValueError, match=pattern("scale", "positive", repr(scale))):
        call(**kw)


@pytest.mark.parametrize("scale", ["0.5", True, torch.tensor(0.5)], ids=["str", "bool", "tensor"])
def test_scale_not_a_number(scale):
    kw = inputs(scale=scale)
    with pytest.raises((ValueError, TypeError), match=pattern("scale", "positive")):
        call(**kw)


def test_nan_scale():
    kw = inputs(scale=float("nan"))
    with pytest.raises(ValueError, match=pattern("scale", "nan")):
        call(**kw)



def _wrapper_call(name, q, k, v, beta, **kw):
    if name == "kda":
        return kda(q, k, v, -torch.rand(*q.shape), beta, **kw)
    if name == "gdn":
        return gated_delta_rule(q, k, v, -torch.rand(*q.shape[:3]), beta, **kw)
    return delta_rule(q, k, v, beta, **kw)


@pytest.mark.parametrize("wrapper", ["kda", "gdn", "deltanet"])
@pytest.mark.parametrize("beta", [torch.rand(B, T, HV), torch.rand(B, T, H, K), torch.rand(B, T),
                                  torch.rand(2, T, H), 0.5, None],
                         ids=["value_heads", "channel", "2d", "batch", "float", "none"])
def test_wrapper_beta_shape(wrapper, beta):
    q, k, v = inputs().values()
    got = str(list(beta.shape)) if isinstance(beta, torch.Tensor) else type(beta).__name__
    with pytest.raises(ValueError, match=pattern("beta", "[B, T, H]", str([B, T, H]), got)):
        _wrapper_call(wrapper, q, k, v, beta)


def test_wrapper_integer_beta_names_beta():
    q, k, v = inputs().values()
    with pytest.raises(TypeError, match=pattern("beta", "int64")):
        kda(q, k, v, -torch.rand(B, T, H, K), torch.ones(B, T, H, dtype=torch.int64))


@pytest.mark.parametrize("g_shape", [(B, T, H, K), (B, T, HV), (B, T)], ids=["channel", "value_heads", "2d"])
def test_gated_delta_rule_needs_per_head_g(g_shape):
    q, k, v = inputs().values()
    received = str(list(g_shape))
    with pytest.raises(ValueError, match=pattern("g", str([B, T, H]), received)):
        gated_delta_rule(q, k, v, -torch.rand(*g_shape), torch.rand(B, T, H))


@pytest.mark.parametrize("g_shape", [(B, T, HV, K), (B, T, H, V)], ids=["value_heads", "width"])
def test_kda_and_gla_g_shape(g_shape):
    q, k, v = inputs().values()
    received = str(list(g_shape))
    with pytest.raises(ValueError, match=pattern("g", received)):
        kda(q, k, v, -torch.rand(*g_shape), torch.rand(B, T, H))
    with pytest.raises(ValueError, match=pattern("g", received)):
        gated_linear_attention(q, k, v, -torch.rand(*g_shape))


def test_gla_g_as_python_number():
    q, k, v = inputs().values()
    with pytest.raises(TypeError, match=pattern("g", "-0.5")):
        gated_linear_attention(q, k, v, -0.5)


def test_gated_delta_rule_g_as_python_number():
    q, k, v = inputs().values()
    with pytest.raises(TypeError, match=pattern("g", "-0.5")):
        gated_delta_rule(q, k, v, -0.5, torch.rand(B, T, H))



@pytest.mark.parametrize("K_, V_", [(512, 64), (64, 384)])
def test_triton_head_dim_limit(K_, V_):
    """Head dims past the Triton kernels' bound: a clear error for backend='triton'; 'auto'
    takes the chunk backend instead."""
    pytest.importorskip("triton")
    q, k = torch.randn(1, 3, 1, K_), torch.randn(1, 3, 1, K_)
    v = torch.randn(1, 3, 1, V_)
    with pytest.raises(ValueError, match=pattern("backend", "256", f"K = {K_}", f"V = {V_}")):
        gated_delta_rule2(q, k, v, backend="triton")
    from types import SimpleNamespace
    from gdn2.ops.gdn2.api import _resolve_backend
    from gdn2.ops.gdn2.chunk import chunk_gdn2
    from gdn2.ops.gdn2.triton import triton_gdn2
    on_gpu = SimpleNamespace(is_cuda=True, dtype=torch.bfloat16)
    assert _resolve_backend("auto", on_gpu, K_, V_) is chunk_gdn2
    assert _resolve_backend("auto", on_gpu, 256, 256) is triton_gdn2


def test_triton_refuses_float64():
    """The Triton kernels compute in float32: float64 inputs get a clear error from backend='triton',
    and 'auto' keeps them on the chunk backend even on a GPU (a float64 gradient check stays exact)."""
    pytest.importorskip("triton")
    q, k, v = (x.double() for x in inputs().values())
    with pytest.raises(ValueError, match=pattern("backend", "float32", "got float64")):
        gated_delta_rule2(q, k, v, backend="triton")
    from types import SimpleNamespace
    from gdn2.ops.gdn2.api import _resolve_backend
    from gdn2.ops.gdn2.chunk import chunk_gdn2
    assert _resolve_backend("auto", SimpleNamespace(is_cuda=True, dtype=torch.float64), 64, 64) is chunk_gdn2


@pytest.mark.parametrize("backend", ["recurrent", "chunk"])
def test_valid_inputs_run(backend):
    g = -torch.rand(B, T, H, K)
    kw = inputs(g=g, b=torch.rand(B, T, H), w=torch.rand(B, T, HV, V),
                initial_state=torch.zeros(B, HV, K, V), output_final_state=True, use_qk_l2norm=True,
                backend=backend)
    o, S = call(**kw)
    assert o.shape == (B, T, HV, V) and o.dtype == torch.float32
    assert S.shape == (B, HV, K, V) and S.dtype == torch.float32
    assert torch.isfinite(o).all() and torch.isfinite(S).all()

    # constants for b and w, no g, packed sequences, explicit positive scale
    kw = inputs(b=0.0, w=1, cu_seqlens=torch.tensor([0, 1, 1, 4], dtype=torch.int32), scale=0.25,
                output_final_state=True, backend=backend)
    o, S = call(**kw)
    assert o.shape == (B, T, HV, V) and S.shape == (3, HV, K, V)

    # every wrapper accepts its documented shapes
    q, k, v = inputs().values()
    beta = torch.rand(B, T, H)
    for out in (kda(q, k, v, g, beta, backend=backend),
                gated_delta_rule(q, k, v, -torch.rand(B, T, H), beta, backend=backend),
                delta_rule(q, k, v, beta, backend=backend),
                gated_linear_attention(q, k, v, g, backend=backend),
                gated_linear_attention(q, k, v, -torch.rand(B, T, H), backend=backend)):
        assert out[0].shape == (B, T, HV, V) and out[1] is None


@pytest.mark.parametrize("backend", ["recurrent", "chunk"])
@pytest.mark.parametrize("state_dtype", [torch.float64, torch.float32])
def test_float64_inputs_accept_float64_or_float32_state(backend, state_dtype):
    S0 = torch.randn(B, HV, K, V, dtype=state_dtype)
    kw = inputs(dtype=torch.float64, g=-torch.rand(B, T, H, K, dtype=torch.float64),
                initial_state=S0, output_final_state=True, backend=backend)
    o, S = call(**kw)
    assert o.dtype == torch.float64 and S.dtype == torch.float64
    assert S.shape == (B, HV, K, V)


@pytest.mark.parametrize("shape", [(B, T, 0, K), (B, T, H, 0)], ids=["no_heads", "no_key_channels"])
def test_empty_heads_or_key_channels(shape):
    kw = inputs()
    kw["q"], kw["k"] = torch.randn(*shape), torch.randn(*shape)
    with pytest.raises(ValueError, match=pattern("q", "H, K >= 1", str(list(shape)))):
        call(**kw)


def test_positive_log_decay_on_cpu():
    """g is a log-decay: a positive value (on a CPU tensor, where checking costs no synchronisation)
    is refused, not turned into wrong outputs by the chunk backend's clamped exponents."""
    g = -torch.rand(B, T, H, K)
    g[0, 2, 1, 0] = 0.05
    for gate in (g, g[..., 0]):
        with pytest.raises(ValueError, match=pattern("g", "<= 0", "0.05")):
            call(**inputs(), g=gate)
    call(**inputs(), g=torch.zeros(B, T, H, K))                          # no decay is allowed
    call(**inputs(), g=torch.full((B, T, H, K), float("-inf")))          # nor is a closed gate


@pytest.mark.parametrize("wrapper", ["kda", "gdn", "deltanet"])
def test_wrappers_name_a_bad_q_before_beta(wrapper):
    """The wrappers read beta's expected shape off q: a bad q is reported as q, not as beta."""
    q, k, v = inputs().values()
    fn = {"kda": lambda q_, k_: kda(q_, k_, v, -torch.rand(B, T, H, K), torch.rand(B, T, H)),
          "gdn": lambda q_, k_: gated_delta_rule(q_, k_, v, -torch.rand(B, T, H), torch.rand(B, T, H)),
          "deltanet": lambda q_, k_: delta_rule(q_, k_, v, torch.rand(B, T, H))}[wrapper]
    with pytest.raises(ValueError, match=pattern("q", "[B, T, H, K]", "[1, 4, 2]")):
        fn(q[..., 0], k[..., 0])
    with pytest.raises(TypeError, match=pattern("q", "torch.Tensor", "list")):
        fn([1.0], k)
