"""Run keys hold the zoo's content: another zoo of the same name, version and variant is never taken
for a recorded run, and records made before the digest was part of the key stay recognised."""
from __future__ import annotations

import json
from pathlib import Path

from bad_input_helpers import cli, make_zoo
from wsbench.leaderboard import build_tables
from wsbench.leaderboard.markdown import table_grid
from wsbench.results import read_records
from wsbench.zoo import load_zoo

ARGS = ["--method", "magnitude_prune", "--set", "task.eval_limit=16", "--set", "budgets=[0.5]", "--member", "m3"]


def _run(zoo: Path, tmp_path: Path, capsys, *more: str) -> tuple[int, str]:
    rc, _, err = cli(["--zoo", str(zoo), *ARGS, *more], tmp_path, capsys, quiet=False)
    return rc, err


def test_content_digest_follows_weights_and_members_not_the_folder(tmp_path):
    a, b = make_zoo(tmp_path / "a"), make_zoo(tmp_path / "b")
    assert load_zoo(a).content_digest == load_zoo(b).content_digest  # same content, other folder
    c = make_zoo(tmp_path / "c", fill=0.25)
    assert load_zoo(c).content_digest != load_zoo(a).content_digest
    zoo = load_zoo(a)
    zoo.members.loc[0, "test_acc"] = 0.75
    assert zoo.content_digest != load_zoo(a).content_digest  # labels are content too


def test_another_zoo_of_the_same_name_is_run_not_skipped(tmp_path, capsys):
    first, other = make_zoo(tmp_path / "z1"), make_zoo(tmp_path / "z2", fill=0.01)
    assert _run(first, tmp_path, capsys)[0] == 0
    rc, err = _run(first, tmp_path, capsys)
    assert rc == 0 and "already recorded" in err
    rc, err = _run(other, tmp_path, capsys)
    assert rc == 0 and "already recorded" not in err
    records = read_records(tmp_path / "res")
    digests = {r.zoo_digest for r in records}
    assert len(records) == 2 and len(digests) == 2 and len({r.run_key for r in records}) == 2
    (table,) = build_tables(records)  # one table, compared on one zoo content: the newest record's
    newest = max(records, key=lambda r: (r.date, r.record_id))
    assert table.provenance.zoo_digests == (newest.zoo_digest,) and not table.provenance.mixed_zoos
    assert [row.zoo_digest for row in table.older_rows] == [next(iter(digests - {newest.zoo_digest}))]
    grid = table_grid(table, older=True)
    assert "Zoo content" in [c.text for c in grid.headers]
    assert any(c.text == table.older_rows[0].zoo_digest[:8] for c in grid.rows[0])


def test_records_from_before_the_digest_are_still_recognised(tmp_path, capsys):
    from wsbench import runner

    zoo = make_zoo(tmp_path / "z")
    assert _run(zoo, tmp_path, capsys)[0] == 0
    path = tmp_path / "res" / "reconstruction.jsonl"
    (rec,) = [json.loads(line) for line in path.read_text().splitlines()]
    # what the record was before: its key without the zoo digest, and no digest in it
    parts = dict(task="reconstruction", task_version=1, zoo=rec["zoo"], zoo_version=rec["zoo_version"],
                 zoo_variant=rec["zoo_variant"], method="magnitude_prune",
                 method_config=rec["method_config"], task_config=rec["task_config"], seed=0)
    assert runner.run_key(**parts, zoo_digest=rec["zoo_digest"]) == rec["run_key"]
    legacy = runner.run_key(**parts)
    from wsbench.results import ResultRecord

    old = ResultRecord.from_json(path.read_text().splitlines()[0]).as_dict()
    old |= {"zoo_digest": None, "run_key": legacy}
    path.write_text(ResultRecord.create(**old).to_json() + "\n")
    rc, err = _run(zoo, tmp_path, capsys)
    assert rc == 0 and f"already recorded (run key {legacy})" in err
