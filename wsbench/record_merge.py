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
