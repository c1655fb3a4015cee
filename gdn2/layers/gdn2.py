"""The Gated DeltaNet-2 token mixer (spec section 7) and its relatives as settings of one layer.

    q, k, v = SiLU(conv(W_q x)), SiLU(conv(W_k x)), SiLU(conv(W_v x))   (q, k L2-normalised in the op)
    g = -exp(A_log) * softplus(W_f x + dt_bias)                          float32 log-decay
    b = sigmoid(W_b x)  (x2 with negative eigenvalues),  w = sigmoid(W_w x)
    o = W_o (RMSNorm(GDN2(q, k, v, g, b, w)) * SiLU(W_gate x))

The gate structure is configuration (``MixerConfig.decay / erase / write``):

    decay  "channel" g [B, T, H, K] | "scalar" g [B, T, H] | "none" (no decay)
    erase  "channel" b [B, T, H, K] | "scalar" mean of b over K | "none" (b = 0) | "tied"
    write  "channel" w [B, T, HV, V] | "scalar" mean of w over V | "none" (w = 1) | "tied"

"scalar" keeps the channel-wise projection and averages the gate at run time (the paper's b-only /
w-only ablations). "tied" (erase and write together) is one ``beta = sigmoid(W_beta x)`` per key
head used as both gates, which is KDA, Gated DeltaNet or DeltaNet depending on the decay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import BACKENDS, gated_delta_rule2
from ..ops.gdn2.checks import check_cu_seqlens
from .attention import held_bytes
from .conv import ShortConvolution
from .norm import RMSNorm, compute_dtype

DECAYS = ("channel", "scalar", "none")
GATES = ("channel", "scalar", "none", "tied")

MIXER_PRESETS: Dict[str, Dict[str, str]] = {
    "gdn2": dict(decay="channel", erase="channel", write="channel"),
    "gdn2_b_only": dict(decay="channel", erase="channel", write="scalar"),
    "gdn2_w_only": dict(decay="channel", erase="scalar", write="channel"),
    "kda": dict(decay="channel", erase="tied", write="tied"),
    "gdn": dict(decay="scalar", erase="tied", write="tied"),
    "deltanet": dict(decay="none", erase="tied", write="tied"),
    "gla": dict(decay="channel", erase="none", write="none"),
}


@dataclass(frozen=True)
class MixerConfig:
    """Sizes and gate structure of one ``GatedDeltaNet2`` layer. ``num_v_heads`` defaults to
    ``num_heads``; the head widths default to ``hidden_size // num_heads``."""

    hidden_size: int = 256
    num_heads: int = 4
    num_v_heads: Optional[int] = None
    head_k_dim: Optional[int] = None
    head_v_dim: Optional[int] = None
    conv_size: int = 4
    decay: str = "channel"
    erase: str = "channel"
    write: str = "channel"
    negative_eigen: bool = False
    norm_eps: float = 1e-6
    backend: str = "auto"

    def __post_init__(self):
        for name in ("hidden_size", "num_heads", "conv_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_v_heads is None:
            object.__setattr__(self, "num_v_heads", self.num_heads)
        if self.num_v_heads < 1 or self.num_v_heads % self.num_heads:
            raise ValueError(f"num_v_heads must be a positive multiple of num_heads = {self.num_heads} "
                             f"(value heads share key heads), got {self.num_v_heads}")
        for name in ("head_k_dim", "head_v_dim"):
            if getattr(self, name) is None:
                if self.hidden_size % self.num_heads:
                    raise ValueError(f"{name} is unset and hidden_size = {self.hidden_size} is not divisible "
                                     f"by num_heads = {self.num_heads}")
                object.__setattr__(self, name, self.hidden_size // self.num_heads)
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}, got {self.decay!r}")
        for name in ("erase", "write"):
            if getattr(self, name) not in GATES:
                raise ValueError(f"{name} must be one of {GATES}, got {getattr(self, name)!r}")
        if (self.erase == "tied") != (self.write == "tied"):
            raise ValueError(f"erase and write are tied together or not at all, got erase={self.erase!r}, "
                             f"write={self.write!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    @property
    def tied(self) -> bool:
        return self.erase == "tied"

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MixerConfig":
        """A named gate structure (``MIXER_PRESETS``) with sizes and any field overridden."""
        if name not in MIXER_PRESETS:
            raise ValueError(f"mixer preset must be one of {sorted(MIXER_PRESETS)}, got {name!r}")
        return cls(**{**MIXER_PRESETS[name], **overrides})


@dataclass
class RecurrentState:
    """Everything a ``GatedDeltaNet2`` layer carries between calls; its size never depends on the
    number of tokens seen. conv_*: the last ``conv_size - 1`` inputs of each short convolution
    ``[N, conv_size - 1, C]``; state: ``[N, HV, K, V]`` float32 (float64 for float64 models)."""

    conv_q: torch.Tensor
    conv_k: torch.Tensor
    conv_v: torch.Tensor
    state: torch.Tensor

    def tensors(self) -> List[torch.Tensor]:
        return [getattr(self, f.name) for f in fields(self)]

    def nbytes(self) -> int:
        return held_bytes(self.tensors())

    def select(self, index: torch.Tensor) -> None:
        """Keep (and reorder) the batch rows ``index`` (beam search)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name).index_select(0, index.to(self.state.device)))


@dataclass
class MixerInputs:
    """What one call hands the operator (shapes as in ``gated_delta_rule2``), plus the conv caches."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    g: Optional[torch.Tensor]
    b: object
    w: object
    conv: Tuple[Optional[torch.Tensor], ...] = field(default=(None, None, None))


def _inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


class GatedDeltaNet2(nn.Module):
    """The GDN-2 token mixer: ``[B, T, hidden_size] -> [B, T, hidden_size]``.

    >>> layer = GatedDeltaNet2(MixerConfig(hidden_size=64, num_heads=2))
    >>> layer(torch.randn(1, 10, 64)).shape
    torch.Size([1, 10, 64])
    """

    def __init__(self, config: MixerConfig):
        super().__init__()
        self.config = c = config
        H, HV, K, V, D = c.num_heads, c.num_v_heads, c.head_k_dim, c.head_v_dim, c.hidden_size
        self.q_proj = nn.Linear(D, H * K, bias=False)
        self.k_proj = nn.Linear(D, H * K, bias=False)
        self.v_proj = nn.Linear(D, HV * V, bias=False)
        self.q_conv = ShortConvolution(H * K, c.conv_size)
        self.k_conv = ShortConvolution(H * K, c.conv_size)
        self.v_conv = ShortConvolution(HV * V, c.conv_size)
        if c.decay != "none":
            width = H * K if c.decay == "channel" else H
            self.f_proj = nn.Linear(D, width, bias=False)
            self.A_log = nn.Parameter(torch.empty(H))
            self.dt_bias = nn.Parameter(torch.empty(width))
        if c.tied:
            self.beta_proj = nn.Linear(D, H, bias=False)
        else:
            if c.erase != "none":
                self.b_proj = nn.Linear(D, H * K, bias=False)
            if c.write != "none":
                self.w_proj = nn.Linear(D, HV * V, bias=False)
        self.g_proj = nn.Linear(D, HV * V, bias=False)
        self.o_norm = RMSNorm(V, eps=c.norm_eps)
        self.o_proj = nn.Linear(HV * V, D, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's initialisation: Xavier-uniform (gain 2^-2.5) projections, zero biases,
        ``A_log = log U(1, 16)`` per key head, ``dt_bias = softplus^-1(dt)``, ``dt ~ logU(1e-3, 1e-1)``.
        ``A_log`` and ``dt_bias`` are flagged ``_no_weight_decay``. Parameters a checkpoint loader has
        flagged ``_is_hf_initialized`` are left alone."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight, gain=2 ** -2.5)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if self.config.decay == "none":
            return
        with torch.no_grad():
            if not getattr(self.A_log, "_is_hf_initialized", False):
                self.A_log.copy_(torch.empty_like(self.A_log).uniform_(1, 16).log())
            if not getattr(self.dt_bias, "_is_hf_initialized", False):
                log_dt = torch.empty_like(self.dt_bias).uniform_(math.log(1e-3), math.log(1e-1))
                self.dt_bias.copy_(_inverse_softplus(log_dt.exp().clamp_min(1e-4)))
        self.no_weight_decay()

    def no_weight_decay(self) -> List[str]:
        """Names of this layer's parameters that take no weight decay (``A_log``, ``dt_bias``), and
        (re)flags them ``_no_weight_decay`` (a checkpoint loader may have replaced the flagged objects)."""
        names = [name for name in ("A_log", "dt_bias") if hasattr(self, name)]
        for name in names:
            getattr(self, name)._no_weight_decay = True
        return names

    def init_cache(self, batch_size: int, dtype: torch.dtype, device) -> RecurrentState:
        """A zero state for ``batch_size`` sequences, allocated once at its final size."""
        c, W = self.config, self.config.conv_size - 1
        H, HV, K, V = c.num_heads, c.num_v_heads, c.head_k_dim, c.head_v_dim
        state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        zeros = lambda *shape, dt=dtype: torch.zeros(*shape, dtype=dt, device=device)  # noqa: E731
        return RecurrentState(zeros(batch_size, W, H * K), zeros(batch_size, W, H * K),
                              zeros(batch_size, W, HV * V), zeros(batch_size, HV, K, V, dt=state_dtype))

    def project(self, x: torch.Tensor, cache: Optional[RecurrentState] = None,
                cu_seqlens: Optional[torch.Tensor] = None) -> MixerInputs:
        """The operator's inputs for ``x`` ``[B, T, hidden_size]`` (the first half of ``forward``)."""
        c = self.config
        B, T, _ = x.shape
        H, HV, K, V = c.num_heads, c.num_v_heads, c.head_k_dim, c.head_v_dim
        keep = cache is not None
        if cu_seqlens is not None:   # before the short convolutions index with it
            check_cu_seqlens(cu_seqlens, B, T)
        q, cq = self.q_conv(self.q_proj(x), cache.conv_q if keep else None, keep, cu_seqlens)
        k, ck = self.k_conv(self.k_proj(x), cache.conv_k if keep else None, keep, cu_seqlens)
        v, cv = self.v_conv(self.v_proj(x), cache.conv_v if keep else None, keep, cu_seqlens)
        q, k, v = q.view(B, T, H, K), k.view(B, T, H, K), v.view(B, T, HV, V)

        g = None
        if c.decay != "none":
            # the decay is computed in float32 (or float64) whatever the model's dtype
            dt = compute_dtype(x.dtype)
            f = self.f_proj(x).to(dt) + self.dt_bias.to(dt)
            A = torch.exp(self.A_log.to(dt))
            g = -(A[:, None] * F.softplus(f.view(B, T, H, K))) if c.decay == "channel" else -A * F.softplus(f)

        if c.tied:
            beta = torch.sigmoid(self.beta_proj(x))
            if c.negative_eigen:
                beta = 2 * beta
            b, w = beta, (beta if HV == H else beta.repeat_interleave(HV // H, dim=2))
        else:
            b = 0.0 if c.erase == "none" else torch.sigmoid(self.b_proj(x)).view(B, T, H, K)
            if c.erase == "scalar":
                b = b.mean(-1)
            if c.negative_eigen and c.erase != "none":
                b = 2 * b
            w = None if c.write == "none" else torch.sigmoid(self.w_proj(x)).view(B, T, HV, V)
            if c.write == "scalar":
                w = w.mean(-1)
        return MixerInputs(q, k, v, g, b, w, (cq, ck, cv))

    def output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-head RMSNorm of the operator's ``o`` ``[B, T, HV, V]``, SiLU output gate, projection."""
        B, T, HV, V = o.shape
        gate = F.silu(self.g_proj(x)).view(B, T, HV, V)
        return self.o_proj((self.o_norm(o) * gate).reshape(B, T, HV * V))

    def forward(self, x: torch.Tensor, cache: Optional[RecurrentState] = None,
                cu_seqlens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x ``[B, T, hidden_size]``. With ``cache`` the layer starts from it and leaves the state
        after x in it; with ``cu_seqlens`` (B = 1) packed documents never see each other."""
        p = self.project(x, cache, cu_seqlens)
        o, S = gated_delta_rule2(p.q, p.k, p.v, p.g, p.b, p.w, use_qk_l2norm=True,
                                 initial_state=None if cache is None else cache.state,
                                 output_final_state=cache is not None, cu_seqlens=cu_seqlens,
                                 backend=self.config.backend)
        if cache is not None:
            cache.conv_q, cache.conv_k, cache.conv_v = p.conv
            cache.state = S
        return self.output(o, x)

    def extra_repr(self) -> str:
        c = self.config
        return (f"heads={c.num_heads}, v_heads={c.num_v_heads}, K={c.head_k_dim}, V={c.head_v_dim}, "
                f"decay={c.decay}, erase={c.erase}, write={c.write}, negative_eigen={c.negative_eigen}")


__all__ = ["DECAYS", "GATES", "MIXER_PRESETS", "GatedDeltaNet2", "MixerConfig", "MixerInputs",
           "RecurrentState"]
