"""An installed, non-editable wsbench (a wheel) finds its presets and zoo cards: setup.py bundles
baselines/ and zoos/*.yaml into the package, and wsbench.resources reads them when there is no checkout."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import wsbench, wsbench.builtins
from wsbench.registry import ZOOS
from wsbench.runner import BASELINES_DIR, load_preset
from wsbench.benchmarks import all_benchmarks
assert '_bundled' in str(BASELINES_DIR), BASELINES_DIR
print(wsbench.__file__)
print(load_preset('dwsnet', 'paper')['hidden_dim'], len(ZOOS.names()), sorted(ZOOS.broken()), len(all_benchmarks()))
"""


def test_a_wheel_install_finds_presets_and_zoo_cards(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("wsbench", "baselines", "zoos", "benchmarks"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "_bundled"))
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = wheels.glob("wsbench-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, cwd=tmp_path)
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    module, figures = out.stdout.splitlines()[-2:]
    assert module.startswith(str(target))
    n_cards = len(list((ROOT / "zoos").glob("*.yaml")))
    n_entries = len(list((ROOT / "benchmarks").glob("*.yaml")))
    assert figures == f"32 {n_cards} [] {n_entries}"
