"""The kernel benchmark's report, from a made-up result (the timings themselves need a GPU)."""

from gdn2.bench.gpu import Row, format_results


def result(decode):
    row = Row(shape="2x8K")
    row.times.update(gdn2_fwd=4.0, gdn2_fwdbwd=18.0, fla_fwd=1.0, fla_fwdbwd=6.0, sdpa_fwd=0.9, sdpa_fwdbwd=3.8)
    return {"rows": [row], "decode": decode, "gates": {"2x8K": ["o: fine"]}}


META = {"date": "2026-11-25", "gpu": "a card", "torch": "2"}
CEILINGS = {"copy_GBps": 3000.0, "bf16_TFLOPs": 790.0}


def test_report_ratios_and_decode_floor():
    text = format_results(result({"gdn2": 0.18, "fla": 0.15, "gdn2_graph": 0.0895, "fla_graph": 0.06}), META, CEILINGS)
    assert "| 2x8K | 4.000 | 1.000 | 4.00 | 18.000 | 6.000 | 3.00 | 0.900 | 3.800 |" in text
    assert "ratio 1.20" in text
    # 2 x 64 x 16 x 128 x 128 x 4 B = 134 MB at 3000 GB/s: 0.0447 ms
    assert "floor 0.0447 ms" in text and "gdn2 0.0895 ms (2.00x the floor)" in text


def test_report_says_when_a_path_was_not_capturable():
    text = format_results(result({"gdn2": 0.18, "gdn2_graph": None}), META, CEILINGS)
    assert "gdn2 n/a (not capturable)" in text and "FLA" not in text.split("Replayed")[1].split(";")[0]


def test_report_gives_the_decay_span_sensitivity():
    res = result({"gdn2": 0.18})
    res["spans"] = {"g - 2 (span ~31)": {"fwd": 4.5, "fwdbwd": 20.0}}
    text = format_results(res, META, CEILINGS)
    assert "(fwd 4.000, fwd+bwd 18.000); g - 2 (span ~31): fwd 4.500, fwd+bwd 20.000." in text


def test_results_path_never_overwrites_a_run_of_the_same_day(tmp_path):
    from gdn2.bench.gpu import results_path
    meta = {"date": "2026-12-06", "time": "0549", "gpu": "NVIDIA H100 80GB HBM3"}
    first = results_path(tmp_path, meta)
    assert first.name == "2026-12-06-H100-80GB-HBM3.md"
    first.write_text("earlier run")
    assert results_path(tmp_path, meta, "-precision").name == "2026-12-06-H100-80GB-HBM3-precision.md"
    assert results_path(tmp_path, meta).name == "2026-12-06-0549-H100-80GB-HBM3.md"
    results_path(tmp_path, meta).write_text("a second run")
    assert results_path(tmp_path, meta).name == "2026-12-06-0549-2-H100-80GB-HBM3.md"


def _fake_inputs(B, T, g_shift=0.0, **_):
    import torch
    gen = torch.Generator().manual_seed(B)
    x = {n: torch.randn(2, 4, generator=gen) for n in ("q", "k", "v", "g", "b", "w")}
    x["g"] = x["g"] - g_shift
    return x


def _mine(x, **_):
    import torch
    return x["q"] * torch.exp(x["g"]) * x["k"] + x["v"] * x["w"] * x["b"], None


def test_gate_checks_the_no_gradient_path_too():
    """The forward is timed without gradients, on other kernels than the training path: a reference
    that disagrees only there fails the gate."""
    import pytest
    import torch
    from gdn2.bench import gpu
    x = _fake_inputs(1, 8)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gpu, "ours", _mine)
        assert len(gpu.gate(x, _mine)) == 8     # o, o (forward only), six gradients
        other = lambda x, **_: (_mine(x)[0] * (1.0 if torch.is_grad_enabled() else 1.5), None)  # noqa: E731
        with pytest.raises(AssertionError, match=r"o \(forward only\)"):
            gpu.gate(x, other)


def test_run_gates_the_decay_span_rows_before_timing_them(monkeypatch):
    """The g - 2 and g - 6 inputs take other kernel forms: each is gated before it is timed, and a
    disagreement there stops the run with nothing of that row timed."""
    import pytest
    import torch
    from gdn2.bench import gpu
    timed = []
    monkeypatch.setattr(gpu, "make_inputs", _fake_inputs)
    monkeypatch.setattr(gpu, "ours", _mine)
    monkeypatch.setattr(gpu, "fla_chunk", lambda x, **_: (_mine(x)[0] * (1.5 if x["g"].mean() < -1 else 1.0), None))
    monkeypatch.setattr(gpu, "time_fwd", lambda fn, x: timed.append(float(x["g"].mean() < -1)) or 1.0)
    monkeypatch.setattr(gpu, "time_fwd_bwd", lambda fn, x: 1.0)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    with pytest.raises(AssertionError, match="correctness gate failed"):
        gpu.run(log=lambda *_: None, shapes=[(1, 8)])
    assert timed and not any(timed)   # the shape's rows were timed, no span row was
