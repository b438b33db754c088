"""The malloc tuning: applied once, opt-out by environment, harmless where it does not apply."""
from __future__ import annotations

import subprocess
import sys


def _run(code: str, env_extra: dict[str, str]) -> str:
    import os

    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60).stdout


def test_tuning_applies_on_linux_glibc_and_can_be_switched_off():
    code = "from wsbench.allocator import tune_allocator as t; print(t(), t())"
    on = _run(code, {"WSBENCH_MALLOC_TUNING": "1"}).split()
    if sys.platform.startswith("linux"):
        assert on == ["True", "True"]  # idempotent
    assert _run(code, {"WSBENCH_MALLOC_TUNING": "0"}).split() == ["False", "False"]
