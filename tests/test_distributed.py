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


def test_two_process_zoo_build_equals_one_process_build(tmp_path):
    from wsbench.zoo_builders import build_zoo

    with one_thread():
        one = build_zoo("small_cnn_mnist", variant="tiny", device="cpu", out=tmp_path / "one", progress=False,
                        log=lambda _m: None)
    proc = torchrun("run_bench.py", "build-zoo", "small_cnn_mnist", "--variant", "tiny", "--device", "cpu",
                    "--out", str(tmp_path / "two"))
    assert proc.stdout.count("built small_cnn_mnist") == 1  # rank 0 alone reports
    two = tmp_path / "two"
    assert not (tmp_path / ".two.work").exists()  # shards assembled, work folder removed
    pd.testing.assert_frame_equal(pd.read_parquet(one.root / "members.parquet"), pd.read_parquet(two / "members.parquet"))
    assert sorted(p.name for p in (one.root / "weights").iterdir()) == sorted(p.name for p in (two / "weights").iterdir())
    for f in (one.root / "weights").iterdir():
        a, b = load_file(str(f)), load_file(str(two / "weights" / f.name))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    from wsbench.zoo import load_zoo

    stats = load_zoo(two).card.recipe["build_stats"]
    assert stats["processes"] == 2 and stats["runs_trained_now"] == 8  # both ranks' runs counted once


def test_two_process_encoder_run_writes_one_record_like_a_single_process(tmp_path):
    from wsbench.runner import RunRequest, run_benchmark

    args = dict(method="mlp", zoo="small_cnn_mnist", zoo_variant="tiny", task="property_prediction", preset="quick",
                device="cpu")
    with one_thread():  # builds the tiny zoo when this session has not yet
        single = run_benchmark(RunRequest(**args, results_dir=tmp_path / "one", runs_dir=tmp_path / "runs1",
                                          progress=False, command="python run_bench.py", log=lambda _m: None))
    torchrun("run_bench.py", "--quiet", "--method", "mlp", "--zoo", "small_cnn_mnist", "--zoo-variant", "tiny",
             "--task", "property_prediction", "--preset", "quick", "--device", "cpu",
             "--results-dir", str(tmp_path / "two"), "--runs-dir", str(tmp_path / "runs2"))
    lines = (tmp_path / "two" / "property_prediction.jsonl").read_text().splitlines()
    assert len(lines) == 1  # rank 0 alone writes
    rec, ref = json.loads(lines[0]), single[0].as_dict()
    assert sorted(rec) == sorted(ref) and sorted(rec["extra"]) == sorted(ref["extra"])
    assert sorted(rec["metrics"]) == sorted(ref["metrics"])
    assert rec["extra"]["run_key"] == ref["extra"]["run_key"]  # the same run, recorded once
    assert rec["device"].endswith("x2 processes (torchrun)") and not ref["device"].endswith("(torchrun)")


def test_ddp_averages_gradients_and_keeps_the_ranks_equal(tmp_path):
    out = tmp_path / "report.json"
    torchrun(str(ROOT / "tests" / "distributed_worker.py"), str(out))
    report = json.loads(out.read_text())
    assert report["world"] == 2 and report["backend"] == "gloo"
    assert report["grad_diff"] < 1e-6  # DDP gradient == mean of the ranks' local gradients
    for method, r in report["encoders"].items():
        assert r["params_max_diff"] == 0.0, method  # same weights on both ranks after training
        assert r["history_equal"] and r["best_epoch_equal"] and r["n_epochs"] == 4, method
