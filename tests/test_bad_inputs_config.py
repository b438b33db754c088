"""The bad-input catalogue, part 3: config files, option values of every type, seeds and output
folders. Through the real CLI: exit 2, one error line naming what is wrong, nothing written."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from bad_input_helpers import (assert_untouched, assert_user_error, cli, instant_small_cnn_builder, make_zoo,
                               snapshot)
from wsbench.cli import main
from wsbench.errors import ConfigError
from wsbench.files import sweep_leftovers, temp_name
from wsbench.options import Range, parse_options


@pytest.fixture
def zoo(tmp_path: Path) -> Path:
    return make_zoo(tmp_path / "zoo")


def _config(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("content,needles", [
    (b"lr: \xff\xfe\n", ["not UTF-8"]),
    (b"task: [1, 2]\n", ["'task' must be a mapping", "list"]),
    (b"groups: 3\n", ["'groups' must be a mapping"]),
])
def test_bad_config_file_contents(content, needles, zoo, tmp_path, capsys):
    before = snapshot(zoo)
    rc, _, err = cli(["--method", "mlp", "--zoo", str(zoo), "--config", str(_config(tmp_path, content))],
                     tmp_path, capsys)
    assert_user_error(rc, err, "cfg.yaml", *needles)
    assert_untouched(before, tmp_path, zoo)


def test_config_that_is_a_folder(zoo, tmp_path, capsys):
    rc, _, err = cli(["--method", "mlp", "--zoo", str(zoo), "--config", str(tmp_path)], tmp_path, capsys)
    assert_user_error(rc, err, "is a folder")


@pytest.mark.parametrize("sets,needles", [
    (["task.max_train=true"], ["'max_train'", "an integer", "True"]),
    (["task.lr=.nan"], ["'lr'", "finite", "nan"]),
    (["task.lr=.inf"], ["'lr'", "finite", "inf"]),
    (["task.epochs=2.5"], ["'epochs'", "an integer"]),
    (["task.amsgrad=yes please"], ["'amsgrad'", "true or false"]),
    (["task.epoch=3"], ["unknown option(s) ['epoch']", "did you mean 'epochs'"]),
    (["hidden_dim=.nan"], ["method 'mlp'", "'hidden_dim'", "an integer"]),
    (["n_hidden=-1"], ["method 'mlp'", "'n_hidden'", ">= 0"]),
])
def test_option_values_of_the_wrong_type_or_range(sets, needles, zoo, tmp_path, capsys):
    """Refused before anything is trained or written (no empty run folder either)."""
    before = snapshot(zoo)
    argv = ["--method", "mlp", "--zoo", str(zoo)]
    for item in sets:
        argv += ["--set", item]
    rc, _, err = cli(argv, tmp_path, capsys)
    assert_user_error(rc, err, *needles)
    assert_untouched(before, tmp_path, zoo)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("seed", ["99999999999999999999", "-1"])
def test_seed_out_of_range(seed, zoo, tmp_path, capsys):
    rc, _, err = cli(["--method", "mlp", "--zoo", str(zoo), "--seed", seed], tmp_path, capsys)
    assert_user_error(rc, err, "seed", "4294967295")


def test_runs_dir_that_is_a_file(zoo, tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep")
    capsys.readouterr()
    rc = main(["--quiet", "--method", "magnitude_prune", "--zoo", str(zoo), "--results-dir", str(tmp_path / "res"),
               "--runs-dir", str(blocker / "runs")])
    assert_user_error(rc, capsys.readouterr().err, "--runs-dir", "is a file")
    assert blocker.read_text() == "keep" and not (tmp_path / "res").exists()


@pytest.mark.parametrize("sub", ["", "inner"])
def test_leaderboard_out_that_is_or_lies_under_a_file(sub, tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep")
    out = blocker / sub if sub else blocker
    rc, _, err = cli(["leaderboard", "--results-dir", str(results), "--out", str(out)], tmp_path, capsys)
    assert_user_error(rc, err, "--out", "is a file, not a folder")
    assert blocker.read_text() == "keep"


def test_a_successful_run_leaves_no_empty_run_folder(zoo, tmp_path, capsys):
    rc, _, err = cli(["--method", "magnitude_prune", "--zoo", str(zoo), "--set", "task.eval_limit=16"], tmp_path, capsys)
    assert rc == 0, err
    assert not (tmp_path / "runs").exists()  # made by a method that checkpoints (NeRN), when it first saves


# ----------------------------------------------------------------------------- leftovers of killed writers

def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_sweep_removes_what_a_killed_writer_left_and_nothing_else(tmp_path):
    dead = _dead_pid()
    left = [tmp_path / f".a.json.tmp-{dead}", tmp_path / f".zoo.staging-{dead}-x1y2", tmp_path / f".zoo.old-{dead}",
            tmp_path / f".p.png.tmp-{dead}.png"]
    left[0].write_text("half")
    left[1].mkdir()
    (left[1] / "members.parquet").write_text("half")
    left[2].mkdir()
    left[3].write_bytes(b"")
    mine = temp_name(tmp_path / "b.json")  # this process is alive: its work in progress stays
    mine.write_text("writing")
    user = [tmp_path / ".bashrc", tmp_path / "notes.tmp-12", tmp_path / f".x.tmp-{dead}-not-ours"]
    for p in user[:2]:
        p.write_text("user")
    removed = sweep_leftovers(tmp_path, names={"zoo"})
    assert sorted(removed) == sorted(left[1:3])
    assert sorted(sweep_leftovers(tmp_path)) == sorted([left[0], left[3], user[2]] if user[2].exists() else
                                                       [left[0], left[3]])
    assert mine.exists() and all(p.exists() for p in user[:2])


def test_nern_checkpoint_temp_file_of_a_killed_run_is_swept_on_resume(tmp_path):
    from wsbench.methods.nern.checkpoint import load_checkpoint

    dead = _dead_pid()
    stale = tmp_path / f".nern_ckpt.m0.safetensors.tmp-{dead}"
    stale.write_bytes(b"\0" * 64)
    assert load_checkpoint(tmp_path, {"member_id": "m0"}) is None
    assert not stale.exists()


def test_failed_build_leaves_no_work_folder(tmp_path, capsys, monkeypatch):
    from wsbench import zoo_builders

    def broken(card, ctx):  # planned its shards, then failed before finishing one
        (ctx.workdir / "shards").mkdir(parents=True)
        (ctx.workdir / "shards" / "plan.json").write_text("{}")
        raise RuntimeError("boom")

    monkeypatch.setitem(zoo_builders.BUILDERS._entries, "siren_inr", broken)
    out = tmp_path / "z"
    with pytest.raises(RuntimeError):
        zoo_builders.build_zoo("siren_mnist", variant="tiny", device="cpu", out=out, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- the option rule itself

DEFAULTS = {"epochs": 3, "lr": 1e-3, "flag": False, "mode": "a", "limit": None, "sizes": [1, 2]}


@pytest.mark.parametrize("given,expected", [
    ({"lr": "1e-3"}, {"lr": 1e-3}), ({"lr": 2}, {"lr": 2.0}), ({"limit": 5}, {"limit": 5}),
    ({"flag": True, "mode": "b"}, {"flag": True, "mode": "b"}), ({"sizes": [3]}, {"sizes": [3]}),
])
def test_parse_options_converts_from_the_defaults(given, expected):
    out = parse_options("t", given, DEFAULTS, choices={"mode": ("a", "b")}, ranges={"lr": Range(0, lo_open=True)})
    assert out == {**DEFAULTS, **expected} and type(out["lr"]) is float


@pytest.mark.parametrize("given,needle", [
    ({"epochs": True}, "'epochs' must be an integer"), ({"epochs": 2.0}, "'epochs' must be an integer"),
    ({"lr": float("nan")}, "finite"), ({"lr": "fast"}, "finite number"), ({"lr": 0}, "'lr' must be > 0"),
    ({"flag": "yes"}, "true or false"), ({"mode": "c"}, "one of ['a', 'b']"), ({"limit": float("inf")}, "finite"),
    ({"sizes": 3}, "a list"), ({"epoch": 3}, "did you mean 'epochs'"), ([1, 2], "must be a mapping"),
])
def test_parse_options_names_the_key_and_the_rule(given, needle):
    with pytest.raises(ConfigError) as e:
        parse_options("task 't'", given, DEFAULTS, choices={"mode": ("a", "b")},
                      ranges={"lr": Range(0, lo_open=True)})
    assert needle in str(e.value) and str(e.value).startswith("task 't': ")


def test_range_descriptions():
    assert Range(0, 1, lo_open=True, hi_open=True).describe() == "in (0, 1)"
    assert Range(1).describe() == ">= 1" and Range(0, lo_open=True).describe() == "> 0"
    assert not Range(0, 1, hi_open=True).contains(1) and Range(0, 1).contains(1)


# ----------------------------------------------------------------------------- names, cards and members

def test_an_unrelated_local_folder_does_not_hide_a_registered_zoo(tmp_path, monkeypatch):
    from bad_input_helpers import toy_card
    from wsbench.registry import ZOOS
    from wsbench.zoo_store import open_zoo

    monkeypatch.setenv("WSBENCH_ZOO_DIR", str(tmp_path / "store"))
    monkeypatch.setitem(ZOOS._entries, "toy_cnn", toy_card())
    make_zoo(tmp_path / "store" / "toy_cnn" / "tiny")
    (tmp_path / "cwd" / "toy_cnn").mkdir(parents=True)  # e.g. a folder of notes about it
    monkeypatch.chdir(tmp_path / "cwd")
    assert open_zoo("toy_cnn", variant="tiny").root == tmp_path / "store" / "toy_cnn" / "tiny"
    make_zoo(tmp_path / "cwd" / "mine")  # a zoo folder given by its name still loads
    assert open_zoo("mine").root == Path("mine")


def test_one_broken_card_fails_only_the_commands_that_use_it(tmp_path, monkeypatch, capsys):
    from wsbench import zoo_card
    from wsbench.errors import DataError
    from wsbench.registry import ZOOS

    cards = tmp_path / "zoos"
    cards.mkdir()
    (cards / "siren_mnist.yaml").write_text((zoo_card.CARDS_DIR / "siren_mnist.yaml").read_text())
    (cards / "typo_zoo.yaml").write_text("name: typo_zoo\nkind: cnn\narchs: [oops]\n")
    monkeypatch.setattr(zoo_card, "CARDS_DIR", cards)
    found = zoo_card.registered_cards()
    assert isinstance(found["siren_mnist"], zoo_card.ZooCard) and isinstance(found["typo_zoo"], DataError)

    monkeypatch.setattr(ZOOS, "_broken", {"typo_zoo": found["typo_zoo"]})
    rc, out, err = cli(["list"], tmp_path, capsys)
    assert rc == 0 and "typo_zoo" in out and "BROKEN CARD" in out and "siren_mnist" in out, err
    rc, _, err = cli(["--method", "mlp", "--zoo", "typo_zoo"], tmp_path, capsys)
    assert_user_error(rc, err, "typo_zoo.yaml")
    rc, _, err = cli(["--method", "mlp", "--zoo", str(make_zoo(tmp_path / "z")), "--set", "task.epochs=0"],
                     tmp_path, capsys)
    assert_user_error(rc, err, "'epochs' must be >= 1")  # other zoos get as far as their own checks


def test_non_finite_weights_are_reported_by_member_id(tmp_path):
    from wsbench.errors import IntegrityError
    from wsbench.zoo import load_zoo

    zoo = load_zoo(make_zoo(tmp_path / "zoo", n=8))
    ws = zoo.weights(split="test")
    ws.tensors["fc.bias"][1, 0] = float("nan")
    with pytest.raises(IntegrityError) as e:
        ws.check_finite("zoo toy_cnn: ", ids=zoo.split("test")["id"].tolist())
    assert "member(s) ['m3']" in str(e.value) and "'fc.bias'" in str(e.value)


def test_unwritable_runs_dir_and_leaderboard_out_are_refused_up_front(zoo, tmp_path, capsys, monkeypatch):
    import wsbench.files as files_mod

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = files_mod.os.access
    monkeypatch.setattr(files_mod.os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    capsys.readouterr()
    rc = main(["--quiet", "--method", "magnitude_prune", "--zoo", str(zoo), "--results-dir", str(tmp_path / "res"),
               "--runs-dir", str(locked / "runs")])
    assert_user_error(rc, capsys.readouterr().err, "--runs-dir", "is not writable")
    (tmp_path / "results").mkdir()
    rc, _, err = cli(["leaderboard", "--results-dir", str(tmp_path / "results"), "--out", str(locked / "lb")],
                     tmp_path, capsys)
    assert_user_error(rc, err, "--out", "is not writable")
    assert list(locked.iterdir()) == []


def test_a_build_killed_before_its_rename_is_swept_by_the_next_build(tmp_path, capsys, monkeypatch):
    instant_small_cnn_builder(tmp_path, monkeypatch)
    dead = _dead_pid()
    stale = tmp_path / f".z.staging-{dead}-k3j2"  # what a SIGKILLed build of z left
    (stale / "weights").mkdir(parents=True)
    other = tmp_path / f".notes.staging-{dead}-a1"  # not z's: left alone
    other.mkdir()
    rc, _, err = cli(["build-zoo", "small_cnn_mnist", "--variant", "tiny", "--device", "cpu", "--out",
                      str(tmp_path / "z")], tmp_path, capsys)
    assert rc == 0, err
    assert not stale.exists() and other.exists() and (tmp_path / "z" / "zoo.yaml").is_file()



def test_a_typo_under_a_group_fails_before_any_work(zoo, tmp_path, capsys):
    """NeRN's paper preset configures groups (resnet20, resnet56); a misspelt key under one group used to
    pass the up-front check and fail only when that group's member came, after the others trained."""
    before = snapshot(zoo)
    cfg = _config(tmp_path, b"groups:\n  resnet56: {iteratons: 5}\n")
    rc, _, err = cli(["--method", "magnitude_prune", "--zoo", str(zoo), "--config", str(cfg)], tmp_path, capsys)
    assert_user_error(rc, err, "'iteratons'", "in groups.resnet56")
    assert_untouched(before, tmp_path, zoo)
    cfg = _config(tmp_path, b"groups:\n  d2w8: {hidden_dm: 5}\n")
    rc, _, err = cli(["--method", "mlp", "--zoo", str(zoo), "--config", str(cfg)], tmp_path, capsys)
    assert_user_error(rc, err, "'hidden_dm'", "did you mean 'hidden_dim'", "in groups.d2w8")
