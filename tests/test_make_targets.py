"""The Makefile's targets do what README says: `make bench-perf` runs the pytest-benchmark suite (pyproject's
addopts skip benchmarks in `make test`; `--benchmark-enable` does not lift that skip, so the target clears them)."""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _recipe_pytest_line(target: str) -> list[str]:
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith(f"{target}:")))
    line = next(line for line in lines[start + 1:] if "-m pytest" in line)
    return shlex.split(line.split("#")[0].strip())


def test_bench_perf_runs_the_benchmarks_instead_of_skipping_them():
    cmd = _recipe_pytest_line("bench-perf")
    assert cmd[0] == "$(BIN)/python" and cmd[-1] == "$(ARGS)"
    cmd = [sys.executable, *cmd[1:-1], "-k", "pooling_gradient_in_the_dropout_order", "-p", "no:cacheprovider", "-rs"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]
