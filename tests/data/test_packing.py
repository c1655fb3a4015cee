"""Packing documents into rows: boundaries, labels, no token lost, determinism, exact resumption.

Most tests use a character tokenizer (id = code point + 2), so that the expected stream can be
written down independently of the packer and every token can be traced to its document.
"""

import json
import random
from collections import Counter

import pytest
import torch

from gdn2.data import IGNORE_INDEX, Documents, PackedDataset

EOS, PAD = 0, 1


class CharTokenizer:
    eos_id, pad_id, vocab_size = EOS, PAD, 130

    def encode(self, text):
        return [ord(c) + 2 for c in text]


def make_documents(n=23, seed=0):
    """Documents of very different lengths (empty, shorter and longer than a row), each distinct."""
    rng = random.Random(seed)
    lengths = [1, 3, 40, 70] + [rng.randrange(0, 60) for _ in range(n - 5)]
    return [""] + [f"{i}:" + "".join(rng.choice("abcdefgh ") for _ in range(k)) for i, k in enumerate(lengths, 1)]


def wrapped(doc):
    return [EOS] + CharTokenizer().encode(doc) + [EOS]


def expected_stream(documents):
    """Tokens of one epoch in order (no shuffling), with the document index of each."""
    tokens, owner = [], []
    for i, doc in enumerate(documents):
        tokens += wrapped(doc)
        owner += [i] * len(wrapped(doc))
    return tokens, owner


def take_epoch(data):
    batches = list(data)
    assert batches, "no batch"
    return batches


def flat(batches, key):
    return torch.cat([b[key].reshape(-1) for b in batches])


@pytest.mark.parametrize("seq_len,batch_size", [(16, 3), (7, 1), (64, 2)])
def test_one_epoch_is_the_document_stream_cut_into_rows(seq_len, batch_size):
    documents = make_documents()
    batches = take_epoch(PackedDataset(documents, CharTokenizer(), seq_len, batch_size, shuffle=False, epochs=1))
    tokens, owner = expected_stream(documents)
    n = len(tokens)
    inputs, labels = flat(batches, "input_ids"), flat(batches, "labels")
    assert inputs.shape == labels.shape and inputs.numel() % (seq_len * batch_size) == 0
    # every token once, in order, then padding to the end of the last batch
    assert inputs[:n].tolist() == tokens
    assert (inputs[n:] == PAD).all() and (labels[n:] == IGNORE_INDEX).all()
    assert inputs.numel() - n < seq_len * batch_size
    # the label of each token is the next token of its document, and -100 at a document's end
    for p in range(n):
        same = p + 1 < n and owner[p + 1] == owner[p]
        assert labels[p].item() == (tokens[p + 1] if same else IGNORE_INDEX), p
    # boundaries: every document start and every row start, nothing else
    span = seq_len * batch_size
    doc_starts = {p for p in range(n) if p == 0 or owner[p] != owner[p - 1]}
    for k, batch in enumerate(batches):
        first = k * span
        expected = sorted({b - first for b in doc_starts if first <= b < first + span}
                          | set(range(0, span + 1, seq_len)) | ({n - first} if first < n < first + span else set()))
        cu = batch["cu_seqlens"]
        assert cu.dtype == torch.int32 and cu.tolist() == expected


def test_labels_never_cross_a_document():
    T = 12
    data = PackedDataset(make_documents(40, seed=1), CharTokenizer(), T, 4, seed=3, epochs=2)
    for batch in data:
        inputs, labels, cu = batch["input_ids"].reshape(-1), batch["labels"].reshape(-1), batch["cu_seqlens"]
        assert cu[0] == 0 and cu[-1] == inputs.numel() and (cu[1:] > cu[:-1]).all()
        assert set(range(0, inputs.numel() + 1, T)) <= set(cu.tolist())  # every row starts a segment
        for start, end in zip(cu[:-1].tolist(), cu[1:].tolist()):
            if (inputs[start:end] == PAD).all():  # padding after the last document
                assert (labels[start:end] == IGNORE_INDEX).all()
                continue
            # inside a segment, the target is the next input
            assert torch.equal(labels[start:end - 1], inputs[start + 1:end])
            if labels[end - 1] == IGNORE_INDEX:  # the segment ends its document with the closing EOS
                assert inputs[end - 1] == EOS
            else:  # the document goes on in the next row (of this batch or the next one)
                assert end % T == 0 and (end == inputs.numel() or labels[end - 1] == inputs[end])


def test_every_document_once_per_epoch_in_a_shuffled_order():
    documents = make_documents(30, seed=2)

    def epoch_orders(seed):
        data = PackedDataset(documents, CharTokenizer(), 10, 2, seed=seed, epochs=3)
        inputs = flat(list(data), "input_ids").tolist()
        text = "".join(chr(t - 2) if t > PAD else "|" if t == EOS else "" for t in inputs)
        docs = [d for d in text.split("||")]
        docs[0], docs[-1] = docs[0][1:], docs[-1][:-1]
        return [docs[i * len(documents):(i + 1) * len(documents)] for i in range(3)]

    orders = epoch_orders(seed=0)
    for order in orders:
        assert sorted(order) == sorted(documents)  # no document lost or repeated within an epoch
    assert orders[0] != orders[1] != orders[2]     # reshuffled every epoch
    assert orders == epoch_orders(seed=0)          # deterministic for a seed
    assert orders != epoch_orders(seed=1)


def test_no_token_lost_or_duplicated_in_an_epoch():
    documents = make_documents(25, seed=4)
    batches = take_epoch(PackedDataset(documents, CharTokenizer(), 9, 3, seed=5, epochs=1))
    inputs = flat(batches, "input_ids")
    expected = Counter(t for d in documents for t in wrapped(d))
    got = Counter(inputs[inputs != PAD].tolist())
    assert got == expected


def test_long_documents_continue_at_the_next_row_start():
    documents = ["x" * 50]
    batch = next(PackedDataset(documents, CharTokenizer(), 8, 8, epochs=1))
    inputs, labels = batch["input_ids"], batch["labels"]
    assert batch["cu_seqlens"].tolist() == [0, 8, 16, 24, 32, 40, 48, 52, 56, 64]  # 52 tokens, then padding
    for r in range(6):  # the last position of each full row predicts the first of the next row
        assert labels[r, -1] == inputs[r + 1, 0]
    assert labels[6, 3] == IGNORE_INDEX and (inputs[6, 4:] == PAD).all() and (labels[7] == IGNORE_INDEX).all()


@pytest.mark.parametrize("streamed", [False, True])
def test_resume_gives_the_same_batches(streamed):
    documents = make_documents(12, seed=6)
    source = Documents(lambda: iter(documents), "test") if streamed else documents

    def make():
        return PackedDataset(source, CharTokenizer(), 11, 3, seed=7, shuffle_buffer=8)

    reference = make()
    batches = [next(reference) for _ in range(40)]  # several epochs
    assert reference.epoch >= 2
    for stop in (1, 5, 17, 33):
        run = make()
        for _ in range(stop):
            next(run)
        state = json.loads(json.dumps(run.state_dict()))  # survives a round trip through a file
        resumed = make()
        resumed.load_state_dict(state)
        for k in range(stop, 40):
            got = next(resumed)
            for key in ("input_ids", "labels", "cu_seqlens"):
                assert torch.equal(got[key], batches[k][key]), (stop, k, key)


def test_resume_after_the_last_batch_stops():
    data = PackedDataset(make_documents(5), CharTokenizer(), 16, 2, epochs=1)
    n = len(list(data))
    resumed = PackedDataset(make_documents(5), CharTokenizer(), 16, 2, epochs=1)
    resumed.load_state_dict(data.state_dict())
    assert n > 0 and list(resumed) == []


def test_resume_refuses_another_seed_or_corpus():
    state = PackedDataset(make_documents(), CharTokenizer(), 8, 1).state_dict()
    with pytest.raises(ValueError, match="seed"):
        PackedDataset(make_documents(), CharTokenizer(), 8, 1, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="documents"):
        PackedDataset(make_documents(9), CharTokenizer(), 8, 1).load_state_dict(state)


def test_ranks_split_the_global_batch_and_share_the_state():
    documents = make_documents(20, seed=8)
    whole = PackedDataset(documents, CharTokenizer(), 8, 4, seed=1)
    ranks = [PackedDataset(documents, CharTokenizer(), 8, 2, seed=1, rank=r, world_size=2) for r in range(2)]
    for _ in range(6):
        full, parts = next(whole), [next(r) for r in ranks]
        for key in ("input_ids", "labels"):
            assert torch.equal(torch.cat([p[key] for p in parts]), full[key])
        cu = torch.cat([parts[0]["cu_seqlens"], parts[1]["cu_seqlens"][1:] + 16])
        assert torch.equal(cu, full["cu_seqlens"])
    assert ranks[0].state_dict() == ranks[1].state_dict() == whole.state_dict()
    single = PackedDataset(documents, CharTokenizer(), 8, 4, seed=1)  # two ranks' checkpoint, resumed in one
    single.load_state_dict(ranks[0].state_dict())
    assert torch.equal(next(single)["input_ids"], next(whole)["input_ids"])


def test_drop_last_and_errors():
    documents = make_documents(6)
    padded = list(PackedDataset(documents, CharTokenizer(), 16, 2, epochs=1))
    dropped = list(PackedDataset(documents, CharTokenizer(), 16, 2, epochs=1, drop_last=True))
    assert len(dropped) == len(padded) - 1
    with pytest.raises(ValueError, match="no tokens"):
        next(PackedDataset([""], CharTokenizer(), 4, 1, add_bos=False, add_eos=False))
    with pytest.raises(TypeError, match="re-iterable"):
        PackedDataset((d for d in documents), CharTokenizer(), 4, 1)
    for text in ("In the beginning", b"In the beginning"):   # one text is not a collection of them
        with pytest.raises(TypeError, match="not a single"):
            PackedDataset(text, CharTokenizer(), 4, 1)
    with pytest.raises(ValueError, match="rank"):
        PackedDataset(documents, CharTokenizer(), 4, 1, rank=2, world_size=2)


def test_packed_batch_through_the_model_equals_each_document_alone():
    pytest.importorskip("transformers")
    from gdn2.models import GDN2Config, GDN2ForCausalLM

    torch.manual_seed(0)
    config = GDN2Config(vocab_size=130, hidden_size=32, num_hidden_layers=2, pattern="LS", num_heads=2,
                        head_k_dim=16, head_v_dim=16, num_attention_heads=2, num_key_value_heads=2, head_dim=8,
                        intermediate_size=64, sliding_window=8, backend="chunk")
    model = GDN2ForCausalLM(config).eval().double()
    batch = next(PackedDataset(make_documents(8, seed=9), CharTokenizer(), 24, 2, seed=0))
    B, T = batch["input_ids"].shape
    cu = batch["cu_seqlens"]
    with torch.no_grad():
        logits = model(batch["input_ids"].reshape(1, B * T), cu_seqlens=cu).logits[0]
        for start, end in zip(cu[:-1].tolist(), cu[1:].tolist()):
            alone = model(batch["input_ids"].reshape(1, -1)[:, start:end], use_cache=False).logits[0]
            assert torch.allclose(logits[start:end], alone, rtol=1e-10, atol=1e-10), (start, end)
    loss = torch.nn.functional.cross_entropy(logits, batch["labels"].reshape(-1), ignore_index=IGNORE_INDEX)
    assert torch.isfinite(loss)
