"""The Triton backend's decoding kernel, L2 norm and op registration (torch.library opcheck,
torch.compile, the chunk table) on tiny float32 shapes; without a GPU under TRITON_INTERPRET=1 (set in
conftest). The chunk kernels' stages are in test_triton_interpret.py."""

import importlib

import pytest
import torch

from gdn2.ops import gated_delta_rule2
from gdn2.testing import random_inputs

triton = pytest.importorskip("triton")
pytestmark = pytest.mark.interpret
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_decode_kernel_matches_and_refuses_gradients():
    from gdn2.ops.gdn2.triton import fused_recurrent_gdn2
    # V = 64: two value tiles per state, so the flat grid's tile index is exercised
    x = random_inputs(B=3, T=2, H=2, HV=4, K=32, V=64, b_max=2.0, initial_state=True, seed=5, device=DEVICE)
    from gdn2.testing import assert_close
    for l2 in (False, True):
        with torch.no_grad():
            o_ref, S_ref = gated_delta_rule2(**x, output_final_state=True, use_qk_l2norm=l2, backend="chunk")
            o, S = gated_delta_rule2(**x, output_final_state=True, use_qk_l2norm=l2, backend="triton")  # decode
        assert_close("o", o, o_ref, 1e-5)
        assert_close("S", S, S_ref, 1e-5)
    x["q"].requires_grad_(True)
    with pytest.raises(RuntimeError, match="no backward"):
        fused_recurrent_gdn2(x["q"], x["k"], x["v"], x["g"], x["b"], x["w"], 0.2, x["initial_state"], True, None)


@pytest.mark.parametrize("gates", [("scalar", 0.5, 1.0), ("channel", 0.0, "scalar"), ("none", "scalar", 0.25)],
                         ids=lambda x: "-".join(map(str, x)))
def test_decode_layouts_and_constant_gates(gates):
    """The decode path hands [B, T, ...] tensors to the kernel as they are (tokens indexed flat) and
    caches its offsets per shape: strided views, number gates, no initial state and two batch sizes
    in a row against the float64 recurrence."""
    from gdn2.testing import assert_close
    decay, erase, write = gates
    for B, T in ((3, 2), (2, 1), (3, 2)):
        x = random_inputs(B=B, T=T, H=2, HV=4, K=32, V=16, gate=decay,
                          erase=erase if isinstance(erase, str) else "none",
                          write=write if isinstance(write, str) else "none", b_max=2.0, seed=B + T, device=DEVICE)
        if not isinstance(erase, str):
            x["b"] = erase
        if not isinstance(write, str):
            x["w"] = write
        # q, k as strided views of one fused projection, as a layer's split makes them
        qk = torch.cat([x["q"], x["k"]], dim=-1)
        x["q"], x["k"] = qk[..., :32], qk[..., 32:]
        assert not x["q"].is_contiguous()
        with torch.no_grad():
            o, S = gated_delta_rule2(**x, output_final_state=True, backend="triton")
            o_ref, S_ref = gated_delta_rule2(**{n: (v.double() if isinstance(v, torch.Tensor) else v)
                                                for n, v in x.items()}, output_final_state=True, backend="recurrent")
        assert o.shape == o_ref.shape and o.dtype == x["q"].dtype
        assert_close("o", o, o_ref, 1e-5)
        assert_close("S", S, S_ref, 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_l2norm_kernel(dtype):
    """The chunk path's q/k normalisation: value and gradient against float64 autograd."""
    from gdn2.ops.gdn2.triton.l2norm import l2norm
    from gdn2.testing import assert_close
    gen = torch.Generator().manual_seed(7)
    x = (torch.randn(3, 5, 2, 48, generator=gen, dtype=torch.float64) * 3).to(dtype).double().to(DEVICE)
    dy = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(DEVICE)
    x64 = x.clone().requires_grad_()
    y64 = x64 / torch.sqrt((x64 * x64).sum(-1, keepdim=True) + 1e-6)
    y64.backward(dy)
    xl = x.to(dtype).requires_grad_()
    y = l2norm(xl)
    y.backward(dy.to(dtype))
    tol = 1e-6 if dtype == torch.float32 else 2e-3
    assert y.dtype == dtype and xl.grad.dtype == dtype
    assert_close("y", y, y64, rtol=tol)
    assert_close("dx", xl.grad, x64.grad, rtol=tol)


def test_uniform_chunk_table_is_built_once():
    """Equal-length batches reuse one chunk table (building it copies host lists to the device,
    which on a GPU waits for the stream in every layer)."""
    from gdn2.ops.gdn2.triton.chunk import _chunks
    cu = torch.arange(0, 4 * 70 + 1, 70, device=DEVICE)
    a, b = _chunks(cu, 70), _chunks(cu.clone(), 70)
    assert a is b and a.count == 4 * 2
    assert a.start.tolist() == [0, 64, 70, 134, 140, 204, 210, 274]


def test_compiled_gradients_match_eager():
    """The custom ops' fake implementations and autograd registration under torch.compile
    (AOT autograd, no code generation): the training forward keeps A and Aqk for the backward."""
    x = random_inputs(B=2, T=70, H=2, K=16, V=16, b_max=2.0, seed=8, initial_state=True, device=DEVICE)
    names = ("q", "k", "v", "g", "b", "w", "initial_state")

    def f(q, k, v, g, b, w, h0):
        o, S = gated_delta_rule2(q, k, v, g, b, w, initial_state=h0, output_final_state=True, backend="triton")
        return o.float().square().sum() + S.square().sum()

    runs = []
    for fn in (torch.compile(f, fullgraph=True, backend="aot_eager"), f):
        args = [x[n].detach().clone().requires_grad_(True) for n in names]
        loss = fn(*args)
        runs.append((loss, torch.autograd.grad(loss, args)))
    (loss_c, grads_c), (loss_e, grads_e) = runs
    torch.testing.assert_close(loss_c, loss_e)
    for name, a, b in zip(names, grads_c, grads_e):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"d{name}: {m}")


def test_compiled_decode_matches_eager():
    """The decode kernel's custom op and fake implementation under torch.compile, [B, T, ...] inputs."""
    x = random_inputs(B=3, T=2, H=2, HV=4, K=16, V=16, b_max=2.0, seed=13, initial_state=True, device=DEVICE)

    def f(q, k, v, g, b, w, h0):
        return gated_delta_rule2(q, k, v, g, b, w, initial_state=h0, output_final_state=True, backend="triton")

    args = [x[n] for n in ("q", "k", "v", "g", "b", "w", "initial_state")]
    with torch.no_grad():
        (o_c, S_c), (o_e, S_e) = torch.compile(f, fullgraph=True, backend="aot_eager")(*args), f(*args)
    torch.testing.assert_close(o_c, o_e)
    torch.testing.assert_close(S_c, S_e)


def _flat_inputs(seed):
    x = random_inputs(B=1, T=70, H=2, K=16, V=16, b_max=2.0, initial_state=True, seed=seed, device=DEVICE)
    leaf = lambda t: t.detach().clone().requires_grad_(True)  # noqa: E731
    q, k, v, g, b, w = (leaf(x[n][0]) for n in ("q", "k", "v", "g", "b", "w"))
    return q, k, v, g, b, w, leaf(x["initial_state"]), torch.tensor([0, 70], dtype=torch.int32, device=DEVICE)


@pytest.mark.parametrize("keep_intra", [True, False])
def test_chunk_op_passes_opcheck(keep_intra):
    """torch.library.opcheck of the chunk op: schema, fake implementation, autograd registration
    (with cotangents of every output, broadcast ones included) and AOT dispatch."""
    importlib.import_module("gdn2.ops.gdn2.triton.chunk")   # registers the op
    torch.library.opcheck(torch.ops.gdn2.chunk_fwd.default,
                          (*_flat_inputs(14), 70, 0.25, False, True, keep_intra, False))


def test_final_state_gradient_from_a_broadcast_cotangent():
    """S.sum() hands the backward a stride-0 view of one element as dS: it must be read as the
    tensor it stands for (it was read as dense memory: NaN gradients)."""
    q, k, v, g, b, w, h0, _ = _flat_inputs(15)
    args = [t[None] for t in (q, k, v, g, b, w)] + [h0]
    grads = {}
    for backend in ("triton", "chunk"):
        leaves = [a.detach().clone().requires_grad_(True) for a in args]
        o, S = gated_delta_rule2(*leaves[:6], initial_state=leaves[6], output_final_state=True, backend=backend)
        grads[backend] = torch.autograd.grad(o.sum() + S.sum(), leaves)
    from gdn2.testing import assert_close
    for name, a, b_ in zip(("dq", "dk", "dv", "dg", "db", "dw", "dh0"), grads["triton"], grads["chunk"]):
        assert_close(name, a, b_, rtol=1e-4)


def test_l2norm_and_decode_ops_pass_opcheck():
    for module in ("chunk", "l2norm"):   # register the ops
        importlib.import_module(f"gdn2.ops.gdn2.triton.{module}")
    x = torch.randn(2, 5, 3, 32, device=DEVICE, requires_grad=True)
    torch.library.opcheck(torch.ops.gdn2.l2norm_fwd.default, (x, 1e-6))
    q, k, v, g, b, w, h0, _ = (t.detach() if isinstance(t, torch.Tensor) and t.is_floating_point() else t
                               for t in _flat_inputs(16))
    cu = torch.tensor([0, 1, 2, 4], dtype=torch.int32, device=DEVICE)   # three sequences of 1, 1, 2 tokens
    torch.library.opcheck(torch.ops.gdn2.fused_recurrent_fwd.default,
                          (q[:4], k[:4], v[:4], g[:4], b[:4], w[:4], h0.expand(3, -1, -1, -1).contiguous(), cu,
                           0.25, False, True, True))
