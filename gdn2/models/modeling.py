"""``GDN2ForCausalLM``: pre-norm residual blocks (mixer + SwiGLU MLP) laid out by a pattern string.

Works on any device: the linear mixers call ``gdn2.ops`` with ``backend="auto"`` (Triton on CUDA,
the chunkwise PyTorch version elsewhere); attention is ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Set, Tuple, Union

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..layers import MLP, Attention, GatedDeltaNet2, RMSNorm, ShortConvolution
from .cache import GDN2Cache
from .configuration import GDN2Config

_TRANSFORMERS_MAJOR = int(transformers.__version__.split(".")[0])
# transformers 5 renamed the output's (and generate's) "past_key_values" to "cache"
_CACHE_KEY = "cache" if "cache" in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)} else "past_key_values"


class GDN2Block(nn.Module):
    """``x + mixer(norm(x))`` then ``x + mlp(norm(x))``; the mixer is set by the layer's kind."""

    def __init__(self, config: GDN2Config, kind: str):
        super().__init__()
        self.kind = kind
        self.mixer_norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mixer = (GatedDeltaNet2(config.mixer_config()) if kind == "L"
                      else Attention(config.attention_config(kind)))
        self.mlp_norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = MLP(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor, cache=None, cu_seqlens: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.mixer(self.mixer_norm(x), cache, cu_seqlens)
        return x + self.mlp(self.mlp_norm(x))


class GDN2PreTrainedModel(PreTrainedModel):
    config_class = GDN2Config
    base_model_prefix = "model"
    _no_split_modules = ["GDN2Block"]
    _is_stateful = True  # recurrent state cannot be rolled back (no assisted generation)

    def _init_weights(self, module: nn.Module) -> None:
        # Called child-first, so a GatedDeltaNet2's own initialisation overrides the default one of its
        # projections. Parameters loaded from a checkpoint are protected by transformers' guards.
        if isinstance(module, (GatedDeltaNet2, RMSNorm, ShortConvolution)):
            module.reset_parameters()
        elif isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)


    def no_weight_decay(self) -> Set[str]:
        """Full names of the parameters to keep out of weight decay (every GDN-2 layer's ``A_log`` and
        ``dt_bias``, spec section 7), e.g. for building AdamW parameter groups."""
        return {f"{prefix}.{name}" for prefix, module in self.named_modules() if isinstance(module, GatedDeltaNet2)
                for name in module.no_weight_decay()}


class GDN2Model(GDN2PreTrainedModel):
    """Embeddings, the blocks and the final norm: ``input_ids [B, T] -> hidden states [B, T, D]``."""

    def __init__(self, config: GDN2Config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(GDN2Block(config, kind) for kind in config.layer_kinds)
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def init_cache(self, batch_size: int, dtype: Optional[torch.dtype] = None, device=None) -> GDN2Cache:
        """An empty cache for ``batch_size`` sequences (L layers' states are allocated now, at their
        final size; attention caches grow as tokens come)."""
        weight = self.embed_tokens.weight
        dtype = weight.dtype if dtype is None else dtype
        device = weight.device if device is None else device
        return GDN2Cache([block.mixer.init_cache(batch_size, dtype, device) for block in self.layers], batch_size)

    def forward(self, input_ids: Optional[torch.LongTensor] = None, cu_seqlens: Optional[torch.Tensor] = None,
                cache: Optional[GDN2Cache] = None, inputs_embeds: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Hidden states after the final norm. With ``cache`` the model continues from it and
        leaves the state after these tokens in it."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if input_ids is not None and input_ids.ndim != 2:
            raise ValueError(f"input_ids must have shape [B, T], got {list(input_ids.shape)}")
        if inputs_embeds is not None and (inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != self.config.hidden_size):
            raise ValueError(f"inputs_embeds must have shape [B, T, hidden_size = {self.config.hidden_size}], "
                             f"got {list(inputs_embeds.shape)}")
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        if cache is not None and cache.batch_size is not None and cache.batch_size != x.shape[0]:
            raise ValueError(f"the cache holds {cache.batch_size} sequence(s) but the input has batch size "
                             f"{x.shape[0]}: make it with init_cache({x.shape[0]})")
        if cu_seqlens is not None:
            if cache is not None:
                raise ValueError("cu_seqlens (packed documents) cannot be combined with a cache: "
                                 "generate with a batch instead")
            if x.shape[0] != 1:
                raise ValueError(f"cu_seqlens requires batch size 1 (documents packed along T), got {x.shape[0]}")
        for i, block in enumerate(self.layers):
            x = block(x, None if cache is None else cache.layers[i], cu_seqlens)
        if cache is not None:
            cache.seen_tokens += x.shape[1]
        return self.norm(x)


class GDN2ForCausalLM(GDN2PreTrainedModel, GenerationMixin):
    """The language model: ``GDN2Model`` and a (tied or untied) output projection.

    >>> model = GDN2ForCausalLM(GDN2Config.from_preset("tiny", pattern="LS"))
    >>> out = model(torch.randint(0, 256, (1, 12)), labels=torch.randint(0, 256, (1, 12)))
    >>> out.logits.shape, out.loss.ndim
    (torch.Size([1, 12, 256]), 0)
    """

    _tied_weights_keys = ({"lm_head.weight": "model.embed_tokens.weight"} if _TRANSFORMERS_MAJOR >= 5
                          else ["lm_head.weight"])
    # forward takes **kwargs (generate's extras) but not Trainer's num_items_in_batch: without this,
    # Trainer would take the loss as already summed over its accumulation steps and not divide it
    accepts_loss_kwargs = False

    def __init__(self, config: GDN2Config):
        super().__init__(config)
        self.model = GDN2Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def init_cache(self, batch_size: int, dtype: Optional[torch.dtype] = None, device=None) -> GDN2Cache:
        return self.model.init_cache(batch_size, dtype, device)

    def forward(self, input_ids: Optional[torch.LongTensor] = None, labels: Optional[torch.LongTensor] = None,
                cu_seqlens: Optional[torch.Tensor] = None, past_key_values: Optional[GDN2Cache] = None,
                use_cache: Optional[bool] = None, attention_mask: Optional[torch.Tensor] = None,
                inputs_embeds: Optional[torch.Tensor] = None, logits_to_keep: Union[int, torch.Tensor] = 0,
                return_dict: Optional[bool] = None, cache: Optional[GDN2Cache] = None,
                **kwargs) -> Union[CausalLMOutputWithPast, Tuple]:
        """A ``CausalLMOutputWithPast``: logits ``[B, T, vocab]``, the mean next-token cross-entropy
        when ``labels`` ``[B, T]`` are given (-100 is ignored), and the cache (``.cache`` in
        transformers 5, ``.past_key_values`` in 4).

        Args:
            input_ids: ``[B, T]`` token ids (or ``inputs_embeds`` ``[B, T, hidden_size]``).
            cu_seqlens: ``[N + 1]`` int offsets of documents packed along T (B = 1): nothing crosses
                a boundary, and no loss is taken across one.
            past_key_values: a ``GDN2Cache`` to continue from (updated in place); ``cache`` is the
                same argument under transformers 5's name.
            use_cache: start a cache when none is given (default: ``config.use_cache`` in eval mode).
            attention_mask: accepted for ``generate``; it must be all ones (pack variable-length
                sequences with ``cu_seqlens`` instead of padding them).
            logits_to_keep: compute logits for the last this many positions only (0: all).
        """
        if past_key_values is not None and cache is not None and past_key_values is not cache:
            raise ValueError("pass the cache as past_key_values or as cache, not two different ones")
        cache = past_key_values if past_key_values is not None else cache
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("attention_mask has padded positions, which GDN2 does not support: pack "
                             "variable-length sequences with cu_seqlens, or generate from equal-length prompts")
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training and cu_seqlens is None
        if use_cache and cache is None:
            ref = input_ids if input_ids is not None else inputs_embeds
            cache = self.init_cache(ref.shape[0])

        hidden = self.model(input_ids, cu_seqlens, cache, inputs_embeds)
        kept = hidden[:, -logits_to_keep:] if isinstance(logits_to_keep, int) else hidden[:, logits_to_keep]
        logits = self.lm_head(kept)
        loss = None if labels is None else self.loss(logits, labels, cu_seqlens)
        if return_dict is False:
            return tuple(x for x in (loss, logits, cache) if x is not None)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{_CACHE_KEY: cache})

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor, cu_seqlens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean cross-entropy of predicting ``labels[:, t + 1]`` from position t, in float32 or wider;
        with ``cu_seqlens`` the last token of a document does not predict the next document's first."""
        if labels.ndim != 2 or labels.shape[0] != logits.shape[0] or logits.shape[1] != labels.shape[1]:
            raise ValueError(f"labels must cover the positions logits were kept for: logits {list(logits.shape[:2])}, "
                             f"labels {list(labels.shape)}")
        targets = labels[:, 1:].clone()
        if cu_seqlens is not None:
            ends = cu_seqlens[1:-1].to(torch.int64)
            targets[:, ends[(ends > 0) & (ends < labels.shape[1])] - 1] = -100
        logits = logits[:, :-1]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, past_key_values: Optional[GDN2Cache] = None,
                                      attention_mask: Optional[torch.Tensor] = None, use_cache: bool = True,
                                      cache: Optional[GDN2Cache] = None, **kwargs):
        """The tokens the cache has not seen yet (all of them on the first step), and the cache."""
        cache = past_key_values if past_key_values is not None else cache
        if cache is not None and use_cache:
            input_ids = input_ids[:, cache.get_seq_length():]
        inputs = dict(input_ids=input_ids, past_key_values=cache if use_cache else None, use_cache=use_cache,
                      attention_mask=attention_mask)
        if "logits_to_keep" in kwargs:
            inputs["logits_to_keep"] = kwargs["logits_to_keep"]
        return inputs

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # the model makes its own GDN2Cache on the first forward; transformers' DynamicCache cannot hold it
        return False
