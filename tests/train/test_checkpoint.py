"""Checkpoints: complete contents, atomic writes that survive an interruption, pruning."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from gdn2.data import Tokenizer
from gdn2.train import TrainConfig, Trainer, checkpoint


def model_parameters(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_contents_load_with_auto_classes(make_config):
    config = make_config(steps=3)
    trainer = Trainer(config, verbose=False)
    trainer.run()
    trainer.close()
    path = checkpoint.resolve(trainer.run_dir)
    assert path.name == "step-0000003"
    loaded = AutoModelForCausalLM.from_pretrained(path)
    assert type(loaded).__name__ == "GDN2ForCausalLM"
    expected = model_parameters(trainer.model)
    for name, value in model_parameters(loaded).items():
        assert torch.equal(value, expected[name]), name
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()   # still tied
    tokenizer = Tokenizer.load(path)
    assert tokenizer.decode(tokenizer.encode("In the beginning")) == "In the beginning"
    assert loaded.config.vocab_size == tokenizer.vocab_size and loaded.config.eos_token_id == tokenizer.eos_id
    assert TrainConfig.from_dict(checkpoint.read_config(path)) == config
    state = checkpoint.read_trainer_state(path)
    assert state["step"] == 3 and state["data"]["batches"] == 3
    assert {"optimizer", "scheduler", "rng", "initial_eval"} <= state.keys()
    assert len(state["optimizer"]["state"]) == len(expected)   # keyed by parameter name, every one
    assert json.loads((path / "config.json").read_text())["model_type"] == "gdn2"


def test_interrupted_save_leaves_the_previous_checkpoint(make_config, monkeypatch):
    config = make_config(steps=6, save_every=3)
    trainer = Trainer(config, verbose=False)
    trainer.run(until=3)
    before = model_parameters(AutoModelForCausalLM.from_pretrained(checkpoint.resolve(trainer.run_dir)))

    write = checkpoint.write_files

    def write_then_fail(directory, *args):
        write(directory, *args)   # every file is there, but the process dies before the rename
        (directory / "model.safetensors").write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "write_files", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        trainer.run()
    trainer.close()
    assert trainer.step == 6
    parent = trainer.run_dir / checkpoint.CHECKPOINTS
    assert [p.name for p in parent.iterdir()] == ["step-0000003"]   # nothing new, no temporary left
    latest = checkpoint.resolve(trainer.run_dir)
    after = model_parameters(AutoModelForCausalLM.from_pretrained(latest))
    assert all(torch.equal(after[n], before[n]) for n in before)

    monkeypatch.undo()
    resumed = Trainer(config, resume=trainer.run_dir, verbose=False)
    assert resumed.step == 3
    assert resumed.run()["step"] == 6
    resumed.close()


def test_killed_save_is_ignored_and_cleaned(make_config):
    """A save killed before its rename leaves a temporary directory: never taken for a checkpoint,
    removed by the next run (which puts back a checkpoint that was moved aside to be replaced)."""
    config = make_config(steps=3)
    trainer = Trainer(config, verbose=False)
    trainer.run()
    trainer.close()
    parent = trainer.run_dir / checkpoint.CHECKPOINTS
    leftover = parent / ".tmp-step-0000009-x1y2"
    leftover.mkdir()
    (leftover / checkpoint.TRAIN_CONFIG).write_text("{")
    assert checkpoint.resolve(trainer.run_dir).name == "step-0000003"
    Trainer(config.replace(steps=4), resume=trainer.run_dir, verbose=False).close()
    assert not leftover.exists()

    aside = parent / ".old-step-0000003-z9"   # killed between moving step 3 aside and renaming its replacement
    aside.mkdir()
    (parent / "step-0000003").rename(aside / "step-0000003")
    checkpoint.remove_leftovers(parent)
    assert not aside.exists() and checkpoint.resolve(trainer.run_dir).name == "step-0000003"


def test_keep_last_and_replace(tmp_path):
    def writer(tag):
        def write(directory):
            (directory / checkpoint.TRAIN_CONFIG).write_text(json.dumps({"tag": tag}))
        return write

    for step in (1, 2, 3, 4):
        checkpoint.save(tmp_path, step, writer(step), keep_last=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-0000003", "step-0000004"]
    checkpoint.save(tmp_path, 4, writer("again"), keep_last=2)
    assert checkpoint.read_config(checkpoint.resolve(tmp_path)) == {"tag": "again"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000003", "step-0000004"]
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.resolve(tmp_path / "missing")
