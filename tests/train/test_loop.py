"""The training loop on a tiny model: the loss falls, accumulation is exact, resume is exact."""

import importlib.util
import math

import pytest
import torch

from gdn2.train import Trainer, train
from gdn2.train.loop import LOG_FILE, split_rows
from gdn2.train.metrics import read_log


def parameters(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}


def run(config, **kwargs):
    trainer = Trainer(config, verbose=False, **kwargs)
    try:
        summary = trainer.run()
        return trainer, summary
    finally:
        trainer.close()


def test_loss_decreases(make_config):
    config = make_config(steps=30, eval_every=15, save_every=30, lr=1e-2, sample_tokens=8)
    summary = train(config, verbose=False)
    first, last = summary["initial_eval"], summary["final_eval"]
    assert last["loss"] < first["loss"] - 1.0, (first, last)   # from ~ln(384) = 5.95
    assert math.isclose(last["ppl"], math.exp(last["loss"]))
    log = read_log(summary["checkpoint"].parent.parent / LOG_FILE)
    assert [r["step"] for r in log if r["kind"] == "train"] == list(range(1, 31))
    assert [r["step"] for r in log if r["kind"] == "eval"] == [0, 15, 30]
    train_losses = [r["loss"] for r in log if r["kind"] == "train"]
    assert sum(train_losses[-5:]) / 5 < train_losses[0] - 1.0
    assert all(r["tokens_per_s"] > 0 and r["lr"] > 0 for r in log if r["kind"] == "train")
    assert summary["sample"].startswith(config.sample_prompt)
    if importlib.util.find_spec("matplotlib") is not None:
        assert summary["plot"].is_file() and summary["plot"].stat().st_size > 1000


def test_gradient_accumulation_is_exact(make_config):
    """Four rows in one micro-batch or in four of one row: the same mean loss and the same update."""
    whole, _ = run(make_config(name="whole", steps=3, batch_size=4))
    split, _ = run(make_config(name="split", steps=3, batch_size=4, grad_accum=4))
    losses = [[r["loss"] for r in read_log(t.run_dir / LOG_FILE) if r["kind"] == "train"] for t in (whole, split)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for name, value in parameters(whole).items():
        torch.testing.assert_close(parameters(split)[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_resume_is_exact(make_config):
    """A run stopped after the step-3 checkpoint and resumed ends with the same parameters (bitwise)
    and the same log as a run that never stopped."""
    config = make_config(steps=6, save_every=3, grad_accum=2)
    straight, _ = run(config.replace(name="straight"))

    interrupted = Trainer(config.replace(name="resumed"), verbose=False)
    interrupted.run(until=3)
    interrupted.close()
    del interrupted
    resumed, summary = run(config.replace(name="resumed"), resume=straight.run_dir.parent / "resumed")
    assert resumed.resumed_from.name == "step-0000003" and summary["step"] == 6

    expected, got = parameters(straight), parameters(resumed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name

    def strip(log):   # timings differ
        return [{k: v for k, v in r.items() if k not in ("time", "tokens_per_s")} for r in log]

    assert strip(read_log(resumed.run_dir / LOG_FILE)) == strip(read_log(straight.run_dir / LOG_FILE))


def test_split_rows():
    batch = {"input_ids": torch.arange(12).view(3, 4), "labels": torch.arange(12).view(3, 4),
             "cu_seqlens": torch.tensor([0, 2, 4, 8, 9, 12], dtype=torch.int32)}
    chunks = split_rows(batch, 2)
    assert [c[0].shape[0] for c in chunks] == [2, 1]
    assert chunks[0][2].tolist() == [0, 2, 4, 8] and chunks[1][2].tolist() == [0, 1, 4]
    assert torch.equal(torch.cat([c[0] for c in chunks]), batch["input_ids"])
