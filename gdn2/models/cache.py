"""``GDN2Cache``: the inference state of a whole model, one entry per layer.

    L layers  ``RecurrentState``: conv windows + [B, HV, K, V] float32 state, allocated once (fixed size)
    S layers  ``SlidingKVCache``: at most ``sliding_window`` tokens of keys and values (ring buffer)
    A layers  ``KVCache``: every token's keys and values (grows)

``transformers.generate`` only needs ``get_seq_length`` and the flags below; the model's
``prepare_inputs_for_generation`` feeds it the tokens the cache has not seen.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from ..layers import RecurrentState


class GDN2Cache:
    """Per-layer caches of ``GDN2ForCausalLM`` (build with ``GDN2ForCausalLM.init_cache``)."""

    is_compileable = False  # tells transformers not to torch.compile the decode step around it
    is_croppable = False    # no rollback: assisted / speculative decoding cannot use it

    def __init__(self, layers: List[object], batch_size: Optional[int] = None):
        self.layers = layers
        self.seen_tokens = 0
        self.batch_size = batch_size   # the sequences it was made for (None: not known, not checked)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, layer_idx: int):
        return self.layers[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens seen so far (the same for every layer)."""
        return self.seen_tokens

    @property
    def is_linear(self) -> List[bool]:
        return [isinstance(layer, RecurrentState) for layer in self.layers]

    def tensors(self) -> List[torch.Tensor]:
        return [t for layer in self.layers for t in layer.tensors()]

    def nbytes(self) -> int:
        """Bytes of storage held by every layer's cache tensors."""
        return sum(layer.nbytes() for layer in self.layers)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Keep (and reorder) the batch rows ``beam_idx``."""
        for layer in self.layers:
            layer.select(beam_idx)
        if self.batch_size is not None:
            self.batch_size = len(beam_idx)

    def __repr__(self) -> str:
        kinds = "".join("L" if linear else "K" for linear in self.is_linear)
        return f"GDN2Cache(layers={kinds!r}, seen_tokens={self.seen_tokens}, nbytes={self.nbytes()})"
