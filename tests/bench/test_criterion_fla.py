"""The criterion report of benchmarks/criterion_fla.py on the CPU, with a stand-in for FLA that
is 1% off: its output must be marked failing and ours (the chunk backend here) passing."""

import importlib.util
from pathlib import Path

from gdn2 import testing
from gdn2.ops import gated_delta_rule2

ROOT = Path(__file__).resolve().parents[2]


def test_criterion_rows_mark_a_breach(monkeypatch):
    spec = importlib.util.spec_from_file_location("criterion_fla", ROOT / "benchmarks" / "criterion_fla.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "random_inputs", lambda **kw: testing.random_inputs(
        **{**kw, "device": "cpu", "T": 40, "K": 16, "V": 16}))

    def off_by_one_percent(**x):
        o, S = gated_delta_rule2(**x, backend="chunk")
        return o * 1.01, S
    monkeypatch.setattr(mod, "fla", off_by_one_percent)
    rows = {r.split(" | ")[0].strip("| "): r for r in mod.rows_for(dict(B=1, T=40, H=2, initial_state=True, seed=3),
                                                                      backend="chunk")}
    assert set(rows) == {"o", "final state", "dq", "dk", "dv", "dg", "db", "dw", "dinitial_state"}
    assert rows["o"].endswith("**fails** |") and "(1.0x) ok" in rows["o"]
    assert rows["final state"].count(" ok") == 2
    assert "-> torch.bfloat16" in rows["o"] and "-> torch.float32" in rows["dg"]  # bfloat16 inputs, float32 g
