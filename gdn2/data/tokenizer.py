"""A byte-level BPE tokenizer: trained in seconds with ``tokenizers``, or any ``tokenizer.json``.

Byte-level means every string, whatever its characters, encodes to ids that decode back to the
same string: there is no unknown token and no normalisation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

from ._deps import require

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
# end-of-text names of well-known tokenizer.json files, tried in order when loading one
_EOS_CANDIDATES = (EOS_TOKEN, "</s>", "<|end_of_text|>", "<eos>", "<|im_end|>", "[SEP]")
_PAD_CANDIDATES = (PAD_TOKEN, "<pad>", "[PAD]", "<|finetune_right_pad_id|>")


def _tokenizers():
    return require("tokenizers", "data", "the tokenizer")


class Tokenizer:
    """Text to token ids and back, with an end-of-text id that also separates documents.

    >>> tok = Tokenizer.train(["the cat sat on the mat"] * 10, vocab_size=300)
    >>> tok.decode(tok.encode("the cat")), tok.eos_id, tok.pad_id
    ('the cat', 0, 1)

    Args:
        tokenizer: a ``tokenizers.Tokenizer``.
        eos_token: the end-of-text token (found among well-known names when not given).
        pad_token: the padding token (the end-of-text token when the vocabulary has none).
    """

    def __init__(self, tokenizer, eos_token: Optional[str] = None, pad_token: Optional[str] = None):
        self.backend = tokenizer
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        self.eos_token = eos_token or next((t for t in _EOS_CANDIDATES if t in vocab), None)
        if self.eos_token not in vocab:
            raise ValueError(f"the tokenizer has no end-of-text token {eos_token or _EOS_CANDIDATES}: "
                             f"name the one it has with eos_token=")
        self.pad_token = pad_token or next((t for t in _PAD_CANDIDATES if t in vocab), self.eos_token)
        if self.pad_token not in vocab:
            raise ValueError(f"the tokenizer has no padding token {self.pad_token!r}")
        self.eos_id = vocab[self.eos_token]
        self.pad_id = vocab[self.pad_token]

    @classmethod
    def train(cls, documents: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2) -> "Tokenizer":
        """A byte-level BPE learned from ``documents``: ids 0 and 1 are ``<|endoftext|>`` and
        ``<|pad|>``, then the 256 bytes, then the merges, ``vocab_size`` ids in all (fewer when the
        text has fewer pairs seen ``min_frequency`` times)."""
        if vocab_size < 258:
            raise ValueError(f"vocab_size must be at least 258 (2 special tokens and 256 bytes), got {vocab_size}")
        tk = _tokenizers()
        tokenizer = tk.Tokenizer(tk.models.BPE())
        tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                         special_tokens=[EOS_TOKEN, PAD_TOKEN], show_progress=False,
                                         initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
        tokenizer.train_from_iterator(documents, trainer=trainer)
        return cls(tokenizer, EOS_TOKEN, PAD_TOKEN)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], eos_token: Optional[str] = None,
             pad_token: Optional[str] = None) -> "Tokenizer":
        """A tokenizer from a ``tokenizer.json`` file, or from a directory holding one (such as a
        checkpoint written with ``save``, whose ``tokenizer_config.json`` names its special tokens)."""
        path = Path(path)
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no tokenizer at {file}")
        config = file.parent / CONFIG_FILE
        if config.is_file():
            names = json.loads(config.read_text(encoding="utf-8"))
            eos_token = eos_token or _token_name(names.get("eos_token"))
            pad_token = pad_token or _token_name(names.get("pad_token"))
        return cls(_tokenizers().Tokenizer.from_file(str(file)), eos_token, pad_token)

    def save(self, directory: Union[str, os.PathLike]) -> Path:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` (special tokens, readable by
        ``transformers.PreTrainedTokenizerFast``) into ``directory``; returns the first."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        file = directory / TOKENIZER_FILE
        self.backend.save(str(file))
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": self.eos_token,
                  "bos_token": self.eos_token, "pad_token": self.pad_token}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return file

    @property
    def vocab_size(self) -> int:
        """The number of ids, special tokens included (ids are ``0 .. vocab_size - 1``)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> List[int]:
        try:
            return self.backend.encode(text, add_special_tokens=False).ids
        except TypeError:   # the backend's message names neither the argument nor the cause
            raise _text_error(text) from None

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        """``encode`` of each text, in parallel threads."""
        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)  # fast: no offsets
        return [e.ids for e in encode(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``; special tokens are written out (``<|endoftext|>``)."""
        ids = [int(i) for i in ids]
        # checked once, by the extremes: the backend decodes a too-large id as "" and overflows on a
        # negative one
        n = self.vocab_size
        if ids and (min(ids) < 0 or max(ids) >= n):
            bad = [i for i in ids if not 0 <= i < n][:5]
            raise ValueError(f"ids must lie in 0 .. {n - 1} (the vocabulary), got {bad}")
        return self.backend.decode(ids, skip_special_tokens=False)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, eos={self.eos_token!r}, pad={self.pad_token!r})"


def _text_error(text) -> Exception:
    if not isinstance(text, str):
        return TypeError(f"text must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:   # a lone surrogate, say
        return ValueError(f"text must be valid Unicode: {err}")
    return TypeError(f"text could not be encoded: {text[:40]!r}")


def _token_name(token) -> Optional[str]:
    if isinstance(token, dict):  # transformers writes AddedToken as {"content": ...}
        return token.get("content")
    return token
