"""``GDN2Config``: the model's shape, its layer pattern and named presets."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from transformers import PretrainedConfig

from ..layers import MIXER_PRESETS, AttentionConfig, MixerConfig
from ..ops import BACKENDS

LAYER_KINDS = {"L": "linear-recurrent mixer + MLP", "A": "full attention + MLP",
               "S": "sliding-window attention + MLP"}

_SMALL = dict(vocab_size=32000, hidden_size=768, num_hidden_layers=12, num_heads=6, head_k_dim=128,
              head_v_dim=128, num_attention_heads=6, head_dim=128, intermediate_size=2048,
              sliding_window=2048)
_M340 = dict(vocab_size=32000, hidden_size=1024, num_hidden_layers=24, num_heads=8, head_k_dim=128,
             head_v_dim=128, num_attention_heads=8, head_dim=128, intermediate_size=2816, sliding_window=2048)
_PAPER = dict(vocab_size=32000, hidden_size=2048, num_heads=16, head_k_dim=128,
              head_v_dim=128, num_attention_heads=16, head_dim=128, intermediate_size=5632,
              sliding_window=2048)

PRESETS: Dict[str, Dict[str, Any]] = {
    # CPU-trainable in minutes (byte vocabulary)
    "tiny": dict(vocab_size=256, hidden_size=128, num_hidden_layers=4, pattern="L", num_heads=2,
                 head_k_dim=64, head_v_dim=64, num_attention_heads=2, head_dim=64, intermediate_size=384,
                 sliding_window=256),
    # ~150M research models: recurrent, the paper's hybrid, the Qwen3-Next / Kimi-Linear 3:1 hybrid
    "recurrent": dict(_SMALL, pattern="L"),
    "hybrid": dict(_SMALL, pattern="LS"),
    "hybrid_3to1": dict(_SMALL, pattern="LLLA"),
    # FLA's 340M recipe as the paper's hybrid: the throughput benchmark and the multi-GPU run
    "hybrid_340m": dict(_M340, pattern="LS"),
    # the paper's 1.3B shapes (d_model 2048, 16 heads, d_k = d_v = 128), for throughput and memory work
    "paper_1.3b": dict(_PAPER, pattern="L", num_hidden_layers=18),           # 1.29B parameters
    "paper_1.3b_hybrid": dict(_PAPER, pattern="LS", num_hidden_layers=20),   # 1.26B parameters
}


class GDN2Config(PretrainedConfig):
    """Configuration of ``GDN2ForCausalLM``.

    The layer layout is ``pattern`` cycled over ``num_hidden_layers`` blocks: ``L`` = GDN-2 (or a
    relative, ``mixer``) + MLP, ``A`` = full attention + MLP, ``S`` = sliding-window attention
    (``sliding_window`` tokens) + MLP; e.g. ``"LS"`` is the paper's hybrid, ``"LLLA"`` a 3:1 hybrid.

    Linear layers: ``num_heads`` key heads of width ``head_k_dim`` and ``num_v_heads`` value heads
    of width ``head_v_dim`` (widths default to ``hidden_size // num_heads``), short convolutions of
    ``conv_size``, gate structure ``mixer`` (a preset of ``gdn2.layers.MIXER_PRESETS``), erase gate in
    [0, 2] with ``negative_eigen``, operator backend ``backend``.
    Attention layers: ``num_attention_heads`` heads of ``head_dim`` (default ``hidden_size //
    num_attention_heads``), ``num_key_value_heads`` KV heads, RoPE base ``rope_theta``, optional
    sigmoid output gate ``attn_output_gate``, short convolution on q, k, v of ``attn_conv_size``
    (0: none), rotary embeddings unless ``attn_rope`` is False.
    Invalid values raise ``ValueError`` naming the field.

    >>> GDN2Config.from_preset("tiny", pattern="LS").layer_kinds
    ['L', 'S', 'L', 'S']
    """

    model_type = "gdn2"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    def __init__(self, vocab_size: int = 32000, hidden_size: int = 768, num_hidden_layers: int = 12,
                 pattern: str = "L", mixer: str = "gdn2", num_heads: int = 6, num_v_heads: Optional[int] = None,
                 head_k_dim: Optional[int] = None, head_v_dim: Optional[int] = None, conv_size: int = 4,
                 negative_eigen: bool = False, backend: str = "auto", num_attention_heads: int = 6,
                 num_key_value_heads: Optional[int] = None, head_dim: Optional[int] = None,
                 sliding_window: int = 2048, rope_theta: float = 10000.0, attn_output_gate: bool = False,
                 attn_conv_size: int = 0, attn_rope: bool = True,
                 intermediate_size: int = 2048, rms_norm_eps: float = 1e-6, initializer_range: float = 0.02,
                 tie_word_embeddings: bool = True, use_cache: bool = True, pad_token_id: Optional[int] = None,
                 bos_token_id: Optional[int] = None, eos_token_id: Optional[int] = None, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.pattern = pattern
        self.mixer = mixer
        self.num_heads = num_heads
        self.num_v_heads = num_heads if num_v_heads is None else num_v_heads
        self.head_k_dim = head_k_dim
        self.head_v_dim = head_v_dim
        self.conv_size = conv_size
        self.negative_eigen = negative_eigen
        self.backend = backend
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.head_dim = head_dim
        self.sliding_window = sliding_window
        self.rope_theta = rope_theta
        self.attn_output_gate = attn_output_gate
        self.attn_conv_size = attn_conv_size
        self.attn_rope = attn_rope
        self.intermediate_size = intermediate_size
        self.rms_norm_eps = rms_norm_eps
        self.initializer_range = initializer_range
        special = dict(tie_word_embeddings=tie_word_embeddings, use_cache=use_cache, pad_token_id=pad_token_id,
                       bos_token_id=bos_token_id, eos_token_id=eos_token_id)
        super().__init__(**special, **kwargs)
        for name, value in special.items():  # transformers 5 no longer keeps these on the base class
            setattr(self, name, value)
        self._validate()
        # head widths derived where the pattern has such layers (validated), else where they divide
        if (self.head_k_dim is None or self.head_v_dim is None) and (
                "L" in self.pattern or self.hidden_size % self.num_heads == 0):
            mixer_config = self.mixer_config()
            self.head_k_dim, self.head_v_dim = mixer_config.head_k_dim, mixer_config.head_v_dim
        if self.head_dim is None and (self._has_attention or self.hidden_size % self.num_attention_heads == 0):
            self.head_dim = self.attention_config("A").head_dim

    @property
    def _has_attention(self) -> bool:
        return any(kind in self.pattern for kind in "AS")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "GDN2Config":
        """A named configuration (``PRESETS``: tiny, recurrent, hybrid, hybrid_3to1, hybrid_340m,
        paper_1.3b, paper_1.3b_hybrid) with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def layer_kinds(self) -> List[str]:
        """The kind (L, A or S) of every block: ``pattern`` cycled over the layers."""
        return [self.pattern[i % len(self.pattern)] for i in range(self.num_hidden_layers)]

    def mixer_config(self) -> MixerConfig:
        """The settings of an ``L`` layer's ``GatedDeltaNet2``."""
        return MixerConfig.from_preset(
            self.mixer, hidden_size=self.hidden_size, num_heads=self.num_heads, num_v_heads=self.num_v_heads,
            head_k_dim=self.head_k_dim, head_v_dim=self.head_v_dim, conv_size=self.conv_size,
            negative_eigen=self.negative_eigen, norm_eps=self.rms_norm_eps, backend=self.backend)

    def attention_config(self, kind: str) -> AttentionConfig:
        """The settings of an ``A`` (full) or ``S`` (sliding-window) layer's ``Attention``."""
        return AttentionConfig(
            hidden_size=self.hidden_size, num_heads=self.num_attention_heads, num_kv_heads=self.num_key_value_heads,
            head_dim=self.head_dim, window=self.sliding_window if kind == "S" else None,
            rope_theta=self.rope_theta, output_gate=self.attn_output_gate, conv_size=self.attn_conv_size,
            rope=self.attn_rope)

    def _validate(self) -> None:
        def positive(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "num_heads",
                     "num_v_heads", "conv_size", "num_attention_heads", "num_key_value_heads"):
            positive(name)
        for name in ("head_k_dim", "head_v_dim", "head_dim"):
            if getattr(self, name) is not None:
                positive(name)
        if not isinstance(self.pattern, str) or not self.pattern:
            raise ValueError(f"pattern must be a non-empty string of layer letters {sorted(LAYER_KINDS)}, "
                             f"got {self.pattern!r}")
        unknown = sorted(set(self.pattern) - set(LAYER_KINDS))
        if unknown:
            raise ValueError(f"pattern {self.pattern!r} has unknown layer letter(s) {unknown}; use "
                             + ", ".join(f"{k} ({v})" for k, v in LAYER_KINDS.items()))
        if self.mixer not in MIXER_PRESETS:
            raise ValueError(f"mixer must be one of {sorted(MIXER_PRESETS)}, got {self.mixer!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.num_v_heads % self.num_heads:
            raise ValueError(f"num_v_heads must be a multiple of num_heads = {self.num_heads} (value heads share "
                             f"key heads), got {self.num_v_heads}")
        # the widths of a kind of layer the pattern does not have are not checked (their defaults
        # need not divide hidden_size)
        for name in ("head_k_dim", "head_v_dim"):
            if "L" in self.pattern and getattr(self, name) is None and self.hidden_size % self.num_heads:
                raise ValueError(f"num_heads = {self.num_heads} must divide hidden_size = {self.hidden_size} "
                                 f"unless {name} is given")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_key_value_heads must divide num_attention_heads = {self.num_attention_heads}, "
                             f"got {self.num_key_value_heads}")
        if self._has_attention and self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(f"num_attention_heads = {self.num_attention_heads} must divide hidden_size = "
                             f"{self.hidden_size} unless head_dim is given")
        if self.head_dim is not None and self.head_dim % 2:
            raise ValueError(f"head_dim must be even (RoPE rotates pairs), got {self.head_dim}")
        if isinstance(self.sliding_window, bool) or not isinstance(self.sliding_window, int) \
                or self.sliding_window <= 0:
            raise ValueError(f"sliding_window must be a positive number of tokens, got {self.sliding_window!r}")
        if self.rope_theta <= 0:
            raise ValueError(f"rope_theta must be > 0, got {self.rope_theta}")
        if isinstance(self.attn_conv_size, bool) or not isinstance(self.attn_conv_size, int) \
                or self.attn_conv_size < 0:
            raise ValueError(f"attn_conv_size must be a non-negative integer (0: none), got {self.attn_conv_size!r}")
        if not isinstance(self.attn_rope, bool):
            raise ValueError(f"attn_rope must be True or False, got {self.attn_rope!r}")
