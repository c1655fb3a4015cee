"""Text from a checkpoint: load the model and its tokenizer, continue a prompt."""

from __future__ import annotations

import os
from typing import Optional, Tuple, Union

import torch

from ..data import Tokenizer
from ..models import GDN2ForCausalLM, decode
from ..ops.utils import usable_device
from . import checkpoint as ckpt


def load(path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu") -> Tuple[GDN2ForCausalLM, Tokenizer]:
    """The model (eval mode, float32) and tokenizer of a checkpoint, or of a run directory's latest one."""
    device = usable_device(device)
    directory = ckpt.resolve(path)
    with ckpt.quiet_transformers():
        model = GDN2ForCausalLM.from_pretrained(directory)
    model = model.to(device=device, dtype=torch.float32).eval()
    return model, Tokenizer.load(directory)


def generate_text(model: GDN2ForCausalLM, tokenizer: Tokenizer, prompt: str, max_new_tokens: int = 200,
                  temperature: float = 0.8, top_k: Optional[int] = 50, top_p: Optional[float] = None,
                  seed: int = 0) -> str:
    """``prompt`` and its continuation, which ends at the end-of-text token or after
    ``max_new_tokens``. The prompt is read as the start of a document (after ``<|endoftext|>``,
    as documents are in training); ``temperature = 0`` decodes greedily."""
    device = model.get_input_embeddings().weight.device
    ids = torch.tensor([[tokenizer.eos_id] + tokenizer.encode(prompt)], device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = decode(model, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                 eos_token_id=tokenizer.eos_id, generator=generator)
    new = out[0, ids.shape[1]:].tolist()
    if tokenizer.eos_id in new:
        new = new[:new.index(tokenizer.eos_id)]
    return prompt + tokenizer.decode(new)
