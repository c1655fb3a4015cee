"""Log-likelihoods of token sequences under a ``GDN2ForCausalLM``: the one routine behind
perplexity and the lm-eval adapter.

A request is a token sequence ``s`` and a count ``n``: the log-probability of the last ``n``
tokens of ``s``, each predicted from all the tokens before it. Short requests are packed along
the time axis of a single row with ``cu_seqlens`` (nothing flows between them, so packing
changes the result only by float rounding); a request longer than ``batch_tokens`` is run
alone, ``batch_tokens`` tokens per forward, carrying the model's cache between forwards, so its
memory stays bounded (constant for recurrent models) with the full context kept.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

_HEAD_ROWS = 1024  # positions per lm_head call, so [positions, vocab] logits never get large


def progress_bar(iterable: Optional[Iterable], total: Optional[int] = None, desc: str = "", enabled: bool = True,
                 unit: str = "it"):
    """``tqdm`` (imported on first use, on stderr) around ``iterable`` (``None``: a bar advanced
    by ``update``); the bare ``iterable`` when disabled or when tqdm is not installed."""
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)


def _score_positions(model, hidden: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities ``[P]`` float64 of ``targets`` ``[P]`` from final hidden states ``[P, D]``,
    and whether each target is the argmax."""
    logprobs, greedy = [], []
    for i in range(0, hidden.shape[0], _HEAD_ROWS):
        logits = model.lm_head(hidden[i:i + _HEAD_ROWS]).float()
        target = targets[i:i + _HEAD_ROWS]
        logprobs.append(-F.cross_entropy(logits, target, reduction="none").double())
        greedy.append(logits.argmax(-1) == target)
    if not logprobs:
        return hidden.new_zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.bool, device=hidden.device)
    return torch.cat(logprobs), torch.cat(greedy)


def _check(requests: Sequence[Tuple[Sequence[int], int]]) -> None:
    for i, (tokens, n) in enumerate(requests):
        if not 0 <= n < max(len(tokens), 1):
            raise ValueError(f"request {i}: cannot score the last {n} of {len(tokens)} tokens (the first token "
                             "has nothing to be predicted from)")


def _run_long(model, tokens: Sequence[int], n: int, batch_tokens: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """One request, ``batch_tokens`` inputs per forward with the cache carried between them."""
    inputs = torch.tensor(tokens[:-1], dtype=torch.long, device=device)
    targets = torch.tensor(tokens[1:], dtype=torch.long, device=device)
    first = len(inputs) - n  # the first scored input position
    cache = model.init_cache(1)
    logprobs, greedy = [], []
    for start in range(0, len(inputs), batch_tokens):
        end = min(start + batch_tokens, len(inputs))
        hidden = model.model(inputs[None, start:end], cache=cache)[0]
        lo = max(first, start)
        if lo < end:
            lp, gr = _score_positions(model, hidden[lo - start:], targets[lo:end])
            logprobs.append(lp)
            greedy.append(gr)
    return torch.cat(logprobs), torch.cat(greedy)


def _run_packed(model, batch: Sequence[Tuple[Sequence[int], int]], device) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Several requests packed into one row with ``cu_seqlens``."""
    inputs, targets, keep, bounds = [], [], [], [0]
    for tokens, n in batch:
        inputs.extend(tokens[:-1])
        targets.extend(tokens[1:])
        keep.extend([False] * (len(tokens) - 1 - n) + [True] * n)
        bounds.append(len(inputs))
    row = torch.tensor(inputs, dtype=torch.long, device=device)[None]
    cu_seqlens = torch.tensor(bounds, dtype=torch.int32, device=device)
    hidden = model.model(row, cu_seqlens=cu_seqlens)[0]
    mask = torch.tensor(keep, dtype=torch.bool, device=device)
    logprobs, greedy = _score_positions(model, hidden[mask], torch.tensor(targets, device=device)[mask])
    sizes = [n for _, n in batch]
    return list(zip(logprobs.split(sizes), greedy.split(sizes)))


@torch.no_grad()
def sequence_logprobs(model, requests: Sequence[Tuple[Sequence[int], int]], batch_tokens: int = 8192,
                      progress: bool = False, desc: str = "scoring") -> List[Tuple[float, bool]]:
    """``(sum of log-probabilities, every token greedy)`` of the last ``n`` tokens of each request.

    Args:
        model: a ``GDN2ForCausalLM`` (``.model`` gives final hidden states, ``.lm_head`` logits).
        requests: ``(tokens, n)`` pairs; ``tokens`` a list of ids, ``0 <= n < len(tokens)``.
        batch_tokens: input tokens per forward: requests are packed up to this many; a longer one
            runs alone in pieces of this many, carrying the cache.
        progress: show a progress bar over requests.

    Returns:
        One ``(logprob, is_greedy)`` per request, in request order (natural log, float64 sums).
    """
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be positive, got {batch_tokens}")
    _check(requests)
    device = model.lm_head.weight.device
    results: List[Optional[Tuple[float, bool]]] = [None] * len(requests)

    def finish(i: int, logprobs: torch.Tensor, greedy: torch.Tensor) -> None:
        results[i] = (float(logprobs.sum()), bool(greedy.all()))

    # longest first, so packed rows fill evenly and a slow long request shows up early in the bar
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]))
    bar = progress_bar(None, total=len(requests), desc=desc, enabled=progress)
    pending: List[int] = []
    pending_tokens = 0

    def flush() -> None:
        nonlocal pending, pending_tokens
        if pending:
            for i, (lp, gr) in zip(pending, _run_packed(model, [requests[i] for i in pending], device)):
                finish(i, lp, gr)
            _advance(bar, len(pending))
        pending, pending_tokens = [], 0

    for i in order:
        tokens, n = requests[i]
        length = len(tokens) - 1
        if n == 0:
            finish(i, torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.bool))
            _advance(bar, 1)
        elif length > batch_tokens:
            finish(i, *_run_long(model, tokens, n, batch_tokens, device))
            _advance(bar, 1)
        else:
            if pending_tokens + length > batch_tokens:
                flush()
            pending.append(i)
            pending_tokens += length
    flush()
    if hasattr(bar, "close"):
        bar.close()
    return results


def _advance(bar, n: int) -> None:
    if hasattr(bar, "update"):
        bar.update(n)
