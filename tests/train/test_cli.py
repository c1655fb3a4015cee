"""``gdn2 train`` and ``gdn2 generate``: a whole run, sampling, and errors as one clear line."""

import pytest

from gdn2.cli import main
from gdn2.train import TrainConfig
from gdn2.train.commands import resolve_config, train_parser


def fails(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in err and "Traceback" not in err, err


def small_run(corpus, tokenizer_dir, out_dir, *extra):
    return ["train", "--preset", "debug", "--corpus", str(corpus), "--tokenizer", str(tokenizer_dir),
            "--out-dir", str(out_dir), "--steps", "4", "--eval-every", "2", "--save-every", "2",
            "--eval-tokens", "512", "--sample-tokens", "6", "--quiet", *extra]


def test_train_then_generate(corpus, tokenizer_dir, tmp_path, capsys):
    assert main(small_run(corpus, tokenizer_dir, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "held-out perplexity" in out and "before ->" in out and "sample: 'And God said" in out
    run_dir = tmp_path / "debug"
    assert (run_dir / "log.jsonl").is_file()

    assert main(["generate", "--checkpoint", str(run_dir), "--prompt", "In the beginning", "--max-new-tokens", "8",
                 "--num-samples", "2", "--top-p", "0.9"]) == 0
    samples = capsys.readouterr().out.split("\n---\n")
    assert len(samples) == 2 and all(s.startswith("In the beginning") for s in samples)
    assert main(["generate", "--checkpoint", str(run_dir), "--temperature", "0", "--max-new-tokens", "4"]) == 0

    fails(capsys, small_run(corpus, tokenizer_dir, tmp_path), "already holds checkpoints")
    assert main(small_run(corpus, tokenizer_dir, tmp_path, "--overwrite", "--steps", "2")) == 0
    assert main(["train", "--resume", str(run_dir), "--steps", "3", "--quiet"]) == 0   # extend a finished run
    assert "3 steps" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["train", "--preset", "nope"], "unknown preset 'nope'"),
    (["train", "--model", "nope"], "unknown model preset 'nope'"),
    (["train", "--corpus", "/no/such/file.jsonl"], "corpus '/no/such/file.jsonl' is neither"),
    (["train", "--tokenizer", "/no/such/tokenizer.json"], "no tokenizer at /no/such/tokenizer.json"),
    (["train", "--resume", "/no/such/run"], "no checkpoint or run directory at /no/such/run"),
    (["train", "--steps", "0"], "steps must be a positive integer"),
    (["train", "--batch-size", "6", "--grad-accum", "4"], "grad_accum = 4 must divide batch_size = 6"),
    (["train", "--model-overrides", "vocab_size=10"], "vocab_size comes from the tokenizer"),
    (["train", "--model-overrides", "pattern=X"], "unknown layer letter"),
    (["train", "--parallel", "tp"], "invalid choice"),
    (["generate", "--checkpoint", "/no/such/run"], "no checkpoint or run directory at /no/such/run"),
    (["generate", "--checkpoint", "/tmp", "--top-p", "0"], "0 < --top-p <= 1"),
    (["generate", "--checkpoint", "/tmp", "--device", "cuda:99"], "device 'cuda:99'"),
    (["train", "--model-overrides", "hiden_size=8"], "unknown field(s) ['hiden_size']"),
    (["train", "--lr", "0", "--min-lr", "0"], "lr must be > 0"),
])
def test_errors_are_messages(capsys, tmp_path, argv, message):
    if argv[0] == "train":
        argv = argv + ["--out-dir", str(tmp_path)]
    fails(capsys, argv, message)


def test_resume_excludes_preset(capsys, tmp_path):
    fails(capsys, ["train", "--resume", str(tmp_path), "--preset", "debug"], "exclude each other")


def test_flags_override_the_preset():
    args = train_parser().parse_args(["--preset", "debug", "--seq-len", "32", "--lr", "0.01", "--no-autocast",
                                      "--model-overrides", "pattern=LS", "num_hidden_layers=4"])
    config = resolve_config(args)
    expected = TrainConfig.from_preset("debug")
    assert (config.seq_len, config.lr, config.autocast, config.steps) == (32, 0.01, False, expected.steps)
    assert config.model_overrides == {**expected.model_overrides, "pattern": "LS", "num_hidden_layers": 4}
    assert resolve_config(train_parser().parse_args([])) == TrainConfig()


def test_bench_help(capsys):
    assert main(["bench", "--help"]) == 0 and "gdn2 bench cpu" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:   # the benchmark's own options
        main(["bench", "cpu", "--help"])
    assert exit_info.value.code == 0 and "--repeats" in capsys.readouterr().out
    assert main(["bench"]) == 2


def test_bench_and_memory_still_dispatch(capsys):
    assert main(["memory", "--preset", "tiny", "--no-plot"]) == 0
    assert "inference state of tiny" in capsys.readouterr().out


def test_resume_continues_in_its_own_folder(corpus, tokenizer_dir, tmp_path, monkeypatch):
    """A run started with a relative --out-dir and resumed from another working directory goes on in
    its own folder (its config's out_dir is relative to where it started)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert main(small_run(corpus, tokenizer_dir, "runs", "--steps", "2")) == 0
    monkeypatch.chdir(tmp_path / "b")
    assert main(["train", "--resume", str(tmp_path / "a" / "runs" / "debug"), "--steps", "4", "--quiet"]) == 0
    assert (tmp_path / "a" / "runs" / "debug" / "checkpoints" / "step-0000004").is_dir()
    assert not (tmp_path / "b" / "runs").exists()
