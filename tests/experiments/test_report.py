"""The experiment report's protocol keys: records written before a field existed stay comparable."""


def test_records_before_a_protocol_field_count_as_its_default():
    from experiments.report import PROTOCOL, protocol_of
    old = dict(steps=10, batch_size=4, vocab_size=64, num_layers=2, num_heads=2)
    assert protocol_of(old) == protocol_of({**old, "lr_schedule": "cosine"})
    assert protocol_of(old) != protocol_of({**old, "lr_schedule": "constant"})
    assert protocol_of(old) == protocol_of({**old, "train": "single"}) != protocol_of({**old, "train": "zoology"})
    assert list(PROTOCOL)[-2:] == ["lr_schedule", "train"]
