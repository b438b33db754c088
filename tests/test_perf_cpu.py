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


def test_markdown_states_the_same_run_reference_and_the_measured_bound():
    import importlib.util

    spec = importlib.util.spec_from_file_location("perf_cpu", ROOT / "scripts" / "perf_cpu.py")
    perf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(perf)
    res = {"machine": "x86_64 CPU, 2 cores", "command": "python scripts/perf_cpu.py", "date": "2026-12-01",
           "torch": "2.x", "threads": 2, "paths": {
               "gemm": {"gflops": 300.0},
               "siren_fit": {"what": "SIRENs", "gflops": 30.0, "fraction_of_gemm": 0.1, "seconds_per_step": 0.05,
                             "flops_per_step": 1.5e9, "peak_rss_mb": 100.0,
                             "reference": {"what": "autograd", "seconds_per_step": 0.1, "speedup": 2.0},
                             "bound": {"what": "sin and cos", "seconds_per_step": 0.025}}}}
    md = perf.markdown(res)
    assert "siren_fit: 2.00x the speed of autograd (100.0 ms/step, measured in the same process)" in md
    assert "at most 60.0 GFLOP/s (20.0% of the GEMM rate); the path runs at 50% of that ceiling" in md
