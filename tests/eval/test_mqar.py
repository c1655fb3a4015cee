"""MQAR generator (Zoology's rules) and its accuracy."""

import pytest
import torch

import gdn2.eval.mqar as mqar_module
from gdn2.eval.mqar import (IGNORE_INDEX, ZOOLOGY_TRAIN_MIXTURE, _sample_uniform_without_replacement,
                             _sample_without_replacement, mixture_counts, mixture_rows, mqar_accuracy,
                             mqar_batch, mqar_mixture_batch)

N, T, P, V = 64, 128, 8, 256


def test_shapes_and_dtypes():
    inputs, labels = mqar_batch(N, T, P, V, seed=0)
    assert inputs.shape == labels.shape == (N, T)
    assert inputs.dtype == labels.dtype == torch.long
    assert 0 <= int(inputs.min()) and int(inputs.max()) < V


def test_deterministic_for_a_seed_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = mqar_batch(N, T, P, V, seed=3), mqar_batch(N, T, P, V, seed=3), mqar_batch(N, T, P, V, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.inputs, c.inputs)


def test_context_keys_and_values_from_their_halves():
    inputs, _ = mqar_batch(N, T, P, V, seed=1)
    keys, values = inputs[:, 0:2 * P:2], inputs[:, 1:2 * P:2]
    assert bool(((keys >= 1) & (keys < V // 2)).all())
    assert bool(((values >= V // 2) & (values < V)).all())
    for row_keys, row_values in zip(keys, values):
        assert len(set(row_keys.tolist())) == P and len(set(row_values.tolist())) == P


@pytest.mark.parametrize("random_non_queries", [True, False])
def test_labels_only_at_queries_and_equal_to_the_paired_value(random_non_queries):
    inputs, labels = mqar_batch(N, T, P, V, seed=2, random_non_queries=random_non_queries)
    answer = labels != IGNORE_INDEX
    assert bool((answer.sum(1) == P).all())
    assert not bool(answer[:, :2 * P].any())
    for n in range(N):
        pairs = dict(zip(inputs[n, 0:2 * P:2].tolist(), inputs[n, 1:2 * P:2].tolist()))
        positions = answer[n].nonzero().flatten()
        assert bool(((positions - 2 * P) % 2 == 0).all())
        queried = inputs[n, positions].tolist()
        assert sorted(queried) == sorted(pairs)
        assert labels[n, positions].tolist() == [pairs[k] for k in queried]
    if not random_non_queries:
        filler = ~answer
        filler[:, :2 * P] = False
        assert bool((inputs[filler] == 0).all())


def test_power_law_favours_short_gaps():
    _, labels = mqar_batch(512, 512, 8, 1024, seed=0)
    gaps = ((labels != IGNORE_INDEX).nonzero()[:, 1] - 16) // 2
    space = (512 - 16) // 2
    assert (gaps < space // 4).float().mean() > 0.5
    _, uniform = mqar_batch(512, 512, 8, 1024, power_a=1.0, seed=0)
    gaps = ((uniform != IGNORE_INDEX).nonzero()[:, 1] - 16) // 2
    assert abs((gaps < space // 4).float().mean().item() - 0.25) < 0.05


def test_sampler_draws_as_multinomial_without_replacement_does():
    # the first and second draws' frequencies against torch.multinomial's exact ones: a sampler that
    # ignored the weights, repeated an index or returned them sorted would breach 0.01
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
    draws = _sample_without_replacement(weights, 100_000, 3, torch.Generator().manual_seed(0))
    assert all(len(set(row)) == 3 for row in draws[:1000].tolist())
    p = weights / weights.sum()
    second = torch.stack([p[i] * sum(p[j] / (1 - p[i]) for j in range(4) if j == k and j != i)
                          for k in range(4) for i in range(4)]).view(4, 4).sum(1)
    for column, expected in ((0, p), (1, second)):
        observed = torch.bincount(draws[:, column], minlength=4).double() / len(draws)
        assert (observed - expected.double()).abs().max() < 0.01, (column, observed, expected)


@pytest.mark.parametrize("m, k", [(4095, 64), (40, 4), (6, 3)])  # the rejection path, and the top-k one
def test_uniform_sampler_is_uniform_distinct_and_in_draw_order(m, k):
    draws = _sample_uniform_without_replacement(m, 60_000, k, torch.Generator().manual_seed(1))
    assert draws.shape == (60_000, k) and int(draws.min()) >= 0 and int(draws.max()) < m
    assert (draws.sort(1).values.diff(dim=1) > 0).all()  # distinct within every row
    for column in (0, k - 1):  # every position uniform: a sorted or biased sampler breaches this
        observed = torch.bincount(draws[:, column], minlength=m).double() / len(draws)
        assert (observed - 1 / m).abs().max() < 6 * (1 / m / len(draws)) ** 0.5 + 1e-9, column


def test_uniform_sampler_redraws_rows_short_of_distinct_values(monkeypatch):
    # rows 1 and 3 draw one value only; the others draw 0, 1, 2, ... and must keep it
    def draws_(m, size, generator):
        out = torch.arange(size[1]).expand(size).clone() % m
        out[1::2] = 7
        return out
    monkeypatch.setattr(mqar_module.torch, "randint", draws_)
    draws = _sample_uniform_without_replacement(100, 5, 4, torch.Generator().manual_seed(0))
    assert draws.shape == (5, 4) and (draws.sort(1).values.diff(dim=1) > 0).all()
    assert draws[0::2].tolist() == [[0, 1, 2, 3]] * 3 and draws[1::2].ne(7).any()


def test_rules_are_enforced():
    with pytest.raises(ValueError, match="even"):
        mqar_batch(2, 63, 4, 256)
    with pytest.raises(ValueError, match="even"):
        mqar_batch(2, 64, 17, 256)
    with pytest.raises(ValueError, match="exceed"):
        mqar_batch(2, 64, 4, 64)
    with pytest.raises(ValueError, match="num_kv_pairs"):
        mqar_batch(2, 64, 0, 256)
    with pytest.raises(ValueError, match="power_a"):
        mqar_batch(2, 64, 4, 256, power_a=0.0)


def test_accuracy_at_answer_positions_only():
    inputs, labels = mqar_batch(4, 64, 4, 128, seed=0)
    assert mqar_accuracy(labels.clamp(min=0), labels) == 1.0
    logits = torch.zeros(4, 64, 128)
    logits.scatter_(2, labels.clamp(min=0).unsqueeze(-1), 1.0)
    assert mqar_accuracy(logits, labels) == 1.0
    wrong = labels.clone()
    mask = labels != IGNORE_INDEX
    wrong[mask.nonzero()[:8].unbind(1)] = 0
    assert mqar_accuracy(wrong.clamp(min=0), labels) == 0.5
    with pytest.raises(ValueError):
        mqar_accuracy(torch.zeros(4, 63, dtype=torch.long), labels)


def test_mixture_counts_follow_the_weights():
    assert mixture_counts(256, [w for *_, w in ZOOLOGY_TRAIN_MIXTURE]) == [142, 29, 29, 28, 28]
    assert mixture_counts(7, [1, 1, 1]) == [3, 2, 2] and mixture_counts(0, [2, 1]) == [0, 0]
    with pytest.raises(ValueError, match="weights"):
        mixture_counts(4, [0, 0])


def test_mixture_batch_is_each_setting_right_padded():
    mixture = [(16, 2, 3), (32, 8, 1)]
    data = mqar_mixture_batch(8, mixture, V, seed=5, seq_len=40)
    assert data.inputs.shape == data.labels.shape == (8, 40)
    answers = (data.labels != IGNORE_INDEX).sum(1).tolist()
    assert answers == [2] * 6 + [8] * 2
    # each part is exactly its own setting's batch, then token 0 with nothing to predict
    short = mqar_batch(6, 16, 2, V, seed=5 * 1_000_003)
    assert torch.equal(data.inputs[:6, :16], short.inputs) and torch.equal(data.labels[:6, :16], short.labels)
    assert not bool(data.inputs[:6, 16:].any()) and bool((data.labels[:6, 16:] == IGNORE_INDEX).all())
    assert bool((data.labels[6:, 32:] == IGNORE_INDEX).all())
    again = mqar_mixture_batch(8, mixture, V, seed=5, seq_len=40)
    assert torch.equal(again.inputs, data.inputs)
    with pytest.raises(ValueError, match="shorter than the mixture"):
        mqar_mixture_batch(8, mixture, V, seq_len=20)


def test_mixture_rows_are_where_each_length_lies():
    assert mixture_rows(256, ZOOLOGY_TRAIN_MIXTURE) == [(0, 142, 64), (142, 171, 128), (171, 256, 256)]
    mixture = [(8, 2, 3), (16, 4, 1), (16, 2, 1), (8, 1, 1)]
    data = mqar_mixture_batch(20, mixture, 64, seed=2)
    rows = mixture_rows(20, mixture)
    assert rows == [(0, 10, 8), (10, 17, 16), (17, 20, 8)]  # equal lengths merge only when adjacent
    for a, b, t in rows:
        assert (data.labels[a:b, t:] == IGNORE_INDEX).all() and (data.inputs[a:b, t:] == 0).all()
        assert ((data.labels[a:b, :t] != IGNORE_INDEX).sum(1) > 0).all()
