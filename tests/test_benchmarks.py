"""Benchmark entries (benchmarks/*.yaml): every entry loads; --benchmark fixes task, zoo, variant and
the defining task options; the leaderboard names tables after the entry their records match."""
from __future__ import annotations

import pytest

import wsbench.builtins  # noqa: F401
from data_paths import DATA_DIR
from wsbench.benchmarks import all_benchmarks, apply_benchmark, benchmark_names, load_benchmark, match_benchmark
from wsbench.cli import main
from wsbench.errors import ConfigError, UnknownNameError
from wsbench.leaderboard.tables import build_tables
from wsbench.results import read_records

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_entry_loads_and_every_committed_table_has_one():
    entries = all_benchmarks()
    assert len(entries) == len(benchmark_names()) >= 5
    tables = build_tables(read_records(ROOT / "leaderboards" / "results"))
    assert tables and all(t.benchmark for t in tables), [t.title for t in tables if not t.benchmark]


def test_matching_uses_the_task_defaults_and_only_the_defining_options():
    cross = load_benchmark("cross_architecture-cnn_families_mnist-small")
    cfg = {"train_groups": ["d2w8", "d3w16"], "eval_groups": ["d4w32"], "epochs": 40}  # epochs: a training choice
    assert match_benchmark("cross_architecture", "cnn_families_mnist", "small", cfg) == cross  # target by default
    assert match_benchmark("cross_architecture", "cnn_families_mnist", "small", {**cfg, "eval_groups": ["d3w16"],
                                                                                "train_groups": ["d2w8"]}) is None
    assert match_benchmark("cross_architecture", "cnn_families_mnist", "small", {**cfg, "target": "gen_gap"}) is None


def test_contradicting_flags_and_options_are_refused():
    entry = load_benchmark("inr_classification-siren_mnist-small")
    with pytest.raises(ConfigError, match="--zoo 'siren_fashion_mnist' contradicts it"):
        apply_benchmark(entry, "siren_fashion_mnist", None, None, {})
    with pytest.raises(ConfigError, match="fixes task.target='label'"):
        apply_benchmark(entry, None, None, None, {"target": "psnr"})
    assert apply_benchmark(entry, "siren_mnist", "small", None, {"epochs": 2}) == {"epochs": 2, "target": "label"}
    with pytest.raises(UnknownNameError, match="did you mean 'inr_classification-siren_mnist-small'"):
        load_benchmark("inr_classification-siren_mnist-smal")


def test_a_benchmark_run_lands_in_its_entrys_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WSBENCH_DATA_DIR", str(DATA_DIR))
    monkeypatch.setenv("WSBENCH_ZOO_DIR", str(tmp_path / "zoos"))
    res = tmp_path / "res"
    argv = ["--quiet", "--benchmark", "inr_classification-siren_mnist-small", "--method", "statnn", "--zoo-variant",
            "tiny", "--results-dir", str(res), "--runs-dir", str(tmp_path / "runs")]
    assert main(argv) == 2  # the entry is the small variant: --zoo-variant tiny contradicts it
    assert "--zoo-variant 'tiny' contradicts it" in capsys.readouterr().err
    assert not res.exists()


def test_a_benchmark_entry_runs_end_to_end_and_names_its_table(tmp_path, capsys, monkeypatch):
    import wsbench.benchmarks as benchmarks

    entries = tmp_path / "benchmarks"
    entries.mkdir()
    (entries / "inr-tiny.yaml").write_text(
        "name: inr-tiny\nversion: 1\ndescription: a test entry\ntask: inr_classification\nzoo: siren_mnist\n"
        "zoo_variant: tiny\noptions: {target: label}\npreset: quick\nmetrics: [accuracy]\n")
    monkeypatch.setattr(benchmarks, "BENCHMARKS_DIR", entries)
    monkeypatch.setenv("WSBENCH_DATA_DIR", str(DATA_DIR))
    monkeypatch.setenv("WSBENCH_ZOO_DIR", str(tmp_path / "zoos"))
    res = tmp_path / "res"
    argv = ["--quiet", "--benchmark", "inr-tiny", "--method", "statnn", "--results-dir", str(res),
            "--runs-dir", str(tmp_path / "runs")]
    assert main(argv) == 0
    capsys.readouterr()
    (record,) = read_records(res)
    assert (record.task, record.zoo, record.zoo_variant, record.preset) == ("inr_classification", "siren_mnist", "tiny",
                                                                         "quick")
    assert record.task_config["target"] == "label"
    (table,) = build_tables([record])
    assert table.benchmark == "inr-tiny" and table.slug == "inr-tiny"


def test_every_task_declares_its_metrics_once_and_every_entry_headlines_declared_ones():
    from wsbench.registry import TASKS

    for name in TASKS.names():
        task = TASKS.get(name)
        assert task.metrics and any(m.headline for m in task.metrics.values()), name
    for entry in all_benchmarks():
        task = TASKS.get(entry.task)
        assert all(task.metric(m) for m in entry.metrics)
    recon = TASKS.get("reconstruction")
    assert recon.directions(["acc_recon_cifar10_exact", "acc_drop_cifar10_exact", "size_bytes"]) == {
        "acc_recon_cifar10_exact": True, "acc_drop_cifar10_exact": False, "size_bytes": False}
    with pytest.raises(ValueError, match="declares only"):
        recon.metric("accuracy")
