"""Several processes (torchrun, gloo on CPU, 2 ranks): zoo building and encoder training give what
a single process gives, and a single process is untouched by wsbench.distributed."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from wsbench import distributed
from wsbench.tasks.encoder_training import _rank_batches

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
               "TORCHELASTIC_RUN_ID")


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """Two ranks on CPU (one thread each); fails the test with the output when a rank fails."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")  # a crashing rank prints where it was
    proc = subprocess.run(TORCHRUN + list(args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"torchrun {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc


@contextlib.contextmanager
def one_thread():
    """Torch on one thread here, as in each torchrun rank (same kernels; and fast on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_single_process_has_no_process_group(monkeypatch):
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)
    assert not distributed.launched() and not distributed.active()
    assert (distributed.rank(), distributed.world(), distributed.is_main()) == (0, 1, True)
    assert distributed.setup("cpu") == torch.device("cpu") and not torch.distributed.is_initialized()
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.all_gather_object(3) == [3]
    assert distributed.all_reduce_values([1, 2.5], op="max") == [1.0, 2.5]
    assert distributed.describe("cpu") == "cpu"
    distributed.barrier()
    distributed.shutdown()


@pytest.mark.parametrize("n", [0, 1, 2, 5, 6, 7])
def test_each_rank_takes_a_disjoint_equal_share_of_the_batches(n):
    batches = list(range(n))
    for world in (1, 2, 4):
        shares = [_rank_batches(batches, r, world) for r in range(world)]
        assert len({len(s) for s in shares}) == 1  # as many steps on every rank (DDP needs it)
        taken = [b for s in shares for b in s]
        assert set(taken) == set(batches)  # every batch is trained on
        assert len(taken) - n < world  # padding repeats fewer than world batches
        if world == 1:
            assert shares[0] == batches  # a single process trains exactly as before


@pytest.fixture(scope="module")
def one_process_zoo(tmp_path_factory):
    """small_cnn_mnist tiny built by this (single) process, on one thread as each torchrun rank."""
    from wsbench.zoo_builders import build_zoo

    with one_thread():
        return build_zoo("small_cnn_mnist", variant="tiny", device="cpu", out=tmp_path_factory.mktemp("z") / "one",
                         progress=False, log=lambda _m: None)


def assert_same_zoo(a: Path, b: Path) -> None:
    """members.parquet equal, every weight tensor equal to 1e-6."""
    pd.testing.assert_frame_equal(pd.read_parquet(a / "members.parquet"), pd.read_parquet(b / "members.parquet"))
    assert sorted(p.name for p in (a / "weights").iterdir()) == sorted(p.name for p in (b / "weights").iterdir())
    for f in (a / "weights").iterdir():
        x, y = load_file(str(f)), load_file(str(b / "weights" / f.name))
        assert x.keys() == y.keys()
        for k in x:
            torch.testing.assert_close(x[k], y[k], rtol=0, atol=1e-6)


def test_ranks_build_their_own_shards_and_a_later_run_resumes_them(one_process_zoo, tmp_path):
    """Ranks simulated in this process: rank 0 of 2 finds rank 1's shards missing; once rank 1 has
    built them, a single-process build resumes every shard and trains nothing."""
    from wsbench.errors import IntegrityError
    from wsbench.registry import ZOOS
    from wsbench.zoo_builders import BUILDERS, BuildContext, build_zoo, small_cnn

    card = ZOOS.get("small_cnn_mnist").resolve("tiny")
    work = tmp_path / ".z.work"
    with one_thread():
        for rank in (0, 1):
            ctx = BuildContext(torch.device("cpu"), work, progress=False, log=lambda _m: None, rank=rank, world_size=2)
            if rank == 0:
                with pytest.raises(IntegrityError, match="built by other ranks"):
                    BUILDERS.get(card.builder)(card, ctx)
            else:
                assert BUILDERS.get(card.builder)(card, ctx).members.empty  # rank 0 alone assembles
        n = len(small_cnn.plan(card)[1])
        assert n >= 2 and len(list((work / "shards").glob("*.parquet"))) == n  # both ranks' shards
        logs: list[str] = []
        z = build_zoo("small_cnn_mnist", variant="tiny", device="cpu", out=tmp_path / "z", progress=False,
                      log=logs.append)
    assert any(f"resuming, {n} of {n} shards" in m for m in logs)
    assert z.card.recipe["build_stats"]["runs_trained_now"] == 0
    assert_same_zoo(one_process_zoo.root, z.root)


def test_two_process_zoo_build_equals_one_process_build(one_process_zoo, tmp_path):
    one = one_process_zoo
    proc = torchrun("run_bench.py", "build-zoo", "small_cnn_mnist", "--variant", "tiny", "--device", "cpu",
                    "--out", str(tmp_path / "two"))
    assert proc.stdout.count("built small_cnn_mnist") == 1  # rank 0 alone reports
    two = tmp_path / "two"
    assert not (tmp_path / ".two.work").exists()  # shards assembled, work folder removed
    assert_same_zoo(one.root, two)
    from wsbench.zoo import load_zoo

    stats = load_zoo(two).card.recipe["build_stats"]
    assert stats["processes"] == 2 and stats["runs_trained_now"] == 8  # both ranks' runs counted once


RUN_ARGS = ["--method", "mlp", "--zoo", "small_cnn_mnist", "--zoo-variant", "tiny", "--task", "property_prediction",
            "--preset", "quick", "--device", "cpu"]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """One torchrun launch: the DDP checks of distributed_worker.py, then `run_bench.py RUN_ARGS`
    (the tiny zoo is built first by this process, as the encoder test's reference run needs it)."""
    from wsbench.zoo_store import open_zoo

    with one_thread():
        open_zoo("small_cnn_mnist", variant="tiny")  # auto-built once per test session
    tmp = tmp_path_factory.mktemp("ddp")
    proc = torchrun(str(ROOT / "tests" / "distributed_worker.py"), str(tmp / "report.json"), "--quiet", *RUN_ARGS,
                    "--results-dir", str(tmp / "results"), "--runs-dir", str(tmp / "runs"))
    return json.loads((tmp / "report.json").read_text()), tmp / "results", proc


def test_two_process_encoder_run_writes_one_record_like_a_single_process(two_process_run, tmp_path):
    from wsbench.cli import build_parser
    from wsbench.runner import RunRequest, run_benchmark

    _, results, proc = two_process_run
    a = build_parser().parse_args(["run", *RUN_ARGS])
    with one_thread():
        single = run_benchmark(RunRequest(method=a.method, zoo=a.zoo, task=a.task, zoo_variant=a.zoo_variant,
                                          preset=a.preset, device=a.device, results_dir=tmp_path / "one",
                                          runs_dir=tmp_path / "runs", progress=False, command="python run_bench.py",
                                          log=lambda _m: None))
    lines = (results / "property_prediction.jsonl").read_text().splitlines()
    assert len(lines) == 1 and proc.stdout.count("record(s) appended") == 1  # rank 0 alone writes and reports
    rec, ref = json.loads(lines[0]), single[0].as_dict()
    assert sorted(rec) == sorted(ref) and sorted(rec["extra"]) == sorted(ref["extra"])
    assert sorted(rec["metrics"]) == sorted(ref["metrics"])
    assert rec["run_key"] == ref["run_key"]  # the same run, recorded once
    assert rec["device"].endswith("x2 processes (torchrun)") and not ref["device"].endswith("(torchrun)")


def test_ddp_averages_gradients_and_keeps_the_ranks_equal(two_process_run):
    report = two_process_run[0]
    assert report["world"] == 2 and report["backend"] == "gloo"
    assert report["grad_diff"] < 1e-6  # DDP gradient == mean of the ranks' local gradients
    for method, r in report["encoders"].items():
        assert r["params_max_diff"] == 0.0, method  # same weights on both ranks after training
        assert r["history_equal"] and r["best_epoch_equal"] and r["n_epochs"] == 4, method


def test_reconstruction_under_torchrun_is_refused_before_any_work(monkeypatch, tmp_path):
    from wsbench.errors import ConfigError
    from wsbench.runner import RunRequest, run_benchmark

    monkeypatch.setattr(distributed, "world", lambda: 2)  # as under a 2-process launch
    with pytest.raises(ConfigError, match="runs in one process"):
        run_benchmark(RunRequest(method="magnitude_prune", zoo="cifar10_resnet", device="cpu", save=False,
                                 results_dir=tmp_path, runs_dir=tmp_path / "runs", log=lambda _m: None))
