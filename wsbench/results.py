"""Result records and their append-only JSONL store (``leaderboards/results/{task}.jsonl``).

Every benchmark run yields one :class:`ResultRecord`. Records are identified by a content
hash (``record_id``), so appending the same record twice, or merging a store pulled from the
Hub, never duplicates a line. Leaderboards are derived from these files, never edited.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import errno
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import ConfigError, WsbenchError

STATUSES = ("ok", "not_applicable")
_TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SCHEMA_VERSION = 2
# Schema 2 made the run's identity typed fields; schema 1 kept them in `extra` (read and upgraded).
IDENTITY_FIELDS = ("zoo_variant", "zoo_digest", "method_version", "task_config", "run_key", "member", "variant")


@dataclass(frozen=True)
class ResultRecord:
    """One run of one method on one task and zoo split. Build it with :meth:`create`."""

    task: str
    task_version: int
    zoo: str
    zoo_version: str
    split: str
    method: str
    method_config: dict[str, Any]
    preset: str | None
    seed: int
    metrics: dict[str, float]
    higher_is_better: dict[str, bool]
    status: str
    reason: str | None
    n_train: int | None
    n_eval: int | None
    n_params: int | None
    wall_s: float
    device: str
    versions: dict[str, str]
    git_commit: str | None
    date: str
    command: str
    extra: dict[str, Any] = field(default_factory=dict)  # diagnostics only (curves, per-layer errors, timings)
    schema_version: int = SCHEMA_VERSION
    zoo_variant: str | None = None
    zoo_digest: str | None = None  # content digest of the zoo the run read (schema-1 records: often none)
    method_version: int = 1
    task_config: dict[str, Any] = field(default_factory=dict)
    run_key: str | None = None  # the run's identity: same key, same run (wsbench.runner.run_key)
    member: str | None = None  # the network reconstructed (reconstruction tasks)
    variant: str | None = None  # which of a run's reconstructions (e.g. "magnitude_prune@0.25")
    record_id: str = ""

    @classmethod
    def create(cls, **fields: Any) -> "ResultRecord":
        """Fill versions/git_commit/date when not given, validate, and compute record_id."""
        fields.pop("record_id", None)
        if "versions" not in fields:
            fields["versions"] = current_versions()
        if "git_commit" not in fields:
            fields["git_commit"] = current_git_commit()
        if "date" not in fields:
            fields["date"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        fields.setdefault("extra", {})
        fields.setdefault("reason", None)
        fields.setdefault("preset", None)
        fields.setdefault("schema_version", SCHEMA_VERSION)
        fields.setdefault("task_config", {})
        fields.setdefault("method_version", 1)
        for key in ("zoo_variant", "zoo_digest", "run_key", "member", "variant"):
            fields.setdefault(key, None)
        misplaced = sorted(set(fields["extra"]) & set(IDENTITY_FIELDS))
        if misplaced:
            raise ConfigError(f"ResultRecord: {misplaced} are typed fields, not extra")
        names = {f.name for f in dataclasses.fields(cls)} - {"record_id"}
        unknown = sorted(set(fields) - names)
        missing = sorted(names - set(fields))
        if unknown or missing:
            raise ConfigError(f"ResultRecord: unknown fields {unknown}, missing fields {missing}")
        body = _normalise(fields)
        return cls(**body, record_id=compute_record_id(body))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """One line of JSON with sorted keys; NaN/Inf anywhere raise ConfigError."""
        return _dumps(self.as_dict())

    @classmethod
    def from_json(cls, line: str) -> "ResultRecord":
        """Parse one line; a malformed line or a record whose id does not match raises ConfigError."""
        try:
            data = json.loads(line, parse_constant=_refuse_constant)
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"result record is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError("result record is not a JSON object")
        record_id = data.pop("record_id", None)
        names = {f.name for f in dataclasses.fields(cls)} - {"record_id"}
        schema_1 = "schema_version" not in data
        if schema_1:
            names -= {"schema_version", *IDENTITY_FIELDS}
        if set(data) != names:
            raise ConfigError(
                f"result record fields differ: missing {sorted(names - set(data))}, "
                f"unknown {sorted(set(data) - names)}"
            )
        if schema_1:  # checked as written, then read as schema 2 (a new record_id, for its new content)
            if record_id != compute_record_id(_normalise(data, from_json=True, schema=1)):
                raise ConfigError(f"result record_id {record_id!r} does not match its content")
            data = upgrade_schema_1(data)
        body = _normalise(data, from_json=True)
        expected = compute_record_id(body)
        if not schema_1 and record_id != expected:
            raise ConfigError(f"result record_id {record_id!r} does not match its content ({expected})")
        return cls(**body, record_id=expected)


def upgrade_schema_1(data: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 record (identity inside `extra`) as schema 2. Its reconstruction records copied
    the method's first variant's options (e.g. `budget`) into every variant's extra beside the
    variant's own `variant_budget`; the copy is dropped."""
    extra = dict(data["extra"])
    label = extra.pop("label", None)
    typed = {"schema_version": SCHEMA_VERSION, "zoo_variant": extra.pop("zoo_variant", None),
             "zoo_digest": extra.pop("zoo_digest", None), "method_version": extra.pop("method_version", 1),
             "task_config": extra.pop("task_config", {}), "run_key": extra.pop("run_key", None),
             "member": extra.pop("member", None), "variant": extra.pop("variant", None) or label}
    for key in [k for k in extra if f"variant_{k}" in extra]:
        del extra[key]
    return {**data, "extra": extra, **typed}


def compute_record_id(body: dict[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys) of all fields except record_id, 16 hex chars."""
    body = {k: v for k, v in body.items() if k != "record_id"}
    return hashlib.sha256(_dumps(body).encode("utf-8")).hexdigest()[:16]


def _refuse_constant(name: str) -> float:
    raise ConfigError(f"non-finite number {name} in a result record")


def _dumps(obj: Any) -> str:
    try:
        return json.dumps(obj, sort_keys=True, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except ValueError as exc:  # allow_nan=False raises ValueError on NaN/Inf
        raise ConfigError(f"result record contains NaN or Inf ({exc}); never store a silent NaN") from None
    except TypeError as exc:
        raise ConfigError(f"result record contains a value that is not JSON: {exc}") from None


def _normalise(fields: dict[str, Any], from_json: bool = False, schema: int = SCHEMA_VERSION) -> dict[str, Any]:
    """Check types and convert numpy/torch scalars to plain Python so hashing is stable.

    from_json: the values come from json.loads (plain, finite), so the deep copy is skipped.
    schema 1: the fields of a schema-1 record only (to check its record_id before the upgrade)."""
    out = dict(fields)
    for key in ("task", "zoo", "zoo_version", "split", "method", "device", "command", "date"):
        if not isinstance(out[key], str) or not out[key]:
            raise ConfigError(f"ResultRecord.{key} must be a non-empty string, got {out[key]!r}")
    if not _TASK_NAME.match(out["task"]):
        raise ConfigError(f"ResultRecord.task {out['task']!r} is not a valid file name")
    for key in ("task_version", "seed"):
        out[key] = _as_int(key, out[key])
    for key in ("n_train", "n_eval", "n_params"):
        out[key] = None if out[key] is None else _as_int(key, out[key])
    if out["status"] not in STATUSES:
        raise ConfigError(f"ResultRecord.status must be one of {STATUSES}, got {out['status']!r}")
    if out["status"] == "not_applicable" and not out["reason"]:
        raise ConfigError("ResultRecord with status 'not_applicable' needs a reason")
    out["wall_s"] = _as_float("wall_s", out["wall_s"])
    out["metrics"] = {str(k): _as_float(f"metrics.{k}", v) for k, v in dict(out["metrics"]).items()}
    out["higher_is_better"] = {str(k): bool(v) for k, v in dict(out["higher_is_better"]).items()}
    missing = sorted(set(out["metrics"]) - set(out["higher_is_better"]))
    if missing:
        raise ConfigError(f"ResultRecord.higher_is_better lacks metrics {missing}")
    if schema != 1:
        if out["schema_version"] != SCHEMA_VERSION:
            raise ConfigError(f"ResultRecord.schema_version must be {SCHEMA_VERSION}, got {out['schema_version']!r}")
        out["method_version"] = _as_int("method_version", out["method_version"])
        for key in ("zoo_variant", "zoo_digest", "run_key", "member", "variant"):
            if out[key] is not None and (not isinstance(out[key], str) or not out[key]):
                raise ConfigError(f"ResultRecord.{key} must be a non-empty string or None, got {out[key]!r}")
    for key in ("method_config", "versions", "extra") + (("task_config",) if schema != 1 else ()):
        if not isinstance(out[key], dict):
            raise ConfigError(f"ResultRecord.{key} must be a dict, got {type(out[key]).__name__}")
        if not from_json:
            out[key] = json.loads(_dumps(_plain(out[key])))  # deep copy, checks finiteness
    out["versions"] = {str(k): str(v) for k, v in out["versions"].items()}
    return out


def _plain(obj: Any) -> Any:
    """Recursively turn numpy/torch scalars and tuples into JSON-native values."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 0) == 0:
        return obj.item()
    return obj


def _as_int(key: str, value: Any) -> int:
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"ResultRecord.{key} must be an integer, got {value!r}")
    return value


def _as_float(key: str, value: Any) -> float:
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"ResultRecord.{key} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"ResultRecord.{key} is {value}; never store a silent NaN/Inf")
    return value


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    from . import __version__

    versions = {"wsbench": __version__, "python": platform.python_version()}
    torch = sys.modules.get("torch")
    try:  # without importing torch (seconds) when the caller has not
        versions["torch"] = torch.__version__ if torch is not None else importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - torch is a hard dependency
        versions["torch"] = "absent"
    return tuple(sorted(versions.items()))


def current_versions() -> dict[str, str]:
    """wsbench, python and torch versions of this process."""
    return dict(_versions())


@functools.lru_cache(maxsize=1)
def current_git_commit() -> str | None:
    """The HEAD commit of the source checkout (suffixed '+dirty' with local changes), or None.

    Computed once per process: the code that runs is the code that was imported. A copy of the tree
    without .git (a GPU lease's) names its commit in WSBENCH_GIT_COMMIT."""
    src = Path(__file__).resolve().parent
    given = os.environ.get("WSBENCH_GIT_COMMIT") or None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return given
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=src, capture_output=True, text=True, timeout=10,
        )
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return given


# ---------------------------------------------------------------- store


def results_file(results_dir: str | os.PathLike, task: str) -> Path:
    if not _TASK_NAME.match(task):
        raise ConfigError(f"task name {task!r} is not a valid file name")
    return Path(results_dir) / f"{task}.jsonl"


def _recorded(path: Path) -> tuple[set[str], set[str]]:
    """(record_ids, run_keys) of the VALID records of a store file. A torn or corrupted line
    counts for neither: the record it held can be appended again (by a rerun, merge-records or a
    pull), and readers then find the good copy; counting it would hide the loss for good."""
    ids: set[str] = set()
    keys: set[str] = set()
    if not path.exists():
        return ids, keys
    for _, record in parse_record_lines(path):
        if isinstance(record, ResultRecord):
            ids.add(record.record_id)
            if record.run_key is not None:
                keys.add(record.run_key)
    return ids, keys


def append_records(results_dir: str | os.PathLike, records: Iterable[ResultRecord],
                   *, skip_recorded_runs: bool = False) -> Path:
    """Append records to ``{task}.jsonl``; records already there (same record_id) are skipped.

    Returns the task file, or results_dir itself when the records span several tasks.
    Per task file: an exclusive flock on the results folder (no lock file is left behind), then all new lines in ONE
    ``os.write`` on an O_APPEND fd and an fsync, so concurrent writers never interleave lines.
    On failure a WsbenchError names the file, which is truncated back to its previous size.
    """
    paths, _ = append_records_counted(results_dir, records, skip_recorded_runs=skip_recorded_runs)
    return paths[0] if len(paths) == 1 else Path(results_dir)


def append_records_counted(
    results_dir: str | os.PathLike, records: Iterable[ResultRecord], *, skip_recorded_runs: bool = False
) -> tuple[list[Path], int]:
    """Like :func:`append_records`; returns (task files touched, number of lines added).

    With skip_recorded_runs, records whose `run_key` is in the file already are dropped
    (checked under the lock, so the same run finished twice at once is recorded once)."""
    results_dir = Path(results_dir)
    by_task: dict[str, list[ResultRecord]] = {}
    for record in records:
        by_task.setdefault(record.task, []).append(record)
    touched: list[Path] = []
    added = 0
    for task, task_records in sorted(by_task.items()):
        path = results_file(results_dir, task)
        try:
            results_dir.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(results_dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise WsbenchError(f"cannot write results to {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            seen, recorded_runs = _recorded(path)
            runs_done = recorded_runs if skip_recorded_runs else set()
            lines = []
            for record in task_records:
                if record.run_key in runs_done:
                    continue
                if record.record_id not in seen:
                    seen.add(record.record_id)
                    lines.append(record.to_json() + "\n")
            if lines:
                _append_once(path, "".join(lines).encode("utf-8"))
                added += len(lines)
            touched.append(path)
        finally:
            os.close(lock_fd)  # closing releases the flock
    return touched, added


def _append_once(path: Path, payload: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise WsbenchError(f"cannot write results to {path}: {exc.strerror or exc}") from None
    try:
        start = os.fstat(fd).st_size
        try:
            written = os.write(fd, payload)
            if written != len(payload):
                raise OSError(errno.ENOSPC, "short write (disk full?)")
            os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, start)  # leave the file as it was
            except OSError:
                pass
            raise WsbenchError(f"cannot write results to {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_records(results_dir: str | os.PathLike) -> list[ResultRecord]:
    """All records of every ``*.jsonl`` in results_dir: files by name, lines in append order.

    A corrupted line is skipped with a warning naming file and line; duplicates are dropped.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return []
    records: dict[str, ResultRecord] = {}
    for path in sorted(results_dir.glob("*.jsonl")):
        for lineno, record in parse_record_lines(path):
            if isinstance(record, ConfigError):
                warnings.warn(f"{path}:{lineno}: skipped corrupted result record ({record})", stacklevel=2)
            else:
                records.setdefault(record.record_id, record)
    return list(records.values())


def parse_record_lines(path: str | os.PathLike) -> Iterator[tuple[int, "ResultRecord | ConfigError"]]:
    """(line number, the record or why the line is not a valid record) for each non-empty line."""
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    yield lineno, ResultRecord.from_json(line)
                except ConfigError as exc:
                    yield lineno, exc


def records_frame(records: Iterable[ResultRecord]) -> "pandas.DataFrame":  # noqa: F821
    """Flat table: one row per record; ``metric.<name>``, ``higher_is_better.<name>``,
    ``version.<pkg>`` columns; method_config, task_config and extra as JSON strings."""
    import pandas as pd

    rows = []
    for record in records:
        row = record.as_dict()
        metrics = row.pop("metrics")
        hib = row.pop("higher_is_better")
        versions = row.pop("versions")
        for key in ("method_config", "task_config", "extra"):
            row[key] = _dumps(row[key])
        row.update({f"metric.{k}": v for k, v in metrics.items()})
        row.update({f"higher_is_better.{k}": v for k, v in hib.items()})
        row.update({f"version.{k}": v for k, v in versions.items()})
        rows.append(row)
    base = [f.name for f in dataclasses.fields(ResultRecord) if f.name not in ("metrics", "higher_is_better", "versions")]
    frame = pd.DataFrame(rows, columns=None if rows else base)
    extra_cols = sorted(c for c in frame.columns if c not in base)
    frame = frame[[c for c in base if c in frame.columns] + extra_cols]
    for col in ("task_version", "seed", "schema_version", "method_version"):
        if col in frame:
            frame[col] = frame[col].astype("int64")
    for col in ("n_train", "n_eval", "n_params"):
        if col in frame:
            frame[col] = frame[col].astype("Int64")
    return frame
