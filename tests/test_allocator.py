"""The malloc tuning: applied once, opt-out by environment, harmless where it does not apply."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _run(code: str, env_extra: dict[str, str]) -> str:
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60).stdout


def test_tuning_applies_on_linux_glibc_and_can_be_switched_off():
    code = "from wsbench.allocator import tune_allocator as t; print(t(), t())"
    on = _run(code, {"WSBENCH_MALLOC_TUNING": "1"}).split()
    if sys.platform.startswith("linux"):
        assert on == ["True", "True"]  # idempotent
    assert _run(code, {"WSBENCH_MALLOC_TUNING": "0"}).split() == ["False", "False"]


def test_thresholds_can_be_set_and_a_bad_setting_is_one_error_line():
    code = "from wsbench.allocator import tune_allocator as t, release_free_memory as r; print(t(), r())"
    if sys.platform.startswith("linux"):
        assert _run(code, {"WSBENCH_MALLOC_TUNING": "256,512"}).split() == ["True", "True"]
    assert _run(code, {"WSBENCH_MALLOC_TUNING": "0"}).split() == ["False", "False"]  # nothing tuned: nothing trimmed
    env = dict(os.environ, WSBENCH_MALLOC_TUNING="lots")
    run_bench = Path(__file__).resolve().parents[1] / "run_bench.py"
    done = subprocess.run([sys.executable, str(run_bench), "list"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: WSBENCH_MALLOC_TUNING='lots': expected 0, 1 or MMAP_MIB,TRIM_MIB (positive integers)"]
