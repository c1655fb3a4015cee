"""MQAR training: the loss falls, runs are reproducible, settings are checked before training."""

import json

import pytest

pytest.importorskip("transformers")

from gdn2.eval import MQARResult, mqar_config, mqar_table, train_mqar, write_mqar  # noqa: E402
from gdn2.eval.mqar_train import SCHEDULE_FLOOR, describe, mqar_mixers  # noqa: E402
from gdn2.train.optim import lr_factor  # noqa: E402

TINY = dict(vocab_size=64, hidden_size=32)


def mean(xs):
    return sum(xs) / len(xs)


@pytest.mark.parametrize("mixer", ["gdn2", "attention", "attention_conv"])
def test_loss_decreases(mixer):
    result = train_mqar(mqar_config(mixer, **TINY), seq_len=16, num_kv_pairs=2, steps=40, lr=1e-2, batch_size=32,
                        num_test=32)
    assert len(result.losses) == 40 and 0.0 <= result.accuracy <= 1.0
    assert mean(result.losses[-5:]) < mean(result.losses[:5]) - 0.3, result.losses


def test_reproducible_for_a_seed():
    run = lambda seed: train_mqar(mqar_config("gdn", **TINY), 16, 2, steps=4, seed=seed, num_test=16)  # noqa: E731
    first, again, other = run(0), run(0), run(1)
    assert first.losses == again.losses and first.accuracy == again.accuracy
    assert first.losses != other.losses
    assert 0 < first.first_step_seconds < first.seconds   # the time to the first step is kept apart


def test_config_choices():
    assert mqar_config("attention").layer_kinds == ["A", "A"]
    assert mqar_config("kda", pattern="LA").layer_kinds == ["L", "A"] and mqar_config("kda").mixer == "kda"
    assert {"gdn2", "kda", "gdn", "deltanet", "gla", "attention", "attention_conv"} <= set(mqar_mixers())
    conv = mqar_config("attention_conv")
    assert conv.layer_kinds == ["A", "A"] and conv.attn_conv_size == 4 and mqar_config("attention").attn_conv_size == 0
    assert not conv.attn_rope and mqar_config("attention").attn_rope
    assert describe(conv) == "attention_conv" and describe(mqar_config("attention")) == "attention"
    with pytest.raises(ValueError, match="unknown MQAR mixer"):
        mqar_config("mamba")


def test_invalid_settings_fail_before_training():
    with pytest.raises(ValueError, match="must exceed seq_len"):
        train_mqar(mqar_config("gdn", vocab_size=64), seq_len=64, num_kv_pairs=4, steps=1)
    with pytest.raises(ValueError, match="4 \\* num_kv_pairs"):
        train_mqar(mqar_config("gdn", vocab_size=64), seq_len=16, num_kv_pairs=5, steps=1)


def test_schedule_warms_up_then_decays_to_zero():
    factors = [lr_factor(s, 10, 100, SCHEDULE_FLOOR["cosine"]) for s in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == 1.0 and factors[10] == 1.0
    assert all(a >= b for a, b in zip(factors[10:], factors[11:])) and factors[100] == pytest.approx(0.0)


def test_table_and_files(tmp_path):
    rows = [MQARResult("gdn2", 64, 4, 0.5, 10, 1e-3, 1.0, 100, 1.0, [2.0, 1.0]),
            MQARResult("attention", 64, 4, 1.0, 10, 1e-3, 0.1, 100, 1.0),
            MQARResult("gdn2", 128, 8, 0.25, 10, 1e-3, 1.0, 100, 1.0)]
    table = mqar_table(rows)
    assert table.splitlines()[0] == "| Model | T=64, P=4 | T=128, P=8 |"
    assert "| gdn2 | 50.0 | 25.0 |" in table and "| attention | 100.0 |  |" in table
    write_mqar(tmp_path, rows, {"steps": 10})
    saved = json.loads((tmp_path / "mqar.json").read_text())
    assert saved["results"][0]["accuracy"] == 0.5 and saved["losses"][0]["losses"] == [2.0, 1.0]


def test_mixed_precision_training_learns():
    """bfloat16 autocast is entered per step: one context around the loop would keep reusing
    its cached casts of the initial weights, and the loss would not move."""
    from gdn2.eval.mqar_train import mqar_config, train_mqar
    config = mqar_config("attention", vocab_size=256, hidden_size=64)
    result = train_mqar(config, seq_len=64, num_kv_pairs=8, steps=40, lr=3e-3, batch_size=32, num_test=16, amp=True)
    first, last = sum(result.losses[:8]) / 8, sum(result.losses[-8:]) / 8
    assert last < first - 0.1, (first, last)


def test_prefetch_gives_the_same_batches():
    import threading

    import gdn2.eval.mqar_train as mqar_train

    config = mqar_train.mqar_config("attention", vocab_size=64, hidden_size=32)
    run = lambda **kw: mqar_train.train_mqar(config, 32, 4, 4, 3e-3, 0, batch_size=4, num_test=8, **kw)  # noqa: E731
    plain = run()
    original, threads = mqar_train.mqar_batch, set()

    def spy(*a, **kw):
        threads.add(threading.current_thread() is threading.main_thread())
        return original(*a, **kw)

    mqar_train.mqar_batch = spy
    try:
        fetched = run(prefetch=2)
    finally:
        mqar_train.mqar_batch = original
    assert fetched.losses == plain.losses and fetched.accuracy == plain.accuracy
    assert threads == {True, False}  # validation / test on the main thread, training batches in the pool


def test_constant_schedule_holds_the_peak_and_unknown_names_fail():
    factors = [lr_factor(s, 10, 100, SCHEDULE_FLOOR["constant"]) for s in range(101)]
    assert factors[0] == pytest.approx(0.1) and all(f == 1.0 for f in factors[9:])
    with pytest.raises(ValueError, match="schedule must be one of"):
        train_mqar(mqar_config("gdn", vocab_size=128), seq_len=16, num_kv_pairs=2, steps=1, schedule="linear")


def test_training_loss_is_the_mean_over_answer_positions():
    """The training step's loss (answer positions found on the host, so a GPU step reads nothing
    back) is the mean cross-entropy at the positions the test scores."""
    import torch
    import torch.nn.functional as F
    from gdn2.eval.mqar import IGNORE_INDEX, mqar_batch
    from gdn2.eval.mqar_train import _answer_batch, _answer_logits, mqar_config
    from gdn2.models import GDN2ForCausalLM
    torch.manual_seed(0)
    model = GDN2ForCausalLM(mqar_config("gdn2", vocab_size=128, hidden_size=32, num_layers=1, num_heads=2,
                                        backend="chunk"))
    data = mqar_batch(4, 32, 4, 128, seed=1)
    batch = _answer_batch(data, pin=False)
    inputs, where, targets = batch
    assert where.numel() == 4 * 4
    mask = data.labels != IGNORE_INDEX                      # the positions the test scores
    masked = F.cross_entropy(model.lm_head(model.model(data.inputs)[mask]).float(), data.labels[mask])
    torch.testing.assert_close(F.cross_entropy(_answer_logits(model, batch), targets), masked)


def test_compiled_steps_give_the_eager_losses():
    # the compiled step (CUDA graphs on a GPU) must train the same model on the same batches: a
    # mixture's length groups go in as one graph, one model call a group
    mixture = [(16, 2, 3.0), (32, 4, 1.0)]
    run = lambda compile: train_mqar(mqar_config("gdn", **TINY), 16, 2, steps=3, batch_size=8, seed=0,  # noqa: E731
                                     num_test=16, mixture=mixture, compile=compile)
    eager, compiled = run(False), run(True)
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-4, abs=1e-5)
    assert compiled.accuracy == pytest.approx(eager.accuracy, abs=1 / 16)


def test_mixture_training_tests_every_setting():
    mixture = [(16, 2, 3.0), (32, 4, 1.0)]
    result = train_mqar(mqar_config("gdn2", **TINY), 16, 2, steps=3, batch_size=8, num_test=8, mixture=mixture,
                        test_settings=[(32, 4), (16, 2), (48, 8)])
    assert list(result.accuracies) == [(16, 2), (32, 4), (48, 8)]
    assert result.accuracy == result.accuracies[(16, 2)] and "accuracies" not in result.row()
    # not the single setting's batches: the mixture's longest sequences change the first loss
    single = train_mqar(mqar_config("gdn2", **TINY), 16, 2, steps=3, batch_size=8, num_test=8)
    assert single.losses[0] != result.losses[0] and list(single.accuracies) == [(16, 2)]
    with pytest.raises(ValueError, match="must exceed seq_len 64"):
        train_mqar(mqar_config("gdn2", **TINY), 16, 2, steps=1, mixture=[(64, 4, 1.0)])


def test_a_mixtures_length_groups_train_as_its_padded_batch():
    """Each length group of a mixture batch runs unpadded: the same loss and gradients as the
    padded batch (float64, so a dropped or misplaced answer shows far above rounding)."""
    import torch
    from gdn2.eval.mqar import mixture_rows, mqar_mixture_batch
    from gdn2.eval.mqar_train import _answer_batch, _answer_loss, mqar_config
    from gdn2.models import GDN2ForCausalLM
    mixture = [(16, 1, 3.0), (32, 2, 1.0), (48, 4, 1.0), (48, 8, 1.0)]
    data = mqar_mixture_batch(12, mixture, 128, seed=3)
    for mixer in ("gdn2", "attention_conv"):
        torch.manual_seed(0)
        model = GDN2ForCausalLM(mqar_config(mixer, vocab_size=128, hidden_size=32, backend="chunk")).double()

        def loss_and_grads(batch):
            model.zero_grad()
            loss = _answer_loss(model, batch)
            loss.backward()
            return [loss.detach()] + [p.grad.clone() for p in model.parameters()]

        grouped = _answer_batch(data, rows=mixture_rows(12, mixture))
        assert [tuple(x.shape) for x in grouped[0::3]] == [(6, 16), (2, 32), (4, 48)]
        assert sum(x.numel() for x in grouped[2::3]) == 6 * 1 + 2 * 2 + 2 * 4 + 2 * 8
        for a, b in zip(loss_and_grads(_answer_batch(data)), loss_and_grads(grouped)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
