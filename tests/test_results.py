"""ResultRecord and the append-only JSONL store."""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
from pathlib import Path

import pytest

from wsbench.errors import ConfigError, WsbenchError
from wsbench.results import (
    ResultRecord,
    append_records,
    append_records_counted,
    read_records,
    records_frame,
    results_file,
)


def make_record(seed: int = 0, task: str = "reconstruction", **overrides) -> ResultRecord:
    fields = dict(
        task=task, task_version=1, zoo="cifar10_resnet", zoo_version="1.0", split="test",
        method="nern", method_config={"hidden": 64, "lr": 1e-3}, preset="quick", seed=seed,
        metrics={"acc": 0.9 + seed * 1e-6, "weight_mse": 0.01}, higher_is_better={"acc": True, "weight_mse": False},
        status="ok", n_train=10, n_eval=5, n_params=1234, wall_s=1.5, device="cpu (2 cores)",
        versions={"wsbench": "0.1.0", "torch": "2.x", "python": "3.x"}, git_commit="abc",
        date="2025-01-01T00:00:00+00:00", command="run_bench.py --method nern", member="m0",
    )
    fields.update(overrides)
    return ResultRecord.create(**fields)


def test_round_trip_and_stable_id():
    record = make_record()
    line = record.to_json()
    assert "\n" not in line
    assert json.loads(line)["record_id"] == record.record_id
    assert list(json.loads(line)) == sorted(json.loads(line))
    back = ResultRecord.from_json(line)
    assert back == record
    assert make_record().record_id == record.record_id  # same content, same id
    assert len(record.record_id) == 16 and int(record.record_id, 16) >= 0
    assert make_record(seed=1).record_id != record.record_id
    # key order of dict fields does not change the id
    reordered = make_record(method_config={"lr": 1e-3, "hidden": 64})
    assert reordered.record_id == record.record_id


def test_create_fills_defaults():
    fields = dict(
        task="t", task_version=1, zoo="z", zoo_version="1", split="test", method="m", method_config={},
        seed=0, metrics={}, higher_is_better={}, status="not_applicable", reason="encoder only",
        n_train=None, n_eval=None, n_params=None, wall_s=0.0, device="cpu", command="x",
    )
    record = ResultRecord.create(**fields)
    assert set(record.versions) >= {"wsbench", "torch", "python"}
    assert record.date.endswith("+00:00")
    assert record.preset is None and record.extra == {}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_refused(bad):
    with pytest.raises(ConfigError, match="NaN"):
        make_record(metrics={"acc": bad, "weight_mse": 0.1})
    with pytest.raises(ConfigError):
        make_record(extra={"per_layer": [0.1, bad]})
    line = make_record().to_json().replace('"acc":0.9', '"acc":NaN')
    with pytest.raises(ConfigError):
        ResultRecord.from_json(line)


def test_invalid_fields_refused():
    with pytest.raises(ConfigError, match="status"):
        make_record(status="failed")
    with pytest.raises(ConfigError, match="reason"):
        make_record(status="not_applicable")
    with pytest.raises(ConfigError, match="higher_is_better"):
        make_record(higher_is_better={"acc": True})
    with pytest.raises(ConfigError, match="unknown fields"):
        make_record(colour="red")
    with pytest.raises(ConfigError, match="file name"):
        make_record(task="../evil")
    tampered = make_record().to_json().replace('"seed":0', '"seed":7')
    with pytest.raises(ConfigError, match="does not match"):
        ResultRecord.from_json(tampered)


def test_append_skips_duplicates(tmp_path):
    records = [make_record(seed=s) for s in range(3)]
    path = append_records(tmp_path, records)
    assert path == results_file(tmp_path, "reconstruction") and path.exists()
    paths, added = append_records_counted(tmp_path, records + [make_record(seed=3)])
    assert added == 1 and paths == [path]
    assert len(path.read_text().splitlines()) == 4
    assert [r.seed for r in read_records(tmp_path)] == [0, 1, 2, 3]
    mixed = append_records(tmp_path, [make_record(task="transfer")])
    assert mixed == results_file(tmp_path, "transfer")
    assert len(read_records(tmp_path)) == 5


def _writer(results_dir: str, offset: int, n: int) -> None:
    for i in range(n):  # one record per call: many lock/append cycles racing the other process
        append_records(results_dir, [make_record(seed=offset + i, extra={"pad": "x" * 3000})])


def test_concurrent_appends_do_not_interleave(tmp_path):
    ctx = mp.get_context("fork")
    # each append reads the file under the lock (its duplicate check): the time grows with the square of the count
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), k * 1000, 80)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = results_file(tmp_path, "reconstruction").read_text().splitlines()
    assert len(lines) == 160
    seeds = sorted(ResultRecord.from_json(line).seed for line in lines)  # every line parses whole
    assert seeds == list(range(80)) + list(range(1000, 1080))


def test_concurrent_appends_of_the_same_records_do_not_duplicate(tmp_path):
    ctx = mp.get_context("fork")  # the id check and the write happen under one lock
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), 0, 100)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = results_file(tmp_path, "reconstruction").read_text().splitlines()
    assert sorted(ResultRecord.from_json(line).seed for line in lines) == list(range(100))


def test_corrupted_line_skipped_with_warning(tmp_path):
    path = append_records(tmp_path, [make_record(seed=s) for s in range(3)])
    lines = path.read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]  # a torn line
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"reconstruction\.jsonl:2"):
        records = read_records(tmp_path)
    assert [r.seed for r in records] == [0, 2]
    # a later append still works and does not re-add existing ids
    _, added = append_records_counted(tmp_path, [make_record(seed=0), make_record(seed=1)])
    assert added == 1


def test_read_only_dir_error_leaves_file_unchanged(tmp_path, monkeypatch):
    path = append_records(tmp_path, [make_record()])
    before = path.read_bytes()
    os.chmod(path, 0o444)
    os.chmod(tmp_path, 0o555)
    if os.geteuid() == 0:  # root ignores permission bits: the kernel's answer for others, simulated
        real_open = os.open

        def denying_open(file, flags, *a, **k):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, flags, *a, **k)

        monkeypatch.setattr(os, "open", denying_open)
    try:
        with pytest.raises(WsbenchError, match=str(tmp_path)):
            append_records(tmp_path, [make_record(seed=9)])
    finally:
        monkeypatch.undo()
        os.chmod(tmp_path, 0o755)
    assert path.read_bytes() == before


def test_unwritable_location_error(tmp_path):
    target = Path("/proc/wsbench-results")  # read-only for every user, root included
    with pytest.raises(WsbenchError, match="wsbench-results"):
        append_records(target, [make_record()])
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(WsbenchError, match="file"):
        append_records(blocker, [make_record()])


def test_disk_full_leaves_file_unchanged(tmp_path, monkeypatch):
    import wsbench.results as results_mod

    path = append_records(tmp_path, [make_record()])
    before = path.read_bytes()
    real_write = os.write

    def half_write(fd, data):  # write part of the payload, then fail like a full disk
        real_write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results_mod.os, "write", half_write)
    with pytest.raises(WsbenchError, match="No space left"):
        append_records(tmp_path, [make_record(seed=5), make_record(seed=6)])
    monkeypatch.setattr(results_mod.os, "write", real_write)
    assert path.read_bytes() == before


def test_records_frame_columns():
    frame = records_frame([make_record(seed=0), make_record(seed=1, metrics={"acc": 0.5}, higher_is_better={"acc": True})])
    assert len(frame) == 2
    assert {"metric.acc", "metric.weight_mse", "record_id", "method_config", "version.torch"} <= set(frame.columns)
    assert json.loads(frame["method_config"].iloc[0]) == {"hidden": 64, "lr": 1e-3}
    assert math.isnan(frame["metric.weight_mse"].iloc[1])  # missing metric -> empty cell, not a record NaN
    assert frame["seed"].tolist() == [0, 1]
    assert records_frame([]).empty


def test_merge_records_from_a_returned_folder(tmp_path, capsys):
    """What a GPU session brings back (any *.jsonl below a folder, records of several tasks, maybe a
    broken or altered line) is appended to the store once; the folder itself is only read."""
    from wsbench.cli import main

    store = tmp_path / "store"
    append_records(store, [make_record(seed=0)])
    back = tmp_path / "out" / "gpu"
    back.mkdir(parents=True)
    tampered = json.loads(make_record(seed=9).to_json())
    tampered["metrics"] = {k: v + 1 for k, v in tampered["metrics"].items()}  # id no longer matches
    lines = [make_record(seed=0).to_json(), make_record(seed=1).to_json(),
             make_record(seed=2, task="property_prediction").to_json(), "{not json", json.dumps(tampered)]
    (back / "records.jsonl").write_text("\n".join(lines) + "\n")
    before = (back / "records.jsonl").read_bytes()
    assert main(["merge-records", str(tmp_path / "out"), "--results-dir", str(store)]) == 0
    out, err = capsys.readouterr()
    assert "merged 2 new record(s)" in out and "(1 already there)" in out and "2 line(s) were not valid" in out
    assert err.count("skipped: ") == 2 and "records.jsonl:4" in err and "records.jsonl:5" in err
    assert sorted((r.task, r.seed) for r in read_records(store)) == [
        ("property_prediction", 2), ("reconstruction", 0), ("reconstruction", 1)]
    assert (back / "records.jsonl").read_bytes() == before
    assert main(["merge-records", str(tmp_path / "out"), "--results-dir", str(store)]) == 0
    assert "merged 0 new record(s)" in capsys.readouterr().out and len(read_records(store)) == 3


@pytest.mark.parametrize("make_folder,needle", [(False, "is not a folder"), (True, "no *.jsonl files")])
def test_merge_records_bad_folder_is_one_clear_error(tmp_path, capsys, make_folder, needle):
    from wsbench.cli import main

    folder = tmp_path / "back"
    if make_folder:
        folder.mkdir()
    assert main(["merge-records", str(folder), "--results-dir", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "store").exists()


def test_a_corrupted_local_line_is_repaired_by_merging_its_good_copy(tmp_path, capsys):
    """A local record whose line was altered (one digit of a metric) no longer verifies: it must not
    count as present, or merge/pull would say '0 new' and the store would keep 0 valid copies."""
    from wsbench.cli import main

    store = tmp_path / "store"
    good = make_record(seed=0)
    append_records(store, [good])
    path = store / "reconstruction.jsonl"
    line = path.read_text()
    altered = json.loads(line)
    altered["metrics"] = {k: v + 1 for k, v in altered["metrics"].items()}
    path.write_text(json.dumps(altered) + "\n")
    with pytest.warns(UserWarning, match="corrupted"):
        assert read_records(store) == []
    back = tmp_path / "back"
    back.mkdir()
    (back / "r.jsonl").write_text(line)
    assert main(["merge-records", str(back), "--results-dir", str(store)]) == 0
    assert "merged 1 new record(s)" in capsys.readouterr().out
    with pytest.warns(UserWarning, match="corrupted"):  # the altered line stays (it is the user's file); reported
        assert [r.record_id for r in read_records(store)] == [good.record_id]


def test_print_and_write_report_prints_and_writes_both_files_only_with_out(tmp_path, capsys):
    import json

    from wsbench.files import print_and_write_report

    assert print_and_write_report(None, {"a": 1}, "# report\n") == 0
    assert capsys.readouterr().out == "# report\n\n" and not list(tmp_path.iterdir())
    assert print_and_write_report(str(tmp_path / "r"), {"a": 1}, "# report\n") == 0
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
    assert (tmp_path / "r.md").read_text() == "# report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md"]  # no temporary file left behind
