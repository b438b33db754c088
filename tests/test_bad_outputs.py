"""The bad-output catalogue: commands that write a folder never destroy what is not theirs.

Through the real CLI: exit 2, one error line, and every user file byte-identical afterwards."""
from __future__ import annotations

from pathlib import Path

import pytest

from bad_input_helpers import assert_user_error, cli, instant_small_cnn_builder, make_zoo, snapshot


def _user_files(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.txt").write_text("two years of work")
    (folder / "sub" / "d.csv").write_text("a,b\n1,2\n")
    return folder


@pytest.mark.parametrize("overwrite", [False, True])
def test_build_zoo_into_a_folder_of_user_files_is_refused(tmp_path, capsys, overwrite):
    out = _user_files(tmp_path / "mine")
    before = snapshot(out)
    rc, _, err = cli(["build-zoo", "siren_mnist", "--variant", "tiny", "--device", "cpu", "--out", str(out)]
                     + (["--overwrite"] if overwrite else []), tmp_path, capsys)
    assert_user_error(rc, err, str(out), "not a wsbench zoo")
    assert snapshot(out) == before
    assert not list(tmp_path.glob(".mine*"))  # no work or staging folder left beside it


def test_build_zoo_onto_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    rc, _, err = cli(["build-zoo", "siren_mnist", "--variant", "tiny", "--device", "cpu", "--out", str(target)],
                     tmp_path, capsys)
    assert_user_error(rc, err, "not a folder")
    assert target.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_build_zoo_into_an_empty_folder_and_over_its_own_zoo(tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    rc, _, err = cli(["build-zoo", "siren_mnist", "--variant", "tiny", "--device", "cpu", "--out", str(out)],
                     tmp_path, capsys)
    assert rc == 0, err
    rc, _, err = cli(["build-zoo", "siren_mnist", "--variant", "tiny", "--device", "cpu", "--out", str(out),
                      "--overwrite"], tmp_path, capsys)
    assert rc == 0 and (out / "zoo.yaml").is_file(), err


def test_import_zoo_over_a_folder_of_user_files_is_refused_even_with_overwrite(tmp_path, capsys):
    src = make_zoo(tmp_path / "src")  # any source: the output check comes first
    out = _user_files(tmp_path / "mine")
    before = snapshot(out)
    rc, _, err = cli(["import-zoo", "dwsnets_inr", str(src), "imp", "--out", str(out), "--overwrite"], tmp_path, capsys)
    assert_user_error(rc, err, "not a wsbench zoo")
    assert snapshot(out) == before


def test_leaderboard_from_a_missing_results_folder_keeps_the_leaderboard(tmp_path, capsys):
    out = tmp_path / "lb"
    rc, _, err = cli(["leaderboard", "--results-dir", str(tmp_path / "res_ok"), "--out", str(out)], tmp_path, capsys)
    assert rc == 2  # no results folder at all
    (tmp_path / "res_ok").mkdir()
    rc, _, err = cli(["leaderboard", "--results-dir", str(tmp_path / "res_ok"), "--out", str(out)], tmp_path, capsys)
    assert rc == 0 and (out / "README.md").is_file(), err
    before = snapshot(out)
    rc, _, err = cli(["leaderboard", "--results-dir", str(tmp_path / "typo"), "--out", str(out)], tmp_path, capsys)
    assert_user_error(rc, err, "typo", "not a folder of result records")
    assert snapshot(out) == before and not (tmp_path / "typo").exists()


def test_leaderboard_into_a_folder_of_user_files_is_refused(tmp_path, capsys):
    (tmp_path / "res").mkdir()
    out = _user_files(tmp_path / "site")
    (out / "README.md").write_text("# my project\n")
    (out / "plots").mkdir()
    (out / "plots" / "diagram.png").write_bytes(b"\x89PNG")
    before = snapshot(out)
    rc, _, err = cli(["leaderboard", "--results-dir", str(tmp_path / "res"), "--out", str(out)], tmp_path, capsys)
    assert_user_error(rc, err, "not a wsbench leaderboard")
    assert snapshot(out) == before
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    rc, _, err = cli(["leaderboard", "--results-dir", str(tmp_path / "res"), "--out", str(afile)], tmp_path, capsys)
    assert_user_error(rc, err, "not a folder")


def test_record_fields_cannot_inject_html_into_the_leaderboard(tmp_path):
    from test_leaderboard import make, write_results
    from wsbench.leaderboard import generate_leaderboard

    evil = "<script>alert(1)</script>"
    rec = make(method="mlp", preset=evil, device=evil, command=f"run ```\n{evil}", git_commit=evil,
               extra={"preset_description": evil})
    generate_leaderboard(write_results(tmp_path / "results", [rec]), tmp_path / "lb")
    md = (tmp_path / "lb" / "README.md").read_text(encoding="utf-8")
    assert md.count("```") % 2 == 0  # the command cannot close its fence
    assert all("<script>" not in part for part in md.split("```")[::2])  # in a fence markdown shows text
    assert "<script>alert" not in (tmp_path / "lb" / "index.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("preset", ["../../etc/x", "/abs/path", "sub/dir", ".hidden"])
def test_preset_names_cannot_leave_the_presets_folder(preset, tmp_path, capsys):
    rc, _, err = cli(["--method", "nern", "--zoo", "cifar10_resnet", "--preset", preset], tmp_path, capsys)
    assert_user_error(rc, err, "--config")


def test_misspelt_command_suggests_the_closest(tmp_path, capsys):
    rc, _, err = cli(["lis"], tmp_path, capsys)
    assert_user_error(rc, err, "unknown command 'lis'", "did you mean 'list'")


def test_set_reads_1e_minus_3_as_a_number():
    from wsbench.runner import parse_overrides

    assert parse_overrides(["task.lr=1e-3", "a=2E5", "b=1.5e-2", "c=text1e3", "d=1e"]) == {
        "task.lr": 1e-3, "a": 2e5, "b": 1.5e-2, "c": "text1e3", "d": "1e"}


@pytest.mark.parametrize("sets,needles", [(["task.val_fraction=1.5"], ["val_fraction", "in (0, 1)"]),
                                          (["task.val_fraction=0"], ["val_fraction"])])
def test_encoder_task_option_ranges(sets, needles):
    from wsbench.errors import ConfigError
    from wsbench.tasks.encoder_training import task_options

    with pytest.raises(ConfigError) as e:
        task_options("inr_classification", {k.split(".", 1)[1]: float(v) for k, v in (s.split("=") for s in sets)}, {})
    assert all(n in str(e.value) for n in needles)


def test_member_option_on_an_encoder_task_says_what_it_is_for():
    from wsbench.errors import ConfigError
    from wsbench.tasks.encoder_training import task_options

    with pytest.raises(ConfigError, match="--member picks networks to reconstruct"):
        task_options("inr_classification", {"members": ["m0"]}, {})


def test_seeds_given_twice_are_refused(tmp_path, capsys):
    rc, _, err = cli(["--method", "quantize", "--zoo", "cifar10_resnet", "--seeds", "0", "0"], tmp_path, capsys)
    assert_user_error(rc, err, "--seeds 0 0", "twice")


def test_cross_architecture_refuses_eval_groups_that_were_trained_on():
    from types import SimpleNamespace

    from wsbench.errors import ConfigError
    from wsbench.tasks.transfer import CrossArchitecture

    task = CrossArchitecture(train_groups=["a", "b"], eval_groups=["b"])
    zoo = SimpleNamespace(groups=["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"eval_groups \['b'\] are also train_groups"):
        task.eval_groups(zoo, zoo)


def test_two_concurrent_first_builds_of_one_zoo_both_succeed(tmp_path):
    """Two processes building the same zoo into one store (two seeds started at once on an
    auto-built zoo): one builds, the other waits and loads it (one crashed with FileNotFoundError)."""
    import os
    import subprocess
    import sys

    from data_paths import DATA_DIR

    env = dict(os.environ, WSBENCH_DATA_DIR=str(DATA_DIR), WSBENCH_ZOO_DIR=str(tmp_path / "store"))
    import time

    start = time.time() + 6  # both processes, imports done, ask for the zoo at the same moment
    code = ("import time; from wsbench.zoo_store import open_zoo; import wsbench.builtins; "
            f"time.sleep(max(0.0, {start} - time.time())); "
            "z = open_zoo('siren_mnist', variant='tiny'); print(len(z.members))")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    assert [o[0].split()[-1] for o in outs] == ["16", "16"]
    store = tmp_path / "store" / "siren_mnist"
    assert sorted(p.name for p in store.iterdir()) == ["tiny"]  # no work or staging folder left


def test_force_retrains_nern_instead_of_rescoring_its_checkpoint(tmp_path, capsys, monkeypatch):
    from bad_input_helpers import _isolated_store  # noqa: F401

    argv = ["--method", "nern", "--zoo", "cifar10_resnet", "--zoo-variant", "tiny",  # tiny: 256 test images, not 10,000
            "--member", "resnet20_pretrained", "--preset", "tiny", "--device", "cpu", "--set", "iterations=4",
            "--set", "eval_every=2", "--set", "checkpoint_every=2", "--set", "prune_sparsities=[0.0]",
            "--set", "task.eval_limit=32", "--set", "log_every=2"]
    rc, _, err = cli(argv, tmp_path, capsys, quiet=False)
    assert rc == 0, err
    rc, _, err = cli(argv + ["--force"], tmp_path, capsys, quiet=False)
    assert rc == 0, err
    assert "starting afresh" in err and "resumed from" not in err and "[nern] it 2/4" in err


def test_disk_full_during_build_zoo_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    import errno

    import wsbench.zoo as zoo_mod

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "members.parquet")

    instant_small_cnn_builder(tmp_path, monkeypatch)
    monkeypatch.setattr(zoo_mod, "write_manifest", full)
    out = tmp_path / "z"
    rc, _, err = cli(["build-zoo", "small_cnn_mnist", "--variant", "tiny", "--device", "cpu", "--out", str(out)],
                     tmp_path, capsys)
    assert_user_error(rc, err, "No space left on device")
    assert not out.exists() and not list(tmp_path.glob(".z.*"))  # no staging folder; no work folder (no shards)


def test_the_build_lock_is_per_variant_and_a_waiting_build_says_so(tmp_path):
    """Building `tiny` of a zoo while its `medium` builds used to wait silently for the whole build
    (the lock was on the zoo's folder); now each variant has its own lock, and a second build of the
    same variant prints that it waits, then re-takes the lock on the new work folder."""
    import shutil
    import threading

    from wsbench.zoo_builders import _build_lock, _work_folder

    medium, tiny = tmp_path / "zoo" / "medium", tmp_path / "zoo" / "tiny"
    messages: list[str] = []
    with _build_lock(medium, 1, messages.append):
        with _build_lock(tiny, 1, messages.append):  # would block forever with one lock per zoo
            pass
        assert messages == []
        entered = threading.Event()

        def second_medium_build() -> None:
            with _build_lock(medium, 1, messages.append):
                entered.set()

        waiter = threading.Thread(target=second_medium_build)
        waiter.start()
        for _ in range(200):
            if messages:
                break
            threading.Event().wait(0.01)
        assert messages == [f"waiting for another process that builds {medium} to finish"]
        assert not entered.is_set()
        shutil.rmtree(_work_folder(medium))  # a finished build removes its work folder
    waiter.join(timeout=10)
    assert entered.is_set() and _work_folder(medium).is_dir()
