"""The experiment report's protocol keys: records written before a field existed stay comparable."""


def test_records_before_a_protocol_field_count_as_its_default():
    from experiments.report import PROTOCOL, protocol_of
    old = dict(steps=10, batch_size=4, vocab_size=64, num_layers=2, num_heads=2)
    assert protocol_of(old) == protocol_of({**old, "lr_schedule": "cosine"})
    assert protocol_of(old) != protocol_of({**old, "lr_schedule": "constant"})
    assert protocol_of(old) == protocol_of({**old, "train": "single"}) != protocol_of({**old, "train": "zoology"})
    assert list(PROTOCOL)[-3:] == ["lr_schedule", "train", "tests"]
    # a mixture-trained record before ``tests``: tested at Zoology's settings under its vocabulary
    zoo = {**old, "train": "zoology", "vocab_size": 512}
    assert protocol_of(zoo) == protocol_of({**zoo, "tests": "64:4,64:8,64:16,128:32,256:64"})
    assert protocol_of(zoo) != protocol_of({**zoo, "tests": "256:64"})
    assert protocol_of({**old, "tests": None}) == protocol_of(old)   # --train single: no list
    # another mixture's record before ``tests`` was tested at settings of its own: not Zoology's
    mixture = {**old, "train": "mixture 16:1:100000,64:16:20000", "vocab_size": 512}
    assert protocol_of(mixture)[-1] is None
    assert protocol_of(mixture) != protocol_of({**mixture, "tests": "64:4,64:8,64:16,128:32,256:64"})


def _record(mixer, t, p, acc, train="zoology", lr=1e-3, seed=0):
    return dict(task="mqar", mixer=mixer, d_model=64, seq_len=t, num_kv_pairs=p, lr=lr, seed=seed, accuracy=acc,
                selection_accuracy=acc, steps=4000, batch_size=256, vocab_size=8192, num_layers=2, num_heads=2,
                lr_schedule="cosine", train=train, state_size=2048, state_kind="recurrent", steps_to_half_loss=100)


def test_glance_has_a_row_per_zoology_model_and_a_column_per_tested_setting():
    from experiments.report import glance, mqar_markdown, mqar_rows
    records = [_record("gdn2", 64, 4, 0.99), _record("gdn2", 256, 64, 0.70), _record("kda", 64, 4, 0.95),
               _record("kda", 256, 64, 0.33), _record("kda", 256, 64, 0.50, seed=1),
               _record("gla", 128, 32, 0.25, train="single")]
    rows = mqar_rows(records)
    table = glance(rows)
    assert table[5] == "| Mixer | d_model | Best LR | 64:4 | 256:64 | n |"
    assert "| gdn2 | 64 | 0.001 | 99.0 | 70.0 | 1 |" in table
    assert "| kda | 64 | 0.001 | 95.0 | 41.5 | 1-2 |" in table  # the seeds' mean; n differs by setting
    assert not any(line.startswith("| gla") for line in table)  # single-setting probes stay below
    md = mqar_markdown(rows)
    assert md.index("at a glance") < md.index("## T=64, P=4") < md.index("train=single")
    assert glance(mqar_rows(records[-1:])) == []


def test_glance_names_the_protocol_of_each_row_when_there_are_several():
    from experiments.report import glance, mqar_rows
    records = [_record("gdn2", 64, 4, 0.99), {**_record("gdn2", 64, 4, 0.50), "steps": 16000},
               {**_record("gdn2", 64, 4, 0.40), "steps": 16000, "seed": 1}]
    table = glance(mqar_rows(records))
    assert table[5].startswith("| Mixer | d_model | Protocol | Best LR |")
    assert table[7:9] == ["| gdn2 | 64 | steps=4000 | 0.001 | 99.0 | 1 |",   # 4000 before 16000
                          "| gdn2 | 64 | steps=16000 | 0.001 | 45.0 | 2 |"]


def test_the_plot_has_a_panel_per_setting_and_a_line_per_mixer_over_state_size():
    import pytest
    plt = pytest.importorskip("matplotlib.pyplot")
    from experiments.report import mqar_figure, mqar_rows
    records = [_record("gdn2", 256, 64, 0.5), _record("gdn2", 256, 64, 0.7, seed=1),
               {**_record("gdn2", 256, 64, 0.9), "d_model": 128, "state_size": 8192},
               _record("kda", 256, 64, 0.4), _record("kda", 64, 4, 1.0),
               _record("gla", 128, 32, 0.25, train="single")]   # another protocol: not plotted
    fig = mqar_figure(mqar_rows(records))
    try:
        panels = [ax for ax in fig.axes if ax.get_title()]
        assert [ax.get_title() for ax in panels] == ["MQAR T=64, P=4", "MQAR T=256, P=64"]
        data = [c.lines[0] for c in panels[1].containers]   # each errorbar's line (its caps are lines too)
        lines = {tuple(line.get_xdata()): list(line.get_ydata()) for line in data}
        assert len(data) == 2
        assert lines[(2048, 8192)] == pytest.approx([60.0, 90.0])   # gdn2: mean over seeds, then d_model 128
        assert lines[(2048,)] == pytest.approx([40.0])               # kda
        legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
        assert sorted(legend) == ["gdn2", "kda"]
    finally:
        plt.close(fig)


def test_a_cell_run_twice_counts_once_at_its_latest_and_is_counted_as_set_aside():
    from experiments.report import mqar_markdown, mqar_rows, superseded
    records = [_record("gdn2", 256, 64, 0.2), _record("gdn2", 256, 64, 0.6), _record("gdn2", 256, 64, 0.4, seed=1)]
    (row,) = mqar_rows(records)
    assert (row["n"], row["mean"]) == (2, 0.5)    # the later seed-0 record (0.6) with seed 1 (0.4)
    assert superseded(records) == 1 and superseded(records[::2]) == 0
    assert "1 record(s) of cells run twice" in mqar_markdown([row], replaced=1)
    assert "run twice" not in mqar_markdown([row])
