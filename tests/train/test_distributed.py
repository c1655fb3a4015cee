"""Two processes (torchrun, gloo on CPU) under DDP and FSDP2 follow the single-process run with the
same global batch, and a checkpoint written by two processes resumes in one."""

import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from gdn2.train import Trainer, checkpoint
from gdn2.train.loop import LOG_FILE
from gdn2.train.metrics import read_log

STEPS = 4
FLAGS = ["--preset", "debug", "--steps", str(STEPS), "--batch-size", "4", "--grad-accum", "2", "--eval-every", "2",
         "--save-every", "2", "--eval-tokens", "192", "--sample-tokens", "0", "--quiet"]
# 192 held-out tokens are 3 rows of 64: two processes' shares round up to 2 rows each, and the
# fourth row must score nothing


def losses(run_dir, kind="train"):
    return [r["loss"] for r in read_log(run_dir / LOG_FILE) if r["kind"] == kind]


def final_parameters(run_dir):
    model = AutoModelForCausalLM.from_pretrained(checkpoint.resolve(run_dir))
    return {n: p.detach() for n, p in model.named_parameters()}


def assert_close_parameters(got, expected):
    for name, value in expected.items():   # Adam amplifies summation-order noise in tiny gradients a little
        error = (got[name] - value).norm() / value.norm().clamp_min(1e-12)
        assert error < 1e-3, (name, float(error))


@pytest.fixture(scope="module")
def single(make_module_config):
    """The single-process run: two micro-batches of two rows per step (of one row per process in the others)."""
    config = make_module_config("single")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(config, verbose=False)
        trainer.run()
        trainer.close()
    finally:
        torch.set_num_threads(threads)
    return trainer.run_dir


@pytest.fixture(scope="module")
def make_module_config(corpus, tokenizer_dir, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("distributed")

    def make(name, engine="ddp"):
        from gdn2.train.commands import resolve_config, train_parser
        args = train_parser().parse_args(FLAGS + ["--corpus", str(corpus), "--tokenizer", str(tokenizer_dir),
                                                  "--out-dir", str(out_dir), "--name", name, "--parallel", engine])
        return resolve_config(args)
    return make


@pytest.fixture(scope="module", params=["ddp", "fsdp"])
def two_processes(request, make_module_config):
    """A run of ``torchrun --nproc_per_node 2 -m gdn2.cli train --parallel ENGINE``."""
    engine = request.param
    config = make_module_config(f"two-{engine}", engine)
    argv = FLAGS + ["--corpus", config.corpus, "--tokenizer", config.tokenizer, "--out-dir", config.out_dir,
                    "--name", config.name, "--parallel", engine]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "gdn2.cli", "train", *argv]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("held-out perplexity") == 1   # only the first process reports
    return engine, config


def test_two_processes_match_one(two_processes, single):
    _, config = two_processes
    run_dir = single.parent / config.name
    assert losses(run_dir) == pytest.approx(losses(single), rel=1e-5, abs=1e-6)
    assert losses(run_dir, "eval") == pytest.approx(losses(single, "eval"), rel=1e-5, abs=1e-6)
    tokens = lambda d: [r["tokens"] for r in read_log(d / LOG_FILE) if r["kind"] == "eval"]  # noqa: E731
    assert tokens(run_dir) == tokens(single) and tokens(single)[0] == 192
    assert_close_parameters(final_parameters(run_dir), final_parameters(single))


def test_two_process_checkpoint_resumes_in_one(two_processes, single):
    engine, config = two_processes
    run_dir = single.parent / config.name
    midway = run_dir / checkpoint.CHECKPOINTS / checkpoint.checkpoint_name(STEPS // 2)
    assert checkpoint.read_trainer_state(midway)["world_size"] == 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(config.replace(name=f"resumed-{engine}"), resume=midway, verbose=False)
        trainer.run()
        trainer.close()
    finally:
        torch.set_num_threads(threads)
    assert trainer.micro_batch == 2 and trainer.step == STEPS
    assert losses(trainer.run_dir) == pytest.approx(losses(single)[STEPS // 2:], rel=1e-5, abs=1e-6)
    assert_close_parameters(final_parameters(trainer.run_dir), final_parameters(single))
