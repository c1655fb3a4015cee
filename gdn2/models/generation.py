"""A plain decode loop beside ``transformers.generate``: one prefill, then one token per step.

No logits processors, beams or stopping criteria beyond ``eos_token_id``; what it saves is the
per-step overhead of ``generate``, which dominates for small models and long generations.
"""

from __future__ import annotations

from typing import Optional

import torch


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: Optional[int] = None,
                top_p: Optional[float] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Next token ids ``[B, 1]`` from last-position logits ``[B, vocab]``: argmax when
    ``temperature == 0``, else a sample from ``softmax(logits / temperature)`` restricted to the
    ``top_k`` most likely tokens and to the smallest set whose probability reaches ``top_p``."""
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1 (or None: no limit), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (or None: no limit), got {top_p}")
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens before it already reach top_p (the most likely one always stays)
        drop = probs.cumsum(-1) - probs >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)


@torch.no_grad()
def decode(model, input_ids: torch.LongTensor, max_new_tokens: int, temperature: float = 0.0,
           top_k: Optional[int] = None, top_p: Optional[float] = None, eos_token_id: Optional[int] = None,
           generator: Optional[torch.Generator] = None) -> torch.LongTensor:
    """Continue ``input_ids`` ``[B, T]`` by up to ``max_new_tokens`` tokens with a ``GDN2ForCausalLM``;
    returns ``[B, T + n]``. Sequences that produced ``eos_token_id`` are padded with it, and the loop
    stops once all have."""
    cache = model.init_cache(input_ids.shape[0])
    logits = model(input_ids, past_key_values=cache, logits_to_keep=1).logits[:, -1]
    tokens = [input_ids]
    done = torch.zeros(input_ids.shape[0], 1, dtype=torch.bool, device=input_ids.device)
    for step in range(max_new_tokens):
        next_ids = sample_next(logits, temperature, top_k, top_p, generator)
        if eos_token_id is not None:
            next_ids = next_ids.masked_fill(done, eos_token_id)
            done |= next_ids == eos_token_id
        tokens.append(next_ids)
        if step + 1 == max_new_tokens or bool(done.all()):
            break
        logits = model(next_ids, past_key_values=cache).logits[:, -1]
    return torch.cat(tokens, dim=1)
