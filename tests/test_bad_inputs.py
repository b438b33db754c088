"""Bad-input catalogue, part 1: names, config values and zoo folders, driven through the real CLI.

Every case must end in ONE clear line naming the problem and the file/option, exit code 2
(user error), no traceback, and no file created or modified anywhere (zoo folder, results,
runs). Cases that are not handled right yet are strict xfails whose reason is the fix needed.
Part 2 (data, results files, interrupted and concurrent runs, zoo builds) is
test_bad_inputs_runs.py; both use the helpers in bad_input_helpers.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from bad_input_helpers import (REPO, _isolated_store, assert_untouched, assert_user_error, cli, edit_zoo,  # noqa: F401
                               make_zoo, run_on, snapshot, zoo)  # (fixtures: _isolated_store, zoo)

# ----------------------------------------------------------------------------- names

@pytest.mark.parametrize("argv,needles", [
    (["--method", "magnitude_prun", "--zoo", "cifar10_resnet"], ["unknown method 'magnitude_prun'", "'magnitude_prune'"]),
    (["--method", "magnitude_prune", "--zoo", "cifar10_resnt"], ["unknown zoo 'cifar10_resnt'", "'cifar10_resnet'"]),
    (["--method", "lowrank", "--zoo", "cifar10_resnet"], ["unknown method", "'low_rank'"]),
])
def test_unknown_names_suggest_closest(argv, needles, tmp_path, capsys):
    rc, _, err = cli(argv, tmp_path, capsys)
    assert_user_error(rc, err, *needles)
    assert_untouched({}, tmp_path, tmp_path / "zoo_store")


def test_unknown_task_suggests_closest(zoo, tmp_path, capsys):
    before = snapshot(zoo)
    rc, _, err = cli(run_on(zoo, "--task", "reconstrution"), tmp_path, capsys)
    assert_user_error(rc, err, "unknown task 'reconstrution'", "'reconstruction'")
    assert_untouched(before, tmp_path, zoo)


def test_unknown_task_is_reported_before_any_zoo_is_built(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WSBENCH_DATA_DIR", str(tmp_path / "no_data"))  # building would fail differently
    rc, _, err = cli(["--method", "magnitude_prune", "--zoo", "cifar10_resnet", "--zoo-variant", "tiny",
                      "--task", "reconstrction"], tmp_path, capsys)
    assert_user_error(rc, err, "unknown task", "'reconstruction'")
    assert not (tmp_path / "zoo_store").exists()


def test_zoo_path_that_does_not_exist(tmp_path, capsys):
    rc, _, err = cli(run_on(tmp_path / "nowhere" / "myzoo"), tmp_path, capsys)
    assert_user_error(rc, err, str(tmp_path / "nowhere" / "myzoo"), "does not exist")


def test_unknown_zoo_variant(tmp_path, capsys):
    rc, _, err = cli(["--method", "magnitude_prune", "--zoo", "cifar10_resnet", "--zoo-variant", "tinyy"],
                     tmp_path, capsys)
    assert_user_error(rc, err, "no variant 'tinyy'", "tiny")
    assert_untouched({}, tmp_path, tmp_path / "zoo_store")


def test_usage_error_through_subprocess(tmp_path):
    r = subprocess.run([sys.executable, "run_bench.py", "--method", "nosuchmethod", "--zoo", "cifar10_resnet",
                        "--results-dir", str(tmp_path / "res"), "--runs-dir", str(tmp_path / "runs")],
                       cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "WSBENCH_ZOO_DIR": str(tmp_path / "store")})
    assert r.returncode == 2, r.stderr
    assert "unknown method 'nosuchmethod'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "res").exists() and not (tmp_path / "store").exists()


# ----------------------------------------------------------------------------- method and task applicability

def test_inr_zoo_passed_to_a_cnn_only_method(tmp_path, capsys):
    root = make_zoo(tmp_path / "inr", arch="siren", kwargs={}, kind="inr", name="toy_siren")
    before = snapshot(root)
    rc, _, err = cli(run_on(root, "--task", "reconstruction"), tmp_path, capsys)
    assert_user_error(rc, err, "toy_siren", "inr")
    assert_untouched(before, tmp_path, root)


def test_conv_only_method_on_an_mlp_zoo(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WSBENCH_DATA_DIR", str(tmp_path / "no_data"))  # refused before any data is read
    root = make_zoo(tmp_path / "mlp", arch="mlp", kwargs={"widths": [4, 8, 3]}, name="toy_mlp")
    before = snapshot(root)
    rc, _, err = cli(run_on(root, "--set", "task.eval_limit=8"), tmp_path, capsys)
    assert_user_error(rc, err, "magnitude_prune", "conv")
    assert_untouched(before, tmp_path, root)


def test_method_asked_for_a_task_it_cannot_do(zoo, tmp_path, capsys, monkeypatch):
    """A reconstructor on an encoder task: an encoder task that is registered, or a stand-in one."""
    from wsbench.registry import TASKS
    from wsbench.tasks.base import Task

    encoder_tasks = [t for t in TASKS.names() if TASKS.get(t).capability == "encoder"]
    if not encoder_tasks:
        class StandInEncoderTask(Task):
            name, capability, zoo_kinds = "standin_property_prediction", "encoder", ("cnn",)

        monkeypatch.setitem(TASKS._entries, StandInEncoderTask.name, StandInEncoderTask)
        encoder_tasks = [StandInEncoderTask.name]
    before = snapshot(zoo)
    rc, _, err = cli(run_on(zoo, "--task", encoder_tasks[0]), tmp_path, capsys)
    assert_user_error(rc, err, "magnitude_prune", "reconstructor", encoder_tasks[0])
    assert_untouched(before, tmp_path, zoo)


def _encoder_parts() -> None:
    """Import the encoder methods and tasks (until wsbench/builtins.py imports them)."""
    import importlib

    for mod in ("methods.dwsnet", "methods.mlp", "methods.stat_features", "tasks.property_prediction",
                "tasks.inr_classification"):
        try:
            importlib.import_module(f"wsbench.{mod}")
        except ModuleNotFoundError:
            pytest.skip(f"wsbench.{mod} is not in this checkout")


def test_encoder_that_cannot_read_the_zoo_architecture(tmp_path, capsys, monkeypatch):
    """dwsnet reads plain feed-forward chains only: a CNN zoo of ResNets is refused before anything runs."""
    _encoder_parts()
    monkeypatch.setenv("WSBENCH_DATA_DIR", str(tmp_path / "no_data"))
    root = make_zoo(tmp_path / "rz", arch="resnet_cifar", kwargs={"depth": 20}, name="toy_resnets")
    before = snapshot(root)
    rc, _, err = cli(run_on(root, "--task", "property_prediction", method="dwsnet"), tmp_path, capsys)
    assert_user_error(rc, err, "dwsnet", "resnet_cifar")
    assert_untouched(before, tmp_path, root)


@pytest.mark.parametrize("method,task", [("dwsnet", "property_prediction"), ("statnn", "property_prediction"),
                                         ("nern", "reconstruction")])
def test_inr_zoo_passed_to_a_cnn_only_method_or_task(method, task, tmp_path, capsys, monkeypatch):
    _encoder_parts()
    monkeypatch.setenv("WSBENCH_DATA_DIR", str(tmp_path / "no_data"))
    root = make_zoo(tmp_path / "inr", arch="siren", kwargs={}, kind="inr", name="toy_siren")
    before = snapshot(root)
    rc, _, err = cli(run_on(root, "--task", task, method=method), tmp_path, capsys)
    assert_user_error(rc, err, "toy_siren", "inr", task)
    assert_untouched(before, tmp_path, root)


def test_cnn_zoo_passed_to_an_inr_task(zoo, tmp_path, capsys):
    _encoder_parts()
    before = snapshot(zoo)
    rc, _, err = cli(run_on(zoo, "--task", "inr_classification", method="dwsnet"), tmp_path, capsys)
    assert_user_error(rc, err, "inr_classification", "toy_cnn", "cnn")
    assert_untouched(before, tmp_path, zoo)


@pytest.mark.parametrize("sets,needles", [
    (["hidden=-1"], ["nern", "'hidden'", ">= 1", "-1"]),
    (["image_batch=0"], ["'image_batch'", ">= 1", "0"]),
    (["weights_batch=1.5"], ["'weights_batch'", "integer", "1.5"]),
    (["optimizer=sgdd"], ["'optimizer'", "ranger", "sgdd"]),
    (["lr=0"], ["'lr'", "> 0"]),
    (["kd_weight=.nan"], ["'kd_weight'", "finite", "nan"]),
    (["augment=1"], ["'augment'", "true or false"]),
    (["prune_sparsities=[1.0]"], ["'prune_sparsities'", "[0, 1)"]),
    (["hiden=64"], ["unknown option(s) ['hiden']", "did you mean 'hidden'"]),
])
def test_bad_nern_config_values(sets, needles, tmp_path, capsys, monkeypatch):
    """Refused before any data or zoo is read (data dir and zoo store are empty)."""
    monkeypatch.setenv("WSBENCH_DATA_DIR", str(tmp_path / "no_data"))
    argv = ["--method", "nern", "--zoo", "cifar10_resnet", "--zoo-variant", "tiny", "--preset", "tiny"]
    for item in sets:
        argv += ["--set", item]
    rc, _, err = cli(argv, tmp_path, capsys)
    assert_user_error(rc, err, *needles)
    assert_untouched({}, tmp_path, tmp_path / "zoo_store")


# ----------------------------------------------------------------------------- config values

@pytest.mark.parametrize("sets,needles", [
    (["budgets=[2.0]"], ["magnitude_prune", "budget", "2.0"]),
    (["budgets=[-0.5]"], ["budget", "-0.5"]),
    (["budgets=[]"], ["budgets", "non-empty"]),
    (["budgets=half"], ["budgets", "half"]),
    (["hidden=64"], ["magnitude_prune", "unknown option(s) ['hidden']", "budgets"]),
    (["task.eval_limits=8"], ["unknown option(s) ['eval_limits']", "did you mean 'eval_limit'"]),
    (["task.eval_limit=0"], ["'eval_limit'", "integer >= 1"]),
    (["task.test_sets=[1]"], ["'test_sets'", "list of names"]),
    (["budgets"], ["--set expects key=value", "budgets"]),
])
def test_bad_config_values(sets, needles, zoo, tmp_path, capsys):
    before = snapshot(zoo)
    argv = run_on(zoo)
    for s in sets:
        argv += ["--set", s]
    rc, _, err = cli(argv, tmp_path, capsys)
    assert_user_error(rc, err, *needles)
    assert_untouched(before, tmp_path, zoo)


def test_set_value_that_is_not_yaml(zoo, tmp_path, capsys):
    rc, _, err = cli(run_on(zoo, "--set", "budgets=[0.3"), tmp_path, capsys)
    assert_user_error(rc, err, "--set", "budgets")


def test_quantize_fractional_bits(zoo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WSBENCH_DATA_DIR", str(tmp_path / "no_data"))  # a late check would fail on data first
    before = snapshot(zoo)
    rc, _, err = cli(run_on(zoo, "--set", "budgets=[2.5]", method="quantize"), tmp_path, capsys)
    assert_user_error(rc, err, "quantize", "2.5")
    assert_untouched(before, tmp_path, zoo)


@pytest.mark.parametrize("content,needles", [
    (None, ["does not exist"]),
    ("budgets: [0.5\n", ["not valid YAML"]),
    ("- 0.5\n- 0.7\n", ["must be a YAML mapping"]),
])
def test_bad_config_file(content, needles, zoo, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    if content is not None:
        cfg.write_text(content)
    before = snapshot(zoo, cfg)
    rc, _, err = cli(run_on(zoo, "--config", str(cfg)), tmp_path, capsys)
    assert_user_error(rc, err, str(cfg), *needles)
    assert_untouched(before, tmp_path, zoo, cfg)


@pytest.mark.parametrize("opt,needles", [
    (["--preset", "papr"], ["no preset 'papr'"]),
    (["--device", "tpu"], ["--device", "tpu"]),
    (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "cuda:99"], ["cuda"]),
])
def test_bad_run_options(opt, needles, zoo, tmp_path, capsys):
    before = snapshot(zoo)
    rc, _, err = cli(run_on(zoo, *opt), tmp_path, capsys)
    assert_user_error(rc, err, *needles)
    assert_untouched(before, tmp_path, zoo)


# ----------------------------------------------------------------------------- zoo folders

def _drop_card(r: Path) -> None:
    (r / "zoo.yaml").unlink()


def _card_edit(**changes):
    def fn(r: Path) -> None:
        d = yaml.safe_load((r / "zoo.yaml").read_text())
        d.update(changes)
        (r / "zoo.yaml").write_text(yaml.safe_dump(d))
    return fn


def _members_edit(fn_df):
    def fn(r: Path) -> None:
        fn_df(pd.read_parquet(r / "members.parquet")).to_parquet(r / "members.parquet")
    return fn


def _dup(df):
    df.loc[1, "id"] = "m0"
    return df


def _weights_edit(key: str, make):
    def fn(r: Path) -> None:
        f = r / "weights" / "cnn.safetensors"
        t = load_file(str(f))
        t[key] = make(t[key])
        save_file(t, str(f))
    return fn


ZOO_CASES = {
    "no_card": (_drop_card, ["no zoo.yaml"]),
    "card_unknown_format_version": (_card_edit(format_version=99), ["zoo.yaml", "format_version 99"]),
    "card_unknown_key": (_card_edit(colour="red"), ["zoo.yaml", "unknown option(s) ['colour']"]),
    "card_not_yaml": (lambda r: (r / "zoo.yaml").write_text("name: [unclosed\n"), ["zoo.yaml", "not valid YAML"]),
    "members_missing_columns": (_members_edit(lambda df: df.drop(columns=["row", "split"])),
                                ["members.parquet", "lacks columns", "row"]),
    "members_duplicate_ids": (_members_edit(_dup), ["members.parquet", "duplicate member ids ['m0']"]),
    "members_not_parquet": (lambda r: (r / "members.parquet").write_bytes(b"id,split\nm0,train\n"),
                            ["members.parquet", "not a readable parquet"]),
    "members_empty": (_members_edit(lambda df: df.iloc[:0]), ["members.parquet", "no members"]),
    "members_unknown_group": (_members_edit(lambda df: df.assign(group="resnet99")), ["members.parquet", "resnet99"]),
    "members_row_out_of_range": (_members_edit(lambda df: df.assign(row=[0, 1, 2, 7])), ["rows outside 0..3"]),
    "split_refers_to_unknown_members": (_card_edit(split_ids={"test": ["m3", "ghost"]}),
                                        ["members.parquet", "unknown members ['ghost']"]),
    "weights_wrong_shape": (_weights_edit("convs.0.weight", lambda t: torch.zeros(4, 4, 1, 5, 5)),
                            ["cnn.safetensors", "convs.0.weight", "shape"]),
    "weights_wrong_dtype": (_weights_edit("fc.weight", lambda t: t.double()),
                            ["cnn.safetensors", "fc.weight", "float64"]),
    "weights_int_dtype": (_weights_edit("fc.bias", lambda t: t.to(torch.int32)), ["cnn.safetensors", "fc.bias", "int32"]),
    "weights_missing_tensor": (lambda r: save_file({k: v for k, v in load_file(str(r / "weights/cnn.safetensors")).items()
                                                    if k != "fc.bias"}, str(r / "weights/cnn.safetensors")),
                               ["cnn.safetensors", "fc.bias"]),
    "weights_file_missing": (lambda r: (r / "weights" / "cnn.safetensors").unlink(), ["cnn.safetensors", "missing"]),
    "weights_not_safetensors": (lambda r: (r / "weights" / "cnn.safetensors").write_bytes(b"\x80\x04K\x01." * 20),
                                ["cnn.safetensors", "not a readable safetensors"]),
    "manifest_missing": (None, ["manifest.json", "no manifest"]),
    "members_test_acc_infinite": (_members_edit(lambda df: df.assign(test_acc=[float("inf"), 0.5, 0.5, 0.5])),
                                  ["members.parquet", "'test_acc' is infinite", "['m0']"]),
    "members_test_acc_strings": (_members_edit(lambda df: df.assign(test_acc="high")),
                                 ["members.parquet", "'test_acc' must hold numbers", "'high'"]),
    "members_row_nan": (_members_edit(lambda df: df.assign(row=[float("nan"), 1.0, 2.0, 3.0])),
                        ["members.parquet", "'row' must hold integers"]),
    "members_row_strings": (_members_edit(lambda df: df.assign(row="a")), ["'row' must hold integers", "'a'"]),
    "card_archs_a_list": (_card_edit(archs=[{"arch": "small_cnn"}]), ["zoo.yaml", "'archs' must be a mapping"]),
    "card_kwargs_a_list": (_card_edit(archs={"cnn": {"arch": "small_cnn", "kwargs": [1, 2]}}),
                           ["zoo.yaml", "archs.cnn.kwargs must be a mapping"]),
    "manifest_path_with_nul": (lambda r: _manifest_add(r, "weights/x\x00y"), ["NUL byte"]),
}


def _manifest_add(root: Path, rel: str) -> None:
    """A manifest entry (added after edit_zoo refreshed the manifest) for a path that cannot exist."""
    m = json.loads((root / "manifest.json").read_text())
    m["files"][rel] = next(iter(m["files"].values()))
    (root / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("case", sorted(ZOO_CASES))
def test_bad_zoo_folder(case, zoo, tmp_path, capsys):
    fn, needles = ZOO_CASES[case]
    if fn is None:
        (zoo / "manifest.json").unlink()
    elif case == "manifest_path_with_nul":
        edit_zoo(zoo, lambda r: None)
        fn(zoo)
    else:
        edit_zoo(zoo, fn)
    before = snapshot(zoo)
    rc, _, err = cli(run_on(zoo), tmp_path, capsys)
    assert_user_error(rc, err, *needles)
    assert_untouched(before, tmp_path, zoo)


@pytest.mark.parametrize("how", ["truncated", "bit_flip", "appended"])
def test_weight_file_that_does_not_match_its_manifest(how, zoo, tmp_path, capsys):
    f = zoo / "weights" / "cnn.safetensors"
    data = f.read_bytes()
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "bit_flip":
        data = data[:-5] + bytes([data[-5] ^ 1]) + data[-4:]
    else:
        data += b"\0" * 16
    f.write_bytes(data)
    before = snapshot(zoo)
    rc, _, err = cli(run_on(zoo), tmp_path, capsys)
    assert_user_error(rc, err, "cnn.safetensors", "manifest")
    assert_untouched(before, tmp_path, zoo)


def test_truncated_weight_file_with_refreshed_manifest(zoo, tmp_path, capsys):
    """Truncated before the manifest was written (a half-copied download): the reader must catch it."""
    edit_zoo(zoo, lambda r: (r / "weights/cnn.safetensors").write_bytes((r / "weights/cnn.safetensors").read_bytes()[:300]))
    before = snapshot(zoo)
    rc, _, err = cli(run_on(zoo), tmp_path, capsys)
    assert_user_error(rc, err, "cnn.safetensors", "not a readable safetensors")
    assert_untouched(before, tmp_path, zoo)


def test_zoo_argument_is_a_file(tmp_path, capsys):
    f = tmp_path / "zoo.yaml"
    f.write_text("name: x\n")
    rc, _, err = cli(run_on(f), tmp_path, capsys)
    assert_user_error(rc, err, str(f))
    assert f.read_text() == "name: x\n"


def test_unknown_member(zoo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WSBENCH_DATA_DIR", str(tmp_path / "no_data"))
    before = snapshot(zoo)
    rc, _, err = cli(run_on(zoo, "--member", "m33", "--set", "task.eval_limit=8"), tmp_path, capsys)
    assert_user_error(rc, err, "no member 'm33'", "did you mean")
    assert snapshot(zoo) == before and snapshot(tmp_path / "res") == {}


def test_bad_zoo_through_subprocess(zoo, tmp_path):
    (zoo / "weights" / "cnn.safetensors").write_bytes(b"garbage")
    r = subprocess.run([sys.executable, "run_bench.py", "--method", "magnitude_prune", "--zoo", str(zoo),
                        "--results-dir", str(tmp_path / "res"), "--runs-dir", str(tmp_path / "runs")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "cnn.safetensors" in r.stderr and "Traceback" not in r.stderr
    assert snapshot(tmp_path / "res") == {}  # an empty results folder may exist (checked writable first)
