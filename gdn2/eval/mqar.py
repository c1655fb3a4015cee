"""Multi-query associative recall (MQAR), with the rules of Zoology's ``multiquery_ar``
(Arora et al., 2023, "Zoology: Measuring and Improving Recall in Efficient Language Models").

An example of length ``T`` with ``P`` key-value pairs::

    k1 v1 k2 v2 ... kP vP | x  x  k3 x  x  x  k1 x  ...     (x: a random token)
    \\___ 2P tokens ____/   \\____ T - 2P tokens, queries ____/

- keys are drawn without replacement from ``[1, V // 2)``, values without replacement from
  ``[V // 2, V)`` (0 is the placeholder that random tokens later replace);
- every key is queried once, at position ``2P + 2g`` where the gaps ``g`` are drawn without
  replacement from ``0 .. (T - 2P) // 2 - 1`` with ``p(g) ~ a * (g + 1) ** (a - 1)``, a power
  law that favours queries soon after the context (``a = power_a``);
- labels are next-token targets already aligned with the inputs: ``labels[:, t]`` is the token
  to predict after reading ``inputs[:, :t + 1]``. It is the paired value where ``inputs[:, t]``
  is a query key and ``-100`` (ignored) everywhere else, so
  ``cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)`` needs no shift.
  The value itself is not in the inputs after a query (that position holds a random token).

The generator is written from the paper and that description with torch's generator, so its
samples match Zoology's distribution, not its numpy streams.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence, Tuple

import torch

IGNORE_INDEX = -100
_CHUNK_ELEMENTS = 1 << 24  # rows per sampling call are capped so N x vocab never materialises


class MQARData(NamedTuple):
    inputs: torch.Tensor  # [N, T] int64 token ids
    labels: torch.Tensor  # [N, T] int64, the paired value at query keys, IGNORE_INDEX elsewhere


def _sample_without_replacement(weights: torch.Tensor, rows: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """[rows, k] int64 indices into ``weights`` [M], each row drawn without replacement, in draw order.

    Efraimidis-Spirakis keys (``log(u) / w``, the ``k`` largest, in descending order) give the same
    distribution as ``torch.multinomial(..., replacement=False)`` at a quarter of its cost on a
    4096-token half vocabulary (Zoology's 8192), where sampling had become the training loop's
    bottleneck on a GPU (the data changed with this, 2026-12-07; its distribution did not)."""
    chunk = max(1, _CHUNK_ELEMENTS // weights.numel())
    scale = weights.double().reciprocal()
    out = [(torch.rand(min(chunk, rows - i), weights.numel(), generator=generator, dtype=torch.float64).log_()
            * scale).topk(k, dim=1).indices for i in range(0, rows, chunk)]
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)


def _sample_uniform_without_replacement(m: int, rows: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """[rows, k] int64 in ``[0, m)``, each row ``k`` distinct values in draw order, uniformly.

    The first ``k`` distinct values of ``3k + 8`` independent uniform draws are a uniform ordered
    sample without replacement (the draws that repeat an earlier one are the rejections of
    sequential sampling); no ``[rows, m]`` table is made, which at Zoology's 4096-token half
    vocabulary was most of a training batch's cost (38 ms of 256 sequences to 3 ms on two cores). A
    row with too few distinct draws (under 1e-11 likely for ``k <= m / 4``, where this path runs) is
    drawn again by ``_sample_without_replacement``."""
    if 4 * k > m:
        return _sample_without_replacement(torch.ones(m), rows, k, generator)
    draws = torch.randint(m, (rows, 3 * k + 8), generator=generator)
    ordered, order = draws.sort(dim=1, stable=True)  # stable: a value's first draw heads its run
    repeat = torch.zeros_like(draws, dtype=torch.bool)
    repeat.scatter_(1, order[:, 1:], ordered[:, 1:] == ordered[:, :-1])
    take = ~repeat & ((~repeat).cumsum(1) <= k)
    short = (take.sum(1) < k).nonzero().squeeze(1)
    if len(short):
        take[short] = False
        take[short, :k] = True
        draws[short, :k] = _sample_without_replacement(torch.ones(m), len(short), k, generator)
    return draws[take].view(rows, k)


def mqar_batch(num_examples: int, seq_len: int, num_kv_pairs: int, vocab_size: int, power_a: float = 0.01,
               seed: int = 0, random_non_queries: bool = True) -> MQARData:
    """``num_examples`` MQAR sequences; a function of the arguments only.

    Args:
        num_examples: ``N``.
        seq_len: ``T``, even, at least ``4 * num_kv_pairs`` and below ``vocab_size`` (Zoology's
            rules).
        num_kv_pairs: ``P`` pairs, each key queried once.
        vocab_size: ``V``; keys from ``[1, V // 2)``, values from ``[V // 2, V)``.
        power_a: the power-law exponent of the query gaps (Zoology's default 0.01).
        seed: seeds a private ``torch.Generator``; the global RNG is untouched.
        random_non_queries: fill the non-query positions after the context with random tokens
            from ``[0, V)`` as Zoology does; ``False`` leaves them 0.

    Returns:
        ``MQARData(inputs [N, T] int64, labels [N, T] int64)``.
    """
    if seq_len % 2 or num_kv_pairs * 4 > seq_len:
        raise ValueError(f"seq_len must be even and at least 4 * num_kv_pairs; got {seq_len}, {num_kv_pairs}")
    if vocab_size <= seq_len:
        raise ValueError(f"vocab_size must exceed seq_len (Zoology's rule); got {vocab_size} <= {seq_len}")
    if num_kv_pairs < 1:
        raise ValueError(f"num_kv_pairs must be at least 1; got {num_kv_pairs}")
    half = vocab_size // 2  # V > T >= 4P leaves at least 2P keys and values to draw from
    if power_a <= 0:
        raise ValueError("power_a must be positive")
    generator = torch.Generator().manual_seed(seed)
    context = 2 * num_kv_pairs
    keys = 1 + _sample_uniform_without_replacement(half - 1, num_examples, num_kv_pairs, generator)
    values = half + _sample_uniform_without_replacement(vocab_size - half, num_examples, num_kv_pairs,
                                                          generator)

    space = (seq_len - context) // 2
    rank = torch.arange(1, space + 1, dtype=torch.float64)
    gaps = _sample_without_replacement(power_a * rank ** (power_a - 1), num_examples, num_kv_pairs, generator)
    query_positions = context + 2 * gaps

    inputs = torch.zeros(num_examples, seq_len, dtype=torch.long)
    inputs[:, 0:context:2] = keys
    inputs[:, 1:context:2] = values
    inputs.scatter_(1, query_positions, keys)
    labels = torch.full((num_examples, seq_len), IGNORE_INDEX, dtype=torch.long)
    labels.scatter_(1, query_positions, values)
    if random_non_queries:
        noise = torch.randint(vocab_size, (num_examples, seq_len), generator=generator)
        inputs = torch.where(inputs == 0, noise, inputs)
    return MQARData(inputs, labels)


# Zoology's MQAR training mixture (their figure 2 and the Based paper's): (seq_len, pairs, examples),
# short easy sequences dominating, which is what lets two-layer models leave the loss plateau that
# a single hard setting holds them on. Their test settings reach past the training lengths.
ZOOLOGY_TRAIN_MIXTURE: Tuple[Tuple[int, int, int], ...] = (
    (64, 4, 100_000), (128, 8, 20_000), (256, 16, 20_000), (256, 32, 20_000), (256, 64, 20_000))
ZOOLOGY_TEST_SETTINGS: Tuple[Tuple[int, int], ...] = (
    (64, 4), (64, 8), (64, 16), (128, 32), (256, 64), (512, 128), (1024, 256))


def mixture_counts(num_examples: int, weights: Sequence[float]) -> list:
    """``num_examples`` split in proportion to ``weights`` (largest remainders get the rest)."""
    total = float(sum(weights))
    if num_examples < 0 or not weights or total <= 0 or min(weights) < 0:
        raise ValueError(f"need num_examples >= 0 and non-negative weights with a positive sum; got "
                         f"{num_examples}, {list(weights)}")
    exact = [num_examples * w / total for w in weights]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])[:num_examples - sum(counts)]:
        counts[i] += 1
    return counts


def mqar_mixture_batch(num_examples: int, mixture: Sequence[Tuple[int, int, float]], vocab_size: int,
                       power_a: float = 0.01, seed: int = 0, seq_len: int = 0) -> MQARData:
    """``num_examples`` sequences from several MQAR settings, in proportion to their weights, each
    part a ``mqar_batch`` and right-padded to one length (Zoology's training data, one batch of it).

    Args:
        mixture: ``(seq_len, num_kv_pairs, weight)`` per setting, e.g. ``ZOOLOGY_TRAIN_MIXTURE``.
        seq_len: the padded length; default (0) the longest setting's.
        vocab_size, power_a, seed: as in ``mqar_batch`` (setting ``i`` gets its own stream).

    Returns:
        ``MQARData`` ``[num_examples, seq_len]``; padding is token 0 with ``IGNORE_INDEX`` labels, after
        each sequence, so a causal model reads every sequence exactly as it would unpadded.

    >>> mqar_mixture_batch(10, [(8, 2, 3), (16, 4, 1)], vocab_size=32).inputs.shape
    torch.Size([10, 16])
    """
    longest = max((t for t, _, _ in mixture), default=0)
    seq_len = seq_len or longest
    if seq_len < longest:
        raise ValueError(f"seq_len {seq_len} is shorter than the mixture's longest setting {longest}")
    inputs = torch.zeros(num_examples, seq_len, dtype=torch.long)
    labels = torch.full((num_examples, seq_len), IGNORE_INDEX, dtype=torch.long)
    for i, (row, n, t, pairs) in enumerate(_mixture_layout(num_examples, mixture)):
        part = mqar_batch(n, t, pairs, vocab_size, power_a, seed=(seed * 1_000_003 + i) % (1 << 63))
        inputs[row:row + n, :t], labels[row:row + n, :t] = part.inputs, part.labels
    return MQARData(inputs, labels)


def _mixture_layout(num_examples: int, mixture: Sequence[Tuple[int, int, float]]) -> list:
    """``[(first row, rows, seq_len, pairs)]`` per setting, in the mixture's order."""
    layout, row = [], 0
    for (t, pairs, _), n in zip(mixture, mixture_counts(num_examples, [w for *_, w in mixture])):
        layout.append((row, n, t, pairs))
        row += n
    return layout


def mixture_rows(num_examples: int, mixture: Sequence[Tuple[int, int, float]]) -> list:
    """``[(first row, end row, seq_len)]``: where ``mqar_mixture_batch`` puts each length, settings of
    one length merged, so a model can read each group unpadded (Zoology's mixture is 47% padding).

    >>> mixture_rows(10, [(8, 2, 3), (16, 4, 1), (16, 2, 1)])
    [(0, 6, 8), (6, 10, 16)]
    """
    rows = []
    for row, n, t, _ in _mixture_layout(num_examples, mixture):
        if n and rows and rows[-1][2] == t:
            rows[-1] = (rows[-1][0], row + n, t)
        elif n:
            rows.append((row, row + n, t))
    return rows


def mqar_accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of answer positions predicted right (Zoology's accuracy).

    Args:
        predictions: token ids [N, T] or logits [N, T, V] (argmax taken).
        labels: [N, T] as returned by ``mqar_batch``.
    """
    if predictions.dim() == labels.dim() + 1:
        predictions = predictions.argmax(-1)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {list(predictions.shape)} do not match labels {list(labels.shape)}")
    mask = labels != IGNORE_INDEX
    if not mask.any():
        raise ValueError("no answer positions in labels")
    return (predictions[mask] == labels[mask]).double().mean().item()
