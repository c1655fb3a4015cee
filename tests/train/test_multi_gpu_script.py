"""scripts/multi_gpu_check.sh end to end as its CPU dry run (tiny model, 2 processes under gloo,
4 steps), then scripts/multi_gpu_report.py: the report names the three runs and the resume
checks, and in float32 the two-process and resumed runs repeat the single-process losses."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "multi_gpu_check.sh"

pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or not torch.distributed.is_available()
    or (shutil.which("torchrun") is None and not (Path(torch.__file__).parent / "distributed" / "run.py").is_file()),
    reason="needs bash and torchrun (torch.distributed)")


def test_cpu_dry_run(corpus, tokenizer_dir, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "DEVICE": "cpu", "MODEL": "tiny", "INSTALL": "0", "CORPUS": str(corpus),
           "TOKENIZER": str(tokenizer_dir), "WORK": str(tmp_path / "work"), "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    # the script calls python3 and torchrun: put this interpreter's directory first
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    result = subprocess.run(["bash", str(SCRIPT), str(out), "2", "4"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]

    report = (out / "multi-gpu.md").read_text(encoding="utf-8")
    assert report in result.stdout   # printed as well
    for name in ("single", "ddp", "fsdp", "resume-1gpu", "resume-ngpu"):
        assert (out / "logs" / f"{name}.jsonl").is_file(), name
    for row in ("| 1 GPU | 1 | 0 | 4 |", "| DDP | 2 | 0 | 4 |", "| FSDP2 | 2 | 0 | 4 |",
                "| resume on 1 GPU | 1 | 0 | 3 (3) |", "| resume on N GPUs | 2 | 0 | 3 (3) |"):
        assert row in report, row
    # float32 on the CPU: the same computation up to summation order, far inside the bf16 tolerance
    for line in ("PASS loss DDP x2", "PASS loss FSDP2 x2", "PASS resume on 1 GPU", "PASS resume on N GPUs"):
        assert line in report, line
    assert "scaling DDP x2: efficiency" in report and "scaling FSDP2 x2: efficiency" in report
    assert "CPU dry run" in report and "Missing logs" not in report


def test_report_without_logs_says_missing(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "multi_gpu_report.py"), str(tmp_path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    report = (tmp_path / "multi-gpu.md").read_text(encoding="utf-8")
    assert "MISSING loss DDP" in report and "MISSING resume on 1 GPU" in report and "Missing logs" in report
