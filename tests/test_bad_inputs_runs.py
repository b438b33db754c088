"""Bad-input catalogue, part 2: data, weights in use, results files, interrupted and concurrent runs, zoo builds.

Same contract as part 1 (test_bad_inputs.py): one clear line naming the problem and the
file/option, exit 2 (130 when interrupted), and nothing partial or modified left behind.
Most cases run a real (tiny) magnitude_prune reconstruction on MNIST from the data mirror.
"""
from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from wsbench.cli import main
from wsbench.results import read_records
from bad_input_helpers import (DATA_DIR, REPO, _isolated_store, assert_user_error, cli, make_zoo,  # noqa: F401
                               run_on, snapshot, zoo)

needs_data = pytest.mark.skipif(not (DATA_DIR / "mnist" / "test.parquet").is_file(),
                                reason=f"the MNIST mirror {DATA_DIR}/mnist is not available")
QUICK = ["--set", "task.eval_limit=32", "--set", "budgets=[0.5]"]
ONE = QUICK + ["--member", "m3"]  # one network, one budget: one record per seed


pytestmark = pytest.mark.usefixtures("_isolated_store")  # zoo store in tmp, real data, no network


def result_lines(tmp_path: Path) -> list[str]:
    f = tmp_path / "res" / "reconstruction.jsonl"
    return f.read_text().splitlines() if f.exists() else []


# ----------------------------------------------------------------------------- data

def test_missing_data_directory(zoo, tmp_path, capsys, monkeypatch):
    missing = tmp_path / "no_such_data"
    monkeypatch.setenv("WSBENCH_DATA_DIR", str(missing))
    before = snapshot(zoo)
    rc, _, err = cli(run_on(zoo, *QUICK), tmp_path, capsys)
    assert_user_error(rc, err, "mnist", str(missing), "WSBENCH_DATA_DIR", "ylecun/mnist")
    assert snapshot(zoo) == before and result_lines(tmp_path) == []
    assert not missing.exists()


def test_data_directory_not_set(zoo, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WSBENCH_DATA_DIR")
    rc, _, err = cli(run_on(zoo, *QUICK), tmp_path, capsys)
    assert_user_error(rc, err, "WSBENCH_DATA_DIR is not set", "mnist")
    assert result_lines(tmp_path) == []


def _mirror_with(tmp_path: Path, table_or_bytes) -> Path:
    data = tmp_path / "data"
    (data / "mnist").mkdir(parents=True)
    f = data / "mnist" / "test.parquet"
    if isinstance(table_or_bytes, bytes):
        f.write_bytes(table_or_bytes)
    else:
        pq.write_table(table_or_bytes, f)
    return f


def _real_rows(n: int = 8) -> pa.Table:
    return pq.read_table(DATA_DIR / "mnist" / "test.parquet").slice(0, n)


@needs_data
@pytest.mark.parametrize("case,needles", [
    ("wrong_columns", ["wrong schema", "image"]),
    ("not_parquet", ["not a readable parquet"]),
    ("labels_out_of_range", ["labels must lie in 0..9"]),
    ("not_images", ["could not be decoded"]),
])
def test_dataset_file_of_the_wrong_schema(case, needles, zoo, tmp_path, capsys, monkeypatch):
    rows = _real_rows()
    if case == "wrong_columns":
        content = pa.table({"pixels": rows.column("image").combine_chunks().field("bytes"), "label": rows["label"]})
    elif case == "not_parquet":
        content = b"label,image\n3,xyz\n"
    elif case == "labels_out_of_range":
        content = rows.set_column(rows.schema.get_field_index("label"), "label", pa.array([12] * 8, pa.int64()))
    else:
        img = rows.column("image").combine_chunks()
        junk = pa.StructArray.from_arrays([pa.array([b"not a png"] * 8, pa.binary()), img.field("path")],
                                          fields=[img.type.field(0), img.type.field(1)])
        content = rows.set_column(rows.schema.get_field_index("image"), "image", junk)
    f = _mirror_with(tmp_path, content)
    monkeypatch.setenv("WSBENCH_DATA_DIR", str(f.parent.parent))
    before = snapshot(zoo, f.parent)
    rc, _, err = cli(run_on(zoo, *QUICK), tmp_path, capsys)
    assert_user_error(rc, err, str(f), *needles)
    assert snapshot(zoo, f.parent) == before and result_lines(tmp_path) == []


# ----------------------------------------------------------------------------- weights and splits in use

@needs_data
@pytest.mark.parametrize("value,needle", [(float("nan"), "NaN"), (float("inf"), "Inf")])
def test_non_finite_weights(value, needle, tmp_path, capsys):
    root = make_zoo(tmp_path / "zoo", fill=value)
    before = snapshot(root)
    rc, _, err = cli(run_on(root, *QUICK), tmp_path, capsys)
    assert_user_error(rc, err, needle, "toy_cnn", "convs.0.weight")
    assert snapshot(root) == before and result_lines(tmp_path) == []


@needs_data
def test_empty_split(zoo, tmp_path, capsys):
    rc, _, err = cli(run_on(zoo, *QUICK, "--set", "task.split=holdout"), tmp_path, capsys)
    assert_user_error(rc, err, "split 'holdout'", "empty", "train")
    assert result_lines(tmp_path) == []


# ----------------------------------------------------------------------------- results files

@needs_data
def test_results_file_with_a_corrupted_line(zoo, tmp_path, capsys):
    assert cli(run_on(zoo, *ONE, "--seeds", "0", "1"), tmp_path, capsys)[0] == 0
    lines = result_lines(tmp_path)
    assert len(lines) == 2
    path = tmp_path / "res" / "reconstruction.jsonl"
    path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2] + "\n")  # seed 1's line torn
    with pytest.warns(UserWarning, match=r"reconstruction\.jsonl:2"):
        rc, _, err = cli(run_on(zoo, *ONE, "--seeds", "0", "1"), tmp_path, capsys, quiet=False)
    assert rc == 0, err
    records = read_records(tmp_path / "res")
    assert sorted(r.seed for r in records) == [0, 1]  # seed 0 kept (not re-run), seed 1 re-run
    assert "already recorded" in err
    lb = tmp_path / "lb"
    with pytest.warns(UserWarning, match=r"reconstruction\.jsonl:2"):
        rc, out, err = cli(["leaderboard", "--results-dir", str(tmp_path / "res"), "--out", str(lb)], tmp_path, capsys)
    assert rc == 0, err
    assert "magnitude_prune" in "".join(p.read_text() for p in lb.rglob("*.md"))


@needs_data
def test_disk_full_while_appending_results(zoo, tmp_path, capsys, monkeypatch):
    import wsbench.results as results_mod

    assert cli(run_on(zoo, *ONE, "--seed", "0"), tmp_path, capsys)[0] == 0
    path = tmp_path / "res" / "reconstruction.jsonl"
    before = path.read_bytes()
    real_write = os.write

    def full_disk(fd, data):
        real_write(fd, data[: len(data) // 3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results_mod.os, "write", full_disk)
    rc, _, err = cli(run_on(zoo, *ONE, "--seed", "1"), tmp_path, capsys)
    assert_user_error(rc, err, str(path), "No space left")
    assert path.read_bytes() == before


@needs_data
@pytest.mark.parametrize("where", ["proc", "file"])
def test_unwritable_results_directory(where, zoo, tmp_path, capsys):
    if where == "proc":
        res = Path("/proc/wsbench-results")  # read-only for every user, root included
    else:
        res = tmp_path / "res_is_a_file"
        res.write_text("not a folder")
    capsys.readouterr()
    rc = main(["--quiet", *run_on(zoo, *QUICK), "--results-dir", str(res), "--runs-dir", str(tmp_path / "runs")])
    assert_user_error(rc, capsys.readouterr().err, str(res), "cannot write results")
    if where == "file":
        assert res.read_text() == "not a folder"


def test_unwritable_results_directory_is_found_before_the_run(zoo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WSBENCH_DATA_DIR", str(tmp_path / "no_data"))  # a late check fails on data first
    capsys.readouterr()
    rc = main(["--quiet", *run_on(zoo, *QUICK), "--results-dir", "/proc/wsbench-results",
               "--runs-dir", str(tmp_path / "runs")])
    assert_user_error(rc, capsys.readouterr().err, "/proc/wsbench-results")


# ----------------------------------------------------------------------------- interrupted and concurrent runs

def _interrupt_seed(monkeypatch, seed: int) -> dict:
    """Ctrl-C during the reconstruction of `seed` while the returned switch['on'] is True."""
    from wsbench.methods.compression import MagnitudePrune

    real = MagnitudePrune.reconstruct
    switch = {"on": True}

    def reconstruct(self, target, ctx):
        if switch["on"] and ctx.seed == seed:
            raise KeyboardInterrupt
        return real(self, target, ctx)

    monkeypatch.setattr(MagnitudePrune, "reconstruct", reconstruct)
    return switch


@needs_data
def test_interrupted_run_resumes_without_duplicates(zoo, tmp_path, capsys, monkeypatch):
    argv = run_on(zoo, *ONE, "--seeds", "0", "1", "2")
    switch = _interrupt_seed(monkeypatch, 1)
    rc, _, err = cli(argv, tmp_path, capsys)
    assert rc == 130 and "interrupted" in err and "Traceback" not in err
    assert [json.loads(line)["seed"] for line in result_lines(tmp_path)] == [0]  # finished work kept, whole lines
    switch["on"] = False
    rc, _, err = cli(argv, tmp_path, capsys, quiet=False)
    assert rc == 0, err
    assert "seed 0: already recorded" in err
    seeds = [json.loads(line)["seed"] for line in result_lines(tmp_path)]
    assert seeds == [0, 1, 2]
    rc, out, err = cli(argv, tmp_path, capsys)  # a third time: nothing to do
    assert rc == 0 and len(result_lines(tmp_path)) == 3 and "nothing new" in out


@pytest.mark.parametrize("sig,code,word", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_signal_in_a_real_process_exits_cleanly(zoo, tmp_path, sig, code, word):
    """The real signal path: SIGINT (Ctrl-C) or SIGTERM during a reconstruction -> exit 130 / 143, one
    line, no partial record. The child restores Python's SIGINT handler itself: a background job
    (CI, `make test &`) inherits SIGINT ignored."""
    script = (
        "import os, signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "import wsbench.methods.compression as c\n"
        "def boom(self, target, ctx):\n"
        f"    os.kill(os.getpid(), signal.{sig})\n"
        "c.MagnitudePrune.reconstruct = boom\n"
        "from wsbench.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "WSBENCH_DATA_DIR": str(DATA_DIR), "WSBENCH_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-c", script, "--quiet", *run_on(zoo, *QUICK), "--results-dir",
                        str(tmp_path / "res"), "--runs-dir", str(tmp_path / "runs")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if "not available" in r.stderr or "does not exist" in r.stderr:
        pytest.skip("data mirror not available")
    assert r.returncode == code, r.stderr
    assert word in r.stderr and "Traceback" not in r.stderr
    assert result_lines(tmp_path) == []


@needs_data
def test_two_runs_appending_at_once(zoo, tmp_path):
    """Two real processes, same results file: whole lines only, every record once."""
    env = {**os.environ, "WSBENCH_DATA_DIR": str(DATA_DIR), "WSBENCH_CACHE_DIR": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "run_bench.py", "--quiet", *run_on(zoo, *ONE),
                               "--set", "budgets=[0.2,0.4,0.6,0.8]", "--seeds", *[str(s + 10 * k) for s in range(3)],
                               "--results-dir", str(tmp_path / "res"), "--runs-dir", str(tmp_path / "runs")],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    lines = result_lines(tmp_path)
    assert len(lines) == 2 * 3 * 4
    records = [json.loads(line) for line in lines]  # every line parses whole
    assert len({r["record_id"] for r in records}) == 24
    assert sorted({r["seed"] for r in records}) == [0, 1, 2, 10, 11, 12]
    assert len(read_records(tmp_path / "res")) == 24


@needs_data
def test_same_run_twice_at_once_is_recorded_once(zoo, tmp_path, capsys, monkeypatch):
    import wsbench.runner as runner

    argv = run_on(zoo, *ONE, "--seed", "0")
    real_append = runner.append_records
    state = {"nested": False}

    def append_after_a_twin(results_dir, records, **kwargs):
        if not state["nested"]:  # the twin run finishes first, while this one is about to append
            state["nested"] = True
            assert main(["--quiet", *argv, "--results-dir", str(tmp_path / "res"),
                         "--runs-dir", str(tmp_path / "runs")]) == 0
        return real_append(results_dir, records, **kwargs)

    monkeypatch.setattr(runner, "append_records", append_after_a_twin)
    rc, out, _ = cli(argv, tmp_path, capsys)
    assert rc == 0 and len(result_lines(tmp_path)) == 1
    assert "0 of 1 record(s) appended" in out and "recorded meanwhile by another process" in out


# ----------------------------------------------------------------------------- zoo builds

def _toy_weights():
    from bad_input_helpers import toy_card
    from wsbench.archs import build_arch

    card = toy_card()
    sd = build_arch("small_cnn", **card.archs["cnn"]["kwargs"]).state_dict()
    members = pd.DataFrame({"id": ["a", "b"], "split": ["train", "test"], "group": "cnn", "row": [0, 1]})
    return card, members, {"cnn": {k: torch.stack([v, v + 1]) for k, v in sd.items()}}


@pytest.mark.parametrize("stage", ["save_file", "write_manifest"])
def test_ctrl_c_while_writing_a_zoo_leaves_nothing(stage, tmp_path, monkeypatch):
    import wsbench.zoo as zoo_mod

    card, members, weights = _toy_weights()

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo_mod, stage, interrupted)
    with pytest.raises(KeyboardInterrupt):
        zoo_mod.write_zoo(tmp_path / "z", card, members, weights)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_overwriting_a_zoo_keeps_the_old_one(tmp_path, monkeypatch):
    import wsbench.zoo as zoo_mod

    old = make_zoo(tmp_path / "z")
    before = snapshot(old)
    card, members, weights = _toy_weights()
    monkeypatch.setattr(zoo_mod, "write_manifest", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        zoo_mod.write_zoo(old, card, members, weights, overwrite=True)
    monkeypatch.undo()
    assert snapshot(old) == before and sorted(p.name for p in tmp_path.iterdir()) == ["z"]
    assert len(zoo_mod.load_zoo(old).members) == 4


@needs_data
def test_ctrl_c_during_a_zoo_build_then_resume(tmp_path, capsys, monkeypatch, one_thread):
    """Ctrl-C after the first shard: exit 130, no zoo folder, the finished shard kept; the rebuild
    trains only the missing shards and its zoo holds the kept shard's networks unchanged."""
    from safetensors.torch import load_file

    import wsbench.zoo_builders.small_cnn as builder
    from wsbench.zoo import load_zoo

    real, calls = builder.train_shard, {"n": 0, "interrupt_at": 2}

    def train_shard(*a, **k):
        calls["n"] += 1
        if calls["n"] == calls["interrupt_at"]:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(builder, "train_shard", train_shard)
    store = tmp_path / "zoo_store" / "small_cnn_mnist"
    argv = ["build-zoo", "small_cnn_mnist", "--variant", "tiny", "--device", "cpu"]
    capsys.readouterr()
    assert main(argv) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (store / "tiny").exists()  # no zoo folder, not even a partial one
    kept = sorted((store / ".tiny.work" / "shards").glob("*.safetensors"))
    assert len(kept) == 1  # the finished shard is kept for the resume
    kept_tensors = load_file(str(kept[0]))
    kept_members = pd.read_parquet(kept[0].with_suffix(".parquet"))

    calls.update(n=0, interrupt_at=-1)
    assert main(argv) == 0
    said = re.search(r"resuming, 1 of (\d+) shards already built", capsys.readouterr().err)
    assert said, "the rebuild does not say it resumes"
    assert calls["n"] == int(said.group(1)) - 1 >= 1  # only the missing shards were trained
    assert not (store / ".tiny.work").exists()
    zoo = load_zoo(store / "tiny")
    rows = torch.as_tensor(zoo.members.set_index("id").loc[kept_members["id"], "row"].tolist())
    ws = zoo.weights(check_finite=False)
    for key, t in kept_tensors.items():
        assert torch.equal(ws.tensors[key][rows], t[torch.as_tensor(kept_members["shard_row"].tolist())])
