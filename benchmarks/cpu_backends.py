"""CPU backend benchmark: writes benchmarks/results/<date>-cpu.md (see gdn2/bench/cpu.py)."""

import datetime
import pathlib
import platform

from gdn2.bench.cpu import format_report, run

if __name__ == "__main__":
    report = run()
    text = format_report(report)
    print(text)
    out = pathlib.Path(__file__).parent / "results" / f"{datetime.date.today()}-cpu.md"
    out.write_text(f"# CPU backends, {datetime.date.today()}\n\nMachine: {platform.machine()}, "
                   f"{report.threads} threads, Linux {platform.release()}, Python {platform.python_version()}.\n"
                   f"Command: `python benchmarks/cpu_backends.py`.\n\n{text}\n")
    print(f"wrote {out}")
