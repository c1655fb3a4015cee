"""Documents packed into fixed-length rows, with ``cu_seqlens`` marking where each one starts.

The token stream of an epoch is the documents in a shuffled order, each one wrapped as
``<|endoftext|> doc <|endoftext|>`` (the leading one gives the first token something to be
predicted from, the trailing one teaches the model to end). The stream is cut into rows of
``seq_len`` tokens; a document longer than what is left of a row continues at the start of the
next one. ``cu_seqlens`` has a boundary at every document start and at every row start, so the
model's recurrent state and attention restart there and nothing flows between documents.

Exact resumption: the order of epoch ``e`` is a pure function of ``(seed, e)``, so the position
(epoch, document, token offset) is the whole state of the stream.
"""

from __future__ import annotations

import itertools
import random
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch

from .corpus import _check_reiterable

IGNORE_INDEX = -100
_STATE_VERSION = 1
_ENCODE_CHUNK = 256  # documents tokenized together (tokenizers runs a batch in parallel threads)


class PackedDataset:
    """An iterator of packed batches, infinite (``epochs=None``) or over a number of epochs.

    Each batch is a dict:

    - ``input_ids``: ``[B, T]`` int64 token ids (``pad_id`` after the end of the last epoch).
    - ``labels``: ``[B, T]`` int64, the target of each position, already shifted:
      ``labels[b, t]`` is the token after ``input_ids[b, t]`` in the same document (at the end
      of a row, the first token of the next row's continuation), and ``-100`` where the next
      token belongs to another document or the position is padding. Train with
      ``F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)``.
    - ``cu_seqlens``: ``[N + 1]`` int32 offsets into the ``B * T`` flattened tokens: 0, every
      document start and every row start, and ``B * T``. Flatten the batch to ``[1, B * T]``
      to pass it to a model with ``cu_seqlens``.

    Every token of an epoch is an input exactly once. ``state_dict()`` after a batch, given to
    ``load_state_dict`` of a dataset built the same way, continues with the same batches.

    Args:
        documents: a list of strings (shuffled whole each epoch) or a re-iterable source such as
            ``gdn2.data.Documents`` (streamed in order, or through a shuffle buffer).
        tokenizer: has ``encode`` (or ``encode_batch``), ``eos_id`` and ``pad_id``.
        seq_len: T, tokens per row.
        batch_size: B, rows per batch (per process when ``world_size > 1``).
        seed: the shuffling seed.
        shuffle: shuffle the documents each epoch (a stream through a buffer of
            ``shuffle_buffer`` documents).
        epochs: stop after this many epochs (the last batch padded); None: never stop.
        drop_last: with ``epochs``, drop a last batch that would need padding.
        add_bos, add_eos: wrap each document in the end-of-text token as described above.
        rank, world_size: this process's share of a global batch of ``batch_size * world_size``
            rows (rows ``rank * B .. (rank + 1) * B - 1``); every process holds the same state.
    """

    def __init__(self, documents: Iterable[str], tokenizer, seq_len: int, batch_size: int, *,
                 seed: int = 0, shuffle: bool = True, epochs: Optional[int] = None, drop_last: bool = False,
                 add_bos: bool = True, add_eos: bool = True, shuffle_buffer: int = 10_000,
                 rank: int = 0, world_size: int = 1):
        if seq_len < 1 or batch_size < 1:
            raise ValueError(f"seq_len and batch_size must be positive, got {seq_len} and {batch_size}")
        if epochs is not None and epochs < 1:
            raise ValueError(f"epochs must be positive or None, got {epochs}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        _check_reiterable(documents)
        self._sequence = isinstance(documents, Sequence)
        self.documents = documents
        self.tokenizer = tokenizer
        self.seq_len, self.batch_size = seq_len, batch_size
        self.seed, self.shuffle, self.epochs, self.drop_last = seed, shuffle, epochs, drop_last
        self.add_bos, self.add_eos = add_bos, add_eos
        self.shuffle_buffer = shuffle_buffer
        self.rank, self.world_size = rank, world_size
        self.eos_id = tokenizer.eos_id
        self.pad_id = getattr(tokenizer, "pad_id", tokenizer.eos_id)
        self._tokens: Optional[torch.Tensor] = None   # list sources: all documents, tokenized once
        self._offsets: Optional[torch.Tensor] = None
        self._set_position(epoch=0, document=0, offset=0, done=False, batches=0)

    # The stream of documents

    def _order(self, epoch: int) -> List[int]:
        """The positions of a list source in the order of this epoch."""
        n = len(self.documents)
        if not self.shuffle:
            return list(range(n))
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        return torch.randperm(n, generator=g).tolist()

    def _texts(self, epoch: int) -> Iterator[str]:
        """The documents of a streamed source in the order of this epoch."""
        stream = iter(self.documents)
        if not self.shuffle or self.shuffle_buffer <= 1:
            yield from stream
            return
        rng = random.Random(_epoch_seed(self.seed, epoch))
        buffer = list(itertools.islice(stream, self.shuffle_buffer))
        for text in stream:
            i = rng.randrange(len(buffer))
            yield buffer[i]
            buffer[i] = text
        rng.shuffle(buffer)
        yield from buffer

    def _wrap(self, ids: Sequence[int]) -> torch.Tensor:
        return torch.tensor([self.eos_id] * self.add_bos + list(ids) + [self.eos_id] * self.add_eos,
                            dtype=torch.long)

    def _encode(self, texts: List[str]) -> List[List[int]]:
        if hasattr(self.tokenizer, "encode_batch"):
            return self.tokenizer.encode_batch(texts)
        return [self.tokenizer.encode(t) for t in texts]

    def _segments(self, epoch: int, start: int) -> Iterator[Tuple[int, torch.Tensor]]:
        """(position in the epoch's order, wrapped token ids) of each document from ``start`` on."""
        if self._sequence:
            if self._tokens is None:
                self._tokenize_all()
            order = self._order(epoch)
            for position in range(start, len(order)):
                i = order[position]
                yield position, self._tokens[self._offsets[i]:self._offsets[i + 1]]
            return
        texts = itertools.islice(self._texts(epoch), start, None)  # resuming reads, not tokenizes, the skipped
        position = start
        while chunk := list(itertools.islice(texts, _ENCODE_CHUNK)):
            for ids in self._encode(chunk):
                yield position, self._wrap(ids)
                position += 1

    def _tokenize_all(self) -> None:
        pieces = []
        for i in range(0, len(self.documents), _ENCODE_CHUNK):
            pieces.extend(self._wrap(ids) for ids in self._encode(list(self.documents[i:i + _ENCODE_CHUNK])))
        lengths = torch.tensor([0] + [p.numel() for p in pieces], dtype=torch.long)
        self._offsets = lengths.cumsum(0).tolist()
        self._tokens = torch.cat(pieces) if pieces else torch.empty(0, dtype=torch.long)

    def _next_segment(self) -> bool:
        """Make the document at the current position current; False once the last epoch is over."""
        while True:
            if self._segment_iter is None:
                self._segment_iter = self._segments(self._epoch, self._document)
            item = next(self._segment_iter, None)
            if item is None:
                if not self._epoch_had_tokens:
                    raise ValueError("the corpus gave no tokens in a whole epoch: is it empty?")
                self._set_position(self._epoch + 1, 0, 0, self._done, self._batches)
                if self.epochs is not None and self._epoch >= self.epochs:
                    return False
                continue
            position, segment = item
            assert position == self._document, (position, self._document)
            if segment.numel() <= self._offset:  # an empty document (without add_bos / add_eos)
                self._document, self._offset = position + 1, 0
                continue
            self._segment, self._epoch_had_tokens = segment, True
            return True

    # Packing

    def _pack(self, rows: int) -> Optional[Tuple[torch.Tensor, torch.Tensor, List[int]]]:
        """The next ``rows`` rows: flat input ids and labels, and the boundaries; None at the end."""
        T, n = self.seq_len, rows * self.seq_len
        input_ids = torch.full((n,), self.pad_id, dtype=torch.long)
        labels = torch.full((n,), IGNORE_INDEX, dtype=torch.long)
        bounds, fill = [0], 0
        while fill < n:
            if self._segment is None and (self._done or not self._next_segment()):
                self._done = True
                if fill == 0 or self.drop_last:
                    return None
                while fill < n:  # pad each remaining row, so that every row start stays a boundary
                    fill = (fill // T + 1) * T
                    bounds.append(fill)
                break
            segment, offset = self._segment, self._offset
            take = min(segment.numel() - offset, (fill // T + 1) * T - fill)
            input_ids[fill:fill + take] = segment[offset:offset + take]
            labels[fill:fill + take - 1] = segment[offset + 1:offset + take]
            if offset + take < segment.numel():  # the document goes on in the next row
                labels[fill + take - 1] = segment[offset + take]
                self._offset = offset + take
            else:
                self._segment, self._document, self._offset = None, self._document + 1, 0
            fill += take
            bounds.append(fill)
        return input_ids, labels, bounds

    def __iter__(self) -> "PackedDataset":
        return self

    def __next__(self) -> Dict[str, torch.Tensor]:
        B, T = self.batch_size, self.seq_len
        packed = self._pack(B * self.world_size)
        if packed is None:
            raise StopIteration
        self._batches += 1
        input_ids, labels, bounds = packed
        first, last = self.rank * B * T, (self.rank + 1) * B * T
        cu_seqlens = torch.tensor([b - first for b in bounds if first <= b <= last], dtype=torch.int32)
        return {"input_ids": input_ids[first:last].view(B, T), "labels": labels[first:last].view(B, T),
                "cu_seqlens": cu_seqlens}

    # Resumption

    @property
    def epoch(self) -> int:
        """The epoch the next batch starts in."""
        return self._epoch

    def state_dict(self) -> Dict[str, int]:
        """Where the stream stands after the last batch (plain ints: JSON- and torch.save-able)."""
        state = {"version": _STATE_VERSION, "seed": self.seed, "epoch": self._epoch, "document": self._document,
                 "offset": self._offset, "done": int(self._done), "batches": self._batches}
        if self._sequence:
            state["num_documents"] = len(self.documents)
        return state

    def load_state_dict(self, state: Dict[str, int]) -> None:
        """Continue from ``state``: the following batches are the ones that followed it."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unknown data state version {state.get('version')!r}")
        if state["seed"] != self.seed:
            raise ValueError(f"the data state was saved with seed {state['seed']}, this dataset has seed {self.seed}")
        if self._sequence and state.get("num_documents", len(self.documents)) != len(self.documents):
            raise ValueError(f"the data state was saved over {state['num_documents']} documents, "
                             f"this dataset has {len(self.documents)}: is it the same corpus and split?")
        self._set_position(state["epoch"], state["document"], state["offset"], bool(state["done"]), state["batches"])
        self._epoch_had_tokens = state["document"] > 0 or state["offset"] > 0

    def _set_position(self, epoch: int, document: int, offset: int, done: bool, batches: int) -> None:
        self._epoch, self._document, self._offset = epoch, document, offset
        self._done, self._batches = done, batches
        self._segment: Optional[torch.Tensor] = None
        self._segment_iter: Optional[Iterator[Tuple[int, torch.Tensor]]] = None
        self._epoch_had_tokens = False


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (1 << 63)
