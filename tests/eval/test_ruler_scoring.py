"""RULER scoring: string match, per-(task, length) accuracy, markdown table and JSON."""

import json

import pytest

from gdn2.eval.scoring import ruler_table, score_ruler, string_match_all, write_ruler_json


def sample(task, length, answer):
    return {"task": task, "context_length": length, "input": "... is", "answers": [answer]}


SAMPLES = [
    sample("MK-NIAH-1", 2048, "1234567"),
    sample("S-NIAH-1", 2048, "7654321"),
    sample("S-NIAH-1", 1024, "1111111"),
    sample("S-NIAH-1", 1024, "2222222"),
    sample("S-NIAH-3", 1024, "b74f0c20-743f-4c2b-95af-ba5696833102"),
]
PREDICTIONS = [" 1234567.", " 7654320.", "1111111", " none", " B74F0C20-743F-4C2B-95AF-BA5696833102\n"]


def test_string_match_all():
    assert string_match_all(" 1234567.", ["1234567"]) == 1.0
    assert string_match_all(" 123456", ["1234567"]) == 0.0
    assert string_match_all("", ["1234567"]) == 0.0
    assert string_match_all("The ABC-def", ["abc-DEF"]) == 1.0
    assert string_match_all("1 and 3", ["1", "2", "3", "4"]) == 0.5
    with pytest.raises(ValueError):
        string_match_all("x", [])


def test_score_ruler_groups_and_orders():
    rows = score_ruler(PREDICTIONS, SAMPLES)
    assert rows == [
        {"task": "S-NIAH-1", "context_length": 1024, "accuracy": 50.0, "num_samples": 2},
        {"task": "S-NIAH-1", "context_length": 2048, "accuracy": 0.0, "num_samples": 1},
        {"task": "S-NIAH-3", "context_length": 1024, "accuracy": 100.0, "num_samples": 1},
        {"task": "MK-NIAH-1", "context_length": 2048, "accuracy": 100.0, "num_samples": 1},
    ]
    with pytest.raises(ValueError, match="predictions"):
        score_ruler(PREDICTIONS[:-1], SAMPLES)


def test_unknown_tasks_sort_after_known_ones():
    rows = score_ruler(["a", "a", "a"], [sample("zeta", 512, "a"), sample("alpha", 512, "b"),
                                         sample("S-NIAH-2", 512, "a")])
    assert [r["task"] for r in rows] == ["S-NIAH-2", "alpha", "zeta"]


def test_markdown_table():
    table = ruler_table(score_ruler(PREDICTIONS, SAMPLES))
    assert table == (
        "| Task | 1K | 2K |\n"
        "|---|---:|---:|\n"
        "| S-NIAH-1 | 50.0 | 0.0 |\n"
        "| S-NIAH-3 | 100.0 |  |\n"
        "| MK-NIAH-1 |  | 100.0 |\n"
        "| Average | 75.0 | 50.0 |\n")
    single = ruler_table([{"task": "S-NIAH-1", "context_length": 1000, "accuracy": 12.345, "num_samples": 3}], 2)
    assert single == "| Task | 1000 |\n|---|---:|\n| S-NIAH-1 | 12.35 |\n"


def test_write_json(tmp_path):
    scores = score_ruler(PREDICTIONS, SAMPLES)
    path = tmp_path / "ruler.json"
    write_ruler_json(path, scores, SAMPLES, PREDICTIONS, meta={"checkpoint": "tiny", "seed": 42})
    data = json.loads(path.read_text())
    assert data["meta"] == {"checkpoint": "tiny", "seed": 42}
    assert data["scores"] == scores
    assert [s["score"] for s in data["samples"]] == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert data["samples"][0]["prediction"] == " 1234567." and "input" not in data["samples"][0]
    write_ruler_json(path, scores)
    assert json.loads(path.read_text()) == {"meta": {}, "scores": scores, "samples": []}
    with pytest.raises(ValueError):
        write_ruler_json(path, scores, predictions=PREDICTIONS)
