"""The MQAR step profiler runs end to end on the CPU (its device split needs a GPU)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_profile_report(tmp_path):
    spec = importlib.util.spec_from_file_location("mqar_step_profile", ROOT / "benchmarks" / "mqar_step_profile.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--mixers", "deltanet,attention", "--seq-len", "16", "--pairs", "2", "--batch-size", "2",
                     "--vocab-size", "32", "--warmup", "1", "--steps", "1", "--profiled-steps", "1",
                     "--device", "cpu", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "mqar-step-profile.md").read_text()
    assert "| deltanet |" in text and "| attention |" in text and "## attention: costliest kernels" in text
