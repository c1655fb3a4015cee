"""Layers built on the operator: the GDN-2 token mixer (and its tied / ablated relatives), causal
attention (full or sliding-window), the short convolution, RMSNorm and the SwiGLU MLP."""

from .attention import Attention, AttentionConfig, KVCache, SlidingKVCache, apply_rope
from .conv import ShortConvolution
from .gdn2 import MIXER_PRESETS, GatedDeltaNet2, MixerConfig, MixerInputs, RecurrentState
from .norm import MLP, RMSNorm

__all__ = ["Attention", "AttentionConfig", "GatedDeltaNet2", "KVCache", "MIXER_PRESETS", "MLP", "MixerConfig",
           "MixerInputs", "RMSNorm", "RecurrentState", "ShortConvolution", "SlidingKVCache", "apply_rope"]
