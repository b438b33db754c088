"""Merging result records made elsewhere (a GPU session's returned folder, a cluster job) into the
local store: every valid record once, broken or altered lines reported, the source only read."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .errors import ConfigError
from .results import ResultRecord, append_records_counted, parse_record_lines


@dataclasses.dataclass
class MergeReport:
    files: list[Path]
    read: int  # valid records found
    added: int  # lines appended to the store
    bad_lines: list[str]  # "file:line: why" of lines that are not valid records


def merge_record_files(source: str | os.PathLike, results_dir: str | os.PathLike) -> MergeReport:
    """Append the records of every *.jsonl below `source` (e.g. what a GPU session returned) to the
    store in `results_dir`, one file per task; records already there (same id) are skipped, and so is
    any line that is not a valid, unaltered record (reported). `source` is only read."""
    source = Path(source)
    if not source.is_dir():
        raise ConfigError(f"merge-records: {source} is not a folder")
    files = sorted(p for p in source.rglob("*.jsonl") if p.is_file())
    if not files:
        raise ConfigError(f"merge-records: no *.jsonl files below {source}")
    records: dict[str, ResultRecord] = {}
    bad: list[str] = []
    for path in files:
        for lineno, record in parse_record_lines(path):
            if isinstance(record, ConfigError):
                bad.append(f"{path}:{lineno}: {record}")
            else:
                records.setdefault(record.record_id, record)
    added = append_records_counted(results_dir, records.values())[1] if records else 0
    return MergeReport(files, len(records), added, bad)


@dataclasses.dataclass
class MigrationReport:
    files: list[Path]  # files rewritten
    upgraded: int  # schema-1 lines rewritten as schema 2
    kept_bad: list[str]  # "file:line: why" of lines left as they were (not valid records)


def migrate_store(results_dir: str | os.PathLike) -> MigrationReport:
    """Rewrite every *.jsonl of the store with its schema-1 records as schema 2 (identity as typed
    fields). Lines that are not valid records are kept verbatim; a file with nothing to upgrade is not
    touched; each file is replaced atomically under the store's lock, so a concurrent append waits."""
    import fcntl

    from .files import write_atomic

    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ConfigError(f"migrate-records: {results_dir} is not a folder")
    report = MigrationReport([], 0, [])
    lock_fd = os.open(results_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        for path in sorted(results_dir.glob("*.jsonl")):
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            out, seen, upgraded = [], set(), 0
            for lineno, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = ResultRecord.from_json(line)
                except ConfigError as exc:
                    report.kept_bad.append(f"{path}:{lineno}: {exc}")
                    out.append(line)
                    continue
                upgraded += record.to_json() != line.strip()  # not in today's canonical form: schema 1
                if record.record_id not in seen:
                    seen.add(record.record_id)
                    out.append(record.to_json())
            if upgraded:
                write_atomic(path, "\n".join(out) + "\n")
                report.files.append(path)
                report.upgraded += upgraded
    finally:
        os.close(lock_fd)
    return report
