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


def test_resume_takes_new_hyperparameters_and_keeps_the_model(make_config):
    """A resumed run's learning rate, weight decay and betas are its config's (the loaded optimizer
    and scheduler state carried the checkpoint's); its model cannot change."""
    config = make_config(steps=4, save_every=2)
    first, _ = run(config.replace(steps=2))
    resumed = Trainer(config.replace(lr=1e-4, min_lr=1e-5, weight_decay=0.5, beta2=0.9), resume=first.run_dir,
                      verbose=False)
    try:
        groups = {g["name"]: g for g in resumed.optimizer.param_groups}
        assert groups["decay"]["weight_decay"] == 0.5 and groups["no_decay"]["weight_decay"] == 0.0
        assert all(g["betas"] == (config.beta1, 0.9) and g["initial_lr"] == 1e-4 for g in groups.values())
        assert resumed.scheduler.base_lrs == [1e-4, 1e-4]
        factor = resumed.scheduler.lr_lambdas[0](resumed.scheduler.last_epoch)
        assert resumed.scheduler.get_last_lr() == [pytest.approx(1e-4 * factor)] * 2
        assert all(g["lr"] == pytest.approx(1e-4 * factor) for g in groups.values())
    finally:
        resumed.close()
    changed = dict(config.model_overrides, num_hidden_layers=3)
    with pytest.raises(ValueError, match="keeps its checkpoint's model_overrides"):
        Trainer(config.replace(model_overrides=changed), resume=first.run_dir, verbose=False)


def test_resume_refuses_checkpoints_that_are_not_its_past(make_config):
    """Resumed from step 2 of a run that went on to step 4, the step-4 checkpoint (another timeline:
    the log is cut back to step 2) is refused, or deleted with overwrite; a run resumed into another
    run's folder is refused likewise."""
    from gdn2.train.checkpoint import list_checkpoints
    config = make_config(steps=4, save_every=2, keep_last=3)
    first, _ = run(config)
    step2 = first.checkpoint_dir / "step-0000002"
    with pytest.raises(FileExistsError, match="not the past of .*step-0000004"):
        Trainer(config, resume=step2, verbose=False)
    run(config.replace(name="other", steps=2))
    with pytest.raises(FileExistsError, match=r"\(step-0000002\)"):
        Trainer(config.replace(name="other"), resume=step2, verbose=False)
    resumed, summary = run(config, resume=step2, overwrite=True)
    assert summary["step"] == 4
    assert [p.name for p in list_checkpoints(resumed.checkpoint_dir)] == ["step-0000002", "step-0000004"]
