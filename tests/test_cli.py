"""The command line: listing, exit codes, and a full reconstruction run on the tiny cifar10_resnet zoo."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wsbench.cli import main
from wsbench.results import read_records

REPO = Path(__file__).resolve().parent.parent
needs_data = pytest.mark.skipif(not Path(os.environ.get("WSBENCH_DATA_DIR", "/nonexistent")).is_dir(),
                                reason="WSBENCH_DATA_DIR (../shared/data) is not available")


@pytest.fixture(autouse=True)
def _zoo_store(tmp_path_factory, monkeypatch):
    store = tmp_path_factory.getbasetemp() / "zoo_store"  # shared by the tests of one session
    monkeypatch.setenv("WSBENCH_ZOO_DIR", str(store))


def test_list_shows_registries(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("magnitude_prune", "low_rank", "quantize", "cifar10_resnet", "reconstruction"):
        assert name in out


def test_list_json(capsys):
    assert main(["--json", "list"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["methods"]["magnitude_prune"]["tasks"] == ["reconstruction"]


def test_help_exits_zero():
    r = subprocess.run([sys.executable, "run_bench.py", "--help"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and "run_bench.py" in r.stdout and "list" in r.stdout


@pytest.mark.parametrize("argv,needle", [
    (["--method", "magnitude_prun", "--zoo", "cifar10_resnet"], "did you mean 'magnitude_prune'"),
    (["--method", "magnitude_prune", "--zoo", "cifar10_resnt"], "did you mean 'cifar10_resnet'"),
    (["--method", "magnitude_prune", "--zoo", "cifar10_resnet", "--task", "reconstrction"], "did you mean 'reconstruction'"),
    (["--method", "magnitude_prune", "--zoo", "cifar10_resnet", "--set", "budgets=[2.0]"], "budget"),
    (["--method", "magnitude_prune", "--zoo", "cifar10_resnet", "--preset", "papr"], "no preset 'papr'"),
    (["--method", "magnitude_prune", "--zoo", "cifar10_resnet", "--device", "tpu"], "--device"),
])
def test_user_errors_exit_2_with_one_line(argv, needle, capsys, tmp_path):
    rc = main(argv + ["--results-dir", str(tmp_path / "res"), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "res").exists()


def test_usage_error_exit_code():
    r = subprocess.run([sys.executable, "run_bench.py", "--zoo", "cifar10_resnet"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "--method" in r.stderr


@needs_data
def test_a_method_version_bump_reruns_instead_of_reusing_records(tmp_path, capsys, monkeypatch):
    from wsbench.methods.compression import MagnitudePrune

    res = tmp_path / "res"
    argv = ["--quiet", "--method", "magnitude_prune", "--zoo", "cifar10_resnet", "--zoo-variant", "tiny",
            "--set", "budgets=[0.5]", "--set", "task.eval_limit=100", "--results-dir", str(res),
            "--runs-dir", str(tmp_path / "runs")]
    assert main(argv) == 0
    assert [r.method_version for r in read_records(res)] == [1]
    monkeypatch.setattr(MagnitudePrune, "version", 2)  # the implementation changed: the old record is not this run
    assert main(argv) == 0
    assert [r.method_version for r in read_records(res)] == [1, 2]
    assert main(argv) == 0 and len(read_records(res)) == 2  # and the new one is reused
    capsys.readouterr()


@needs_data
def test_reconstruction_run_end_to_end(tmp_path, capsys):
    res, runs = tmp_path / "res", tmp_path / "runs"
    argv = ["--quiet", "--method", "magnitude_prune", "--zoo", "cifar10_resnet", "--zoo-variant", "tiny",
            "--set", "budgets=[0.3,0.8]", "--set", "task.eval_limit=300", "--results-dir", str(res), "--runs-dir", str(runs)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "magnitude_prune@0.3" in out and "appended to" in out
    records = read_records(res)
    assert len(records) == 2
    by = {r.variant: r for r in records}
    lo, hi = by["magnitude_prune@0.3"].metrics, by["magnitude_prune@0.8"].metrics
    assert hi["acc_orig"] == lo["acc_orig"] > 80  # ResNet20 on its first 256 JPEG test images
    assert lo["acc_recon_cifar10_exact"] <= hi["acc_recon_cifar10_exact"] + 1.0
    assert hi["acc_drop"] < 5 and hi["compression_ratio"] > 1.2
    assert by["magnitude_prune@0.8"].command.startswith("python run_bench.py")
    # the same run again is recognised and not duplicated, and its recorded result is shown again,
    # with every recorded reconstruction of the same member beside it
    assert main(argv) == 0
    assert len(read_records(res)) == 2
    out = capsys.readouterr().out
    assert "nothing new was run; the recorded result of this run:" in out and "magnitude_prune@0.3" in out
    table = out[out.index("recorded reconstructions of cifar10_resnet"):]
    marked = [line for line in table.splitlines() if line.startswith("*")]
    assert len(marked) == 2 and all("resnet20_pretrained" in line for line in marked)
    assert "original resnet20_pretrained:" in table
    # the leaderboard is generated from the records
    assert main(["leaderboard", "--results-dir", str(res), "--out", str(tmp_path / "lb")]) == 0
    assert "magnitude_prune" in (tmp_path / "lb" / "README.md").read_text()


@needs_data
def test_method_that_cannot_read_a_held_out_architecture_is_recorded_not_applicable(tmp_path, capsys):
    """cross_architecture with a fixed-architecture encoder: exit 0, one not_applicable record per seed
    with the reason (shown on the leaderboard), nothing trained; the same run again adds nothing."""
    res = tmp_path / "res"
    argv = ["--method", "mlp", "--zoo", "cnn_families_mnist", "--zoo-variant", "tiny", "--task", "cross_architecture",
            "--preset", "quick", "--seeds", "0", "1", "--set", "task.train_groups=[d2w8,d3w16]",
            "--set", "task.eval_groups=[d4w32]", "--results-dir", str(res), "--runs-dir", str(tmp_path / "runs")]
    assert main(argv) == 0
    assert "not applicable" in capsys.readouterr().err
    records = read_records(res)
    assert [(r.seed, r.status) for r in records] == [(0, "not_applicable"), (1, "not_applicable")]
    assert all("not architecture-agnostic" in r.reason and "d4w32" in r.reason and not r.metrics for r in records)
    assert main(argv) == 0 and len(read_records(res)) == 2
    assert main(["leaderboard", "--results-dir", str(res), "--out", str(tmp_path / "lb")]) == 0
    assert "not applicable: method 'mlp' is not architecture-agnostic" in (tmp_path / "lb" / "README.md").read_text()


def test_set_and_config_file_win_over_per_group_preset_values(tmp_path):
    """`--set iterations=...` under `--preset paper` reaches every architecture group (the group presets
    used to override it silently); keys the user did not give keep their per-group values."""
    import torch

    from wsbench.runner import RunRequest, method_and_task_config
    from wsbench.tasks.reconstruction import merged_method_config

    req = RunRequest(method="nern", zoo="cifar10_resnet", preset="paper", overrides=["iterations=100"])
    _, cfg, _ = method_and_task_config(req, torch.device("cpu"))
    r56 = merged_method_config(cfg, "resnet56")
    assert r56["iterations"] == 100 and r56["hidden"] == 320 and r56["loss_warmup"] == 10000
    assert merged_method_config(cfg, "resnet20")["iterations"] == 100
    config = tmp_path / "c.yaml"
    config.write_text("eval_every: 7\n")
    req = RunRequest(method="nern", zoo="cifar10_resnet", preset="paper", config_path=str(config))
    _, cfg, _ = method_and_task_config(req, torch.device("cpu"))
    assert merged_method_config(cfg, "resnet56")["eval_every"] == 7
    assert merged_method_config(cfg, "resnet56")["iterations"] == 68600
