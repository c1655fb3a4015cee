"""CPU smoke tests of the training-throughput benchmark (gdn2/bench/throughput.py): the tiny size,
the chunk backend, one warm-up and one timed step per cell."""

import importlib.util
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tqdm")

from gdn2.bench import throughput as tp  # noqa: E402

SHAPES = [(2, 32), (1, 64)]
ROOT = Path(__file__).resolve().parents[2]


def _run(**kwargs) -> tp.Report:
    options = dict(size="tiny", shapes=SHAPES, device="cpu", steps=1, warmup=1, backend="chunk", progress=False,
                   log=lambda line: None)
    return tp.run(**{**options, **kwargs})


@pytest.fixture(scope="module")
def report():
    return _run()


def test_every_cell_gives_a_throughput(report):
    rows = tp.cell_sets()
    assert len(rows) == 7 and ("transformer", None) in rows
    assert [(c.kind, c.mixer, c.batch, c.seq_len) for c in report.cells] == [
        (k, m, B, T) for k, m in rows for B, T in SHAPES]
    for c in report.cells:
        assert c.status == "ok", (c.label, c.error)
        assert c.tokens_per_s > 0 and c.step_ms > 0 and len(c.step_times_ms) == 1
        assert c.tokens_per_s == pytest.approx(c.batch * c.seq_len / (c.step_ms / 1e3))
    assert set(report.parameters) == {tp.label(k, m) for k, m in rows}
    assert report.meta["size"] == "tiny" and report.meta["gpu"].startswith("CPU")


def test_markdown_has_every_cell(report):
    text = tp.format_markdown(report)
    assert "| model | 2 x 32 | 1 x 64 |" in text
    lines = text.splitlines()
    for c in report.cells:
        row = next(line for line in lines if line.startswith(f"| {c.label} ("))
        assert f"{c.tokens_per_s / 1e3:.1f} ({c.step_ms:.0f} ms)" in row


def test_json_round_trip_and_files_are_never_overwritten(report, tmp_path):
    assert tp.Report.from_json(report.to_json()) == report
    first = tp.write_results(report, tmp_path, log=lambda line: None)
    contents = {p: p.read_bytes() for p in first}
    second = tp.write_results(report, tmp_path, log=lambda line: None)
    assert not set(first) & set(second)
    assert all(p.read_bytes() == b for p, b in contents.items())
    assert first[0].name.endswith("-train-throughput.md") and first[0].name.startswith(report.meta["date"])
    assert tp.Report.from_json(first[1].read_text()) == report
    if importlib.util.find_spec("matplotlib") is not None:
        assert len(first) == 3 and first[2].suffix == ".png"


def test_budget_zero_skips_every_cell():
    skipped = _run(kinds=["hybrid", "transformer"], mixers=["gdn"], budget_seconds=0)
    assert len(skipped.cells) == 4
    assert all(c.status == tp.SKIPPED and c.tokens_per_s is None for c in skipped.cells)
    assert tp.format_markdown(skipped).count("skipped (budget)") == 4


def test_budget_counts_the_slowest_cell(monkeypatch):
    def fake(config, B, T, device, steps, warmup, seed, kind, mixer):
        return tp.Cell(kind, mixer, B, T, status="ok", step_ms=1.0, tokens_per_s=1e3 * B * T, wall_s=10.0)

    monkeypatch.setattr(tp, "time_training", fake)
    cells = _run(kinds=["transformer"], budget_seconds=5).cells   # after one 10 s cell, no room for another
    assert [c.status for c in cells] == ["ok", tp.SKIPPED]


@pytest.mark.parametrize("error, status", [(torch.cuda.OutOfMemoryError("out of memory"), "OOM"),
                                           (ValueError("kernel failed"), "error")])
def test_failures_become_cells(monkeypatch, error, status):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(tp, "_train_steps", fail)
    cell = tp.time_training(tp.model_config("tiny", "hybrid", "gdn2"), 2, 32, device="cpu", kind="hybrid",
                            mixer="gdn2")
    assert cell.status == status and cell.tokens_per_s is None
    report = tp.Report({**_run(budget_seconds=0, kinds=["hybrid"], mixers=["gdn2"]).meta}, {}, [cell])
    assert status in tp.format_markdown(report)


def test_340m_sizes_without_allocating():
    counts = {tp.label(k, m): tp.count_parameters(tp.model_config("340m", k, m)) for k, m in tp.cell_sets()}
    # tied 32000 x 1024 embedding; the per-channel erase and write gates make recurrent gdn2 the largest
    assert 330e6 < counts["transformer"] < 350e6
    assert 340e6 < counts["hybrid gdn2"] < 400e6
    assert all(300e6 < n < 450e6 for n in counts.values()), counts


def test_cli_refuses_340m_without_cuda(capsys):
    spec = importlib.util.spec_from_file_location("train_throughput", ROOT / "benchmarks" / "train_throughput.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--size", "340m", "--device", "cpu"])
    assert "needs a CUDA GPU" in str(exit_info.value.code)
    assert cli._shapes("8x2048,1x16384") == [(8, 2048), (1, 16384)]
    with pytest.raises(SystemExit):
        cli.main(["--shapes", "8by2048"])
