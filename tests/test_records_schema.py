"""Result records, schema 2: the run's identity in typed fields; schema-1 lines (identity inside
`extra`) are read and upgraded, and `migrate-records` rewrites a store in schema 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_results import make_record
from wsbench.cli import main
from wsbench.errors import ConfigError
from wsbench.leaderboard.tables import build_tables
from wsbench.results import ResultRecord, compute_record_id, read_records

ROOT = Path(__file__).resolve().parents[1]


def _schema_1_line(record: ResultRecord, **extra) -> str:
    """What `record` was as a schema-1 line: identity in extra, a first variant's `budget` copied in."""
    body = record.as_dict()
    body.pop("record_id")
    for key in ("schema_version", "zoo_variant", "zoo_digest", "method_version", "task_config", "run_key", "member",
                "variant"):
        body.pop(key)
    body["extra"] = {"member": "resnet20", "label": "prune@0.5", "variant": "prune@0.5", "run_key": "k1",
                     "zoo_variant": "full", "task_config": {"eval_limit": 10}, "budget": 0.25, "variant_budget": 0.5,
                     "fit_s": 1.0, **extra}
    body["record_id"] = compute_record_id(body)
    return json.dumps(body, sort_keys=True)


def test_a_schema_1_line_is_read_as_schema_2():
    r = ResultRecord.from_json(_schema_1_line(make_record()))
    assert (r.schema_version, r.member, r.variant, r.run_key, r.zoo_variant) == (2, "resnet20", "prune@0.5", "k1", "full")
    assert r.task_config == {"eval_limit": 10} and r.method_version == 1 and r.zoo_digest is None
    assert r.extra == {"fit_s": 1.0, "variant_budget": 0.5}  # identity moved out, the wrong copied budget dropped
    assert ResultRecord.from_json(r.to_json()) == r  # and it round-trips as schema 2


def test_an_altered_schema_1_line_is_refused():
    line = _schema_1_line(make_record()).replace('"seed": 0', '"seed": 7')
    with pytest.raises(ConfigError, match="does not match its content"):
        ResultRecord.from_json(line)


def test_identity_is_not_accepted_inside_extra():
    with pytest.raises(ConfigError, match=r"\['member', 'run_key'\] are typed fields"):
        make_record(extra={"member": "m", "run_key": "k"})


def test_migrate_records_rewrites_a_store_and_keeps_bad_lines(tmp_path, capsys):
    store = tmp_path / "res"
    store.mkdir()
    v1 = _schema_1_line(make_record())
    (store / "reconstruction.jsonl").write_text(v1 + "\n" + "{torn line\n" + v1 + "\n")
    with pytest.warns(UserWarning, match="skipped corrupted"):
        before = read_records(store)
    assert main(["migrate-records", "--results-dir", str(store)]) == 0
    assert "2 record(s) rewritten in schema 2 in 1 file(s)" in capsys.readouterr().out
    lines = (store / "reconstruction.jsonl").read_text().splitlines()
    assert lines[1] == "{torn line" and len(lines) == 2  # the duplicate once, the bad line verbatim
    assert json.loads(lines[0])["schema_version"] == 2
    with pytest.warns(UserWarning, match="skipped corrupted"):
        assert read_records(store) == before
    assert main(["migrate-records", "--results-dir", str(store)]) == 0  # nothing left to upgrade: untouched
    assert (store / "reconstruction.jsonl").read_text().splitlines() == lines


def test_an_older_method_version_goes_to_the_older_table():
    recs = [make_record(seed=s, method_version=v, metrics={"acc": 0.5 + v / 10, "weight_mse": 0.1})
            for v in (1, 2) for s in (0, 1)]
    (table,) = build_tables(recs)
    assert [row.metrics["acc"].mean for row in table.rows] == [pytest.approx(0.7)]
    assert [row.metrics["acc"].mean for row in table.older_rows] == [pytest.approx(0.6)]


def test_committed_records_are_schema_2_without_machine_paths():
    for path in sorted((ROOT / "leaderboards" / "results").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            data = json.loads(line)
            assert data.get("schema_version") == 2, f"{path.name}: run `run_bench.py migrate-records`"
            for source in data["extra"].get("test_sets", {}).values():
                assert not source.startswith(("/", "~")) and "/home/" not in source and "/root/" not in source
