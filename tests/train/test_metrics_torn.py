"""A run killed while writing its log leaves a torn last line; reading the log must still work."""

import json

import pytest

from gdn2.train.metrics import append_records, read_log


def test_torn_last_line_is_dropped_and_other_bad_lines_fail(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps({"step": 1}) + "\n" + json.dumps({"step": 2}) + "\n" + '{"step": 3, "lo')
    assert read_log(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1' + "\n" + json.dumps({"step": 2}) + "\n")
    with pytest.raises(json.JSONDecodeError):
        read_log(path)


def test_appending_after_a_torn_line_cuts_it_and_keeps_every_whole_record(tmp_path):
    path = tmp_path / "results.jsonl"
    append_records(path, [{"cell": 1}])                      # a new file
    with open(path, "a") as f:
        f.write('{"cell": 2, "acc')                           # a writer killed mid-line
    append_records(path, [{"cell": 3}, {"cell": 4}])
    assert read_log(path) == [{"cell": 1}, {"cell": 3}, {"cell": 4}]
    assert path.read_text().endswith("\n")
    append_records(path, [])                                 # nothing to add: nothing changes
    assert read_log(path) == [{"cell": 1}, {"cell": 3}, {"cell": 4}]


def test_processes_appending_at_once_never_interleave_their_lines(tmp_path):
    import multiprocessing

    path = tmp_path / "results.jsonl"
    big = "x" * 20000    # records past the 8 KiB of a buffered file's single write
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    procs = [ctx.Process(target=_append_many, args=(path, p, big)) for p in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = read_log(path)
    assert sorted((r["p"], r["i"]) for r in records) == [(p, i) for p in range(4) for i in range(10)]
    assert all(r["pad"] == big for r in records)


def _append_many(path, p, big):
    for i in range(10):
        append_records(path, [{"p": p, "i": i, "pad": big}])
