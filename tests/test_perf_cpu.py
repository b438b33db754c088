"""scripts/perf_cpu.py: each path in its own process, fractions of the GEMM rate of the same run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from data_paths import DATA_DIR

ROOT = Path(__file__).resolve().parents[1]


def test_perf_script_writes_fractions_of_the_gemm_rate(tmp_path):
    env = dict(os.environ, WSBENCH_DATA_DIR=str(DATA_DIR))
    out = tmp_path / "perf" / "cpu"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "perf_cpu.py"), "--paths", "gemm", "nern_rec_step",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.with_suffix(".json").read_text())
    gemm, nern = res["paths"]["gemm"], res["paths"]["nern_rec_step"]
    assert gemm["flops_per_step"] == 2 * 2048 ** 3 and gemm["gflops"] > 0
    assert nern["flops_per_step"] > 0 and 0 < nern["fraction_of_gemm"] == nern["gflops"] / gemm["gflops"]
    assert nern["peak_rss_mb"] > 0
    md = out.with_suffix(".md").read_text()
    assert "fp32 GEMM rate measured in the same run" in md and "nern_rec_step" in md
