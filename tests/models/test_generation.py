"""The plain decode loop and its sampling filters."""

import pytest
import torch

from gdn2.models import decode, sample_next


def test_greedy_decode_matches_transformers_generate(make_model):
    model = make_model(pattern="LLLA")
    ids = torch.randint(0, 64, (2, 6))
    assert torch.equal(decode(model, ids, 10), model.generate(ids, max_new_tokens=10, do_sample=False))


def test_sampling_is_reproducible_and_stops_at_eos(make_model):
    model = make_model(pattern="LS")
    ids = torch.randint(0, 64, (3, 4))
    run = lambda **kw: decode(model, ids, 12, temperature=1.0, generator=torch.Generator().manual_seed(3), **kw)  # noqa: E731
    first = run()
    assert torch.equal(first, run()) and first.shape == (3, 16)
    eos = int(first[0, 4])                                    # row 0's first generated token
    stopped = run(eos_token_id=eos)
    assert stopped.shape[1] <= 16 and bool((stopped[0, 4:] == eos).all())


def test_filters():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
    gen = torch.Generator().manual_seed(0)
    draw = lambda **kw: {int(sample_next(logits, 1.0, generator=gen, **kw)) for _ in range(200)}  # noqa: E731
    assert draw() == {0, 1, 2}
    assert draw(top_k=2) == {0, 1}
    assert draw(top_p=0.5) == {0}
    assert draw(top_p=0.8) == {0, 1}
    assert int(sample_next(logits)) == 0
    for bad in (dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5)):
        name = next(iter(bad))
        with pytest.raises(ValueError, match=f"^{name} must be"):
            sample_next(logits, 1.0, **bad)
