"""scripts/kept_results.py: a warm machine's records come back only onto the file its last call
started from."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("kept_results", ROOT / "scripts" / "kept_results.py")
kept_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kept_results)


def test_records_come_back_only_onto_the_file_the_last_call_started_from(tmp_path):
    home, kept = tmp_path / "results", tmp_path / "kept"
    home.mkdir()
    (home / "mqar.jsonl").write_text('{"a": 1}\n')
    kept_results.take(home, kept)                        # first call: nothing kept yet
    assert (home / "mqar.jsonl").read_text() == '{"a": 1}\n'
    (home / "mqar.jsonl").write_text('{"a": 1}\n{"b": 2}\n{"c"')   # appended, the last line half written
    kept_results.save(home, kept)
    assert (kept / "mqar.jsonl").read_text() == '{"a": 1}\n{"b": 2}\n'

    (home / "mqar.jsonl").write_text('{"a": 1}\n')        # the next call's fresh copy of the checkout
    kept_results.take(home, kept)
    assert (home / "mqar.jsonl").read_text() == '{"a": 1}\n{"b": 2}\n'

    (home / "mqar.jsonl").write_text('{"a": 1}\n{"b": 2}\n{"d": 4}\n')   # the second call appends
    kept_results.save(home, kept)
    (home / "mqar.jsonl").write_text('{"a": 1}\n')        # a third call, still nothing copied home
    kept_results.take(home, kept)
    assert (home / "mqar.jsonl").read_text() == '{"a": 1}\n{"b": 2}\n{"d": 4}\n'

    (home / "mqar.jsonl").write_text('{"z": 0}\n')        # changed at home: left alone
    kept_results.take(home, kept)
    assert (home / "mqar.jsonl").read_text() == '{"z": 0}\n'
    assert not (home / "needle.jsonl").exists()


def test_usage_errors_exit_2(capsys):
    assert kept_results.main(["keep", "a", "b"]) == 2
    assert "usage" in capsys.readouterr().err


def test_save_writes_the_complete_lines_to_a_copy_too(tmp_path):
    home, kept, out = tmp_path / "results", tmp_path / "kept", tmp_path / "out"
    home.mkdir()
    (home / "mqar.jsonl").write_text('{"a": 1}\n{"b"')
    assert kept_results.main(["save", str(home), str(kept), str(out)]) == 0
    assert (out / "mqar.jsonl").read_text() == (kept / "mqar.jsonl").read_text() == '{"a": 1}\n'
    assert kept_results.main(["take", str(home), str(kept), str(out)]) == 2   # take has no copy
