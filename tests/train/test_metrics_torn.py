"""A run killed while writing its log leaves a torn last line; reading the log must still work."""

import json

import pytest

from gdn2.train.metrics import read_log


def test_torn_last_line_is_dropped_and_other_bad_lines_fail(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps({"step": 1}) + "\n" + json.dumps({"step": 2}) + "\n" + '{"step": 3, "lo')
    assert read_log(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1' + "\n" + json.dumps({"step": 2}) + "\n")
    with pytest.raises(json.JSONDecodeError):
        read_log(path)
