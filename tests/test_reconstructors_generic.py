"""Every registered reconstructor, through the reconstruction task on the tiny cifar10_resnet zoo:
the same contract for all (records with finite scores, sizes, per-layer errors on the architecture's
conv/linear weights), and a clear refusal of an architecture it cannot read."""
from __future__ import annotations

import math

import pytest

import wsbench.builtins  # noqa: F401
from data_paths import DATA_DIR
from wsbench.archs import spec_for_arch
from wsbench.cli import main
from wsbench.registry import METHODS
from wsbench.results import read_records
from wsbench.runner import preset_names

RECONSTRUCTORS = [n for n in METHODS.names() if METHODS.get(n).capability == "reconstructor"]


@pytest.mark.parametrize("name", RECONSTRUCTORS)
def test_every_reconstructor_runs_the_task_on_the_tiny_zoo(name, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WSBENCH_DATA_DIR", str(DATA_DIR))
    preset = "tiny" if "tiny" in preset_names(name) else "default"
    res = tmp_path / "res"
    argv = ["--quiet", "--method", name, "--zoo", "cifar10_resnet", "--zoo-variant", "tiny", "--preset", preset,
            "--set", "task.eval_limit=64", "--results-dir", str(res), "--runs-dir", str(tmp_path / "runs")]
    assert main(argv) == 0
    capsys.readouterr()
    records = read_records(res)
    assert records and all(r.method == name and r.status == "ok" for r in records)
    for r in records:
        m = r.metrics
        assert all(math.isfinite(v) for v in m.values()), m
        assert m["size_params"] > 0 and m["size_bytes"] > 0 and m["rel_weight_error"] >= 0
        spec = spec_for_arch("resnet_cifar", depth=20 if "20" in r.member else 56)
        assert set(r.extra["layer_rel_error"]) == {lay.weight for lay in spec.weight_layers()}


@pytest.mark.parametrize("name", RECONSTRUCTORS)
def test_every_reconstructor_refuses_an_architecture_without_conv_layers(name):
    ok, why = METHODS.get(name).supports(spec_for_arch("siren"))
    assert not ok and "conv" in why
