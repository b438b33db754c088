"""Leaderboards derived from result records only: one table per (task, zoo), as markdown and HTML.

`generate_leaderboard` (generate.py) reads `results_dir/*.jsonl` and writes README.md, index.html (one
self-contained page, plots embedded as PNG data URIs) and plots/*.png. Rules:

- a row is (method, config label, preset, member); the label is the record's ``variant`` when it
  has one, else the method-config keys that differ between that method's runs in the table
  (e.g. ``hidden=64``);
- cells are the mean +- sample std (ddof=1) over distinct seeds; a seed recorded twice (a forced
  re-run) counts once, with its newest record (by date, then record_id);
- best per metric column in bold by ``higher_is_better``, compared within each zoo member; ties are
  all bold, and a column (of a member) where fewer than two rows differ has none;
- records whose task_version or zoo_version is not the newest of their table, or whose
  method_version is not the newest of their method's, go to a separate "older versions" table
  (never bold: versions are not comparable); so do records made on another build of the zoo than
  the table's newest record (a different content digest under the same name and version: a zoo
  rebuilt by changed builder code holds other networks, and methods are compared on one set).

The output depends on the records alone (everything sorted, no clock), so regenerating gives
byte-identical files.
"""
from __future__ import annotations

import hashlib
import json
import re
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from ..benchmarks import loadable_benchmarks, match_benchmark
from ..results import ResultRecord

MAX_LABEL_CHARS = 48
# Headline metrics first (a name matches p when it is p, starts with "p_" or ends with "_p").
METRIC_PRIORITY = ("acc_recon", "acc_drop", "tau", "kendall_tau", "r2", "accuracy", "acc", "acc_orig",
                   "rel_weight_error", "compression_ratio", "bytes_ratio", "size_params", "size_bytes")


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None  # None when n == 1
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> "Stat":
        values = [float(v) for v in values]
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std, len(values))


@dataclass(frozen=True)
class Row:
    method: str
    config: str
    preset: str | None
    member: str | None
    status: str  # "ok" or "not_applicable"
    reason: str | None
    seeds: tuple[int, ...]
    metrics: dict[str, Stat]
    n_params: Stat | None
    n_bytes: Stat | None
    wall_s: Stat
    devices: tuple[str, ...]
    task_version: int
    zoo_version: str
    n_eval: int | None = None  # items scored (test images, networks); rows differing in it are kept apart
    zoo_digest: str | None = None  # set on older rows only: the zoo content they ran on

    @property
    def name(self) -> str:
        return self.method + (f" [{self.config}]" if self.config else "")


@dataclass(frozen=True)
class Provenance:
    """Where a table's records came from: stated under every table."""

    n_records: int
    commands: tuple[str, ...]
    presets: tuple[str, ...]
    devices: tuple[str, ...]
    commits: tuple[str, ...]
    first_date: str
    last_date: str
    preset_notes: tuple[tuple[str, str], ...] = ()  # ("method/preset", what it is), from the records
    zoo_digests: tuple[str, ...] = ()  # content digests of the zoos the records ran on (older records: none)

    @property
    def mixed_zoos(self) -> str:
        """A warning when the records ran on zoos of different content (same name, version, variant)."""
        if len(self.zoo_digests) < 2:
            return ""
        return (f"Warning: these records ran on {len(self.zoo_digests)} different zoo contents (digests "
                f"{', '.join(self.zoo_digests)}): a zoo rebuilt or edited under the same name and version.")

    @classmethod
    def of(cls, records: Sequence[ResultRecord]) -> "Provenance":
        dates = sorted(r.date for r in records)
        notes: dict[str, str] = {}
        for r in sorted(records, key=lambda r: r.date):  # the newest record's description of a preset
            if r.preset and r.extra.get("preset_description"):  # presets are per method: one name, many meanings
                notes[f"{r.method}/{r.preset}"] = str(r.extra["preset_description"])
        return cls(len(records), _sorted_set(r.command for r in records),
                   _sorted_set(r.preset or "default" for r in records), _sorted_set(r.device for r in records),
                   _sorted_set(r.git_commit or "unknown" for r in records), dates[0], dates[-1],
                   tuple(sorted(notes.items())),
                   _sorted_set(r.zoo_digest for r in records if r.zoo_digest))


@dataclass(frozen=True)
class Table:
    task: str
    zoo: str
    zoo_variant: str | None
    task_version: int
    zoo_version: str
    metrics: tuple[str, ...]
    higher_is_better: dict[str, bool]
    rows: tuple[Row, ...]
    provenance: Provenance
    older_metrics: tuple[str, ...] = ()
    older_rows: tuple[Row, ...] = ()
    older_provenance: Provenance | None = None
    card_version: str | None = None  # the zoo card's version now (None: no card of that name here)
    benchmark: str | None = None  # the benchmark entry the records answer (benchmarks/NAME.yaml), if any

    @property
    def stale(self) -> bool:
        """The table's newest records were made on a zoo version older than its card's."""
        return self.card_version is not None and version_key(self.card_version) > version_key(self.zoo_version)

    @property
    def title(self) -> str:
        """task · zoo [variant]; an entry named for another question than its task's (e.g.
        gen_gap_prediction-... of task property_prediction) lends the title its first word."""
        variant = f" [{self.zoo_variant}]" if self.zoo_variant not in (None, "full") else ""
        head = self.benchmark.split("-")[0] if self.benchmark else self.task
        return f"{head} · {self.zoo}{variant}"

    @property
    def slug(self) -> str:
        if self.benchmark:
            return slugify(self.benchmark)
        return slugify(f"{self.task}-{self.zoo}" + (f"-{self.zoo_variant}" if self.zoo_variant else ""))

    def best(self) -> dict[str, set[int]]:
        """Per metric, the indices of the rows with the best mean, compared within each zoo member
        (empty when fewer than two different means)."""
        out: dict[str, set[int]] = {m: set() for m in self.metrics}
        for metric in self.metrics:
            by_member: dict[str, dict[int, float]] = {}
            for i, row in enumerate(self.rows):
                if row.status == "ok" and metric in row.metrics:
                    by_member.setdefault(row.member or "", {})[i] = row.metrics[metric].mean
            pick = max if self.higher_is_better.get(metric, True) else min
            for means in by_member.values():
                if len(set(means.values())) >= 2:
                    target = pick(means.values())
                    out[metric] |= {i for i, m in means.items() if m == target}
        return out


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "table"


def natural_key(text: str | None) -> tuple:
    """Sort key where embedded numbers compare as numbers ('@0.25' < '@0.5' < 'h=128')."""
    parts = re.split(r"(\d+(?:\.\d+)?(?:e[-+]?\d+)?)", text or "")
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts))


def version_key(version: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", version) if p)


def _sorted_set(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(items), key=natural_key))


def metric_order(names: Iterable[str]) -> tuple[str, ...]:
    def rank(name: str) -> tuple:
        for i, p in enumerate(METRIC_PRIORITY):
            if name == p or name.startswith(p + "_") or name.endswith("_" + p):
                return (i, name)
        return (len(METRIC_PRIORITY), name)

    return tuple(sorted(set(names), key=rank))


# ---------------------------------------------------------------- config labels


def _flatten(config: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(config, dict):
        out: dict[str, str] = {}
        for key, value in config.items():
            out |= _flatten(value, f"{prefix}{key}.")
        return out
    return {prefix[:-1]: json.dumps(config, sort_keys=True, separators=(",", ":"))}


SUBSET_OPTIONS = ("max_train", "max_eval")  # task options that change what a row measures (0 = every member)


def _config_of(r: ResultRecord) -> dict:
    """The method config, plus the task options that subsample the zoo (a zoo-size study's rows)."""
    return {**_flatten(r.method_config), **_flatten({k: r.task_config.get(k) or 0 for k in SUBSET_OPTIONS}, "task.")}


def config_labels(records: Sequence[ResultRecord]) -> dict[str, str]:
    """record_id -> short label: the record's own label, else the config keys that differ
    between runs of the same method (``''`` when the method has one config only)."""
    flats = {r.record_id: _config_of(r) for r in records}
    configs: dict[str, dict[str, dict[str, str]]] = {}
    for r in records:
        flat = flats[r.record_id]
        configs.setdefault(r.method, {})[json.dumps(flat, sort_keys=True)] = flat
    varying: dict[str, list[str]] = {}
    for method, by_blob in configs.items():
        keys = sorted({k for flat in by_blob.values() for k in flat})
        varying[method] = [k for k in keys if len({flat.get(k) for flat in by_blob.values()}) > 1]
    labels = {}
    for r in records:
        own = r.variant
        if own is not None:
            labels[r.record_id] = own
            continue
        flat = flats[r.record_id]
        label = ", ".join(f"{k}={flat.get(k, '-')}" for k in varying[r.method])
        if len(label) > MAX_LABEL_CHARS:
            digest = hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:8]
            label = f"config {digest}"
        labels[r.record_id] = label
    return labels


# ---------------------------------------------------------------- aggregation


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def aggregate_rows(records: Sequence[ResultRecord], labels: dict[str, str], by_content: bool = False) -> list[Row]:
    """Group records into rows (one per method/config/preset/member/status/version, and with
    by_content one per zoo content digest) over seeds."""
    groups: dict[tuple, dict[int, ResultRecord]] = {}
    for r in records:
        key = (r.method, labels[r.record_id], r.preset, r.member, r.status, r.task_version, r.zoo_version, r.n_eval,
               r.method_version, r.zoo_digest if by_content else None)
        seeds = groups.setdefault(key, {})
        if r.seed not in seeds or (r.date, r.record_id) > (seeds[r.seed].date, seeds[r.seed].record_id):
            seeds[r.seed] = r
    rows = []
    for (method, label, preset, member, status, task_v, zoo_v, n_eval, _, digest), by_seed in groups.items():
        recs = [by_seed[s] for s in sorted(by_seed)]
        names = sorted({m for r in recs for m in r.metrics})
        metrics = {m: Stat.of([r.metrics[m] for r in recs if m in r.metrics]) for m in names}
        params = [r.n_params for r in recs if r.n_params is not None]
        nbytes = [b for b in (_number(r.extra.get("bytes")) for r in recs) if b is not None]
        reasons = _sorted_set(r.reason for r in recs if r.reason)
        rows.append(Row(method, label, preset, member, status, "; ".join(reasons) or None, tuple(sorted(by_seed)),
                        metrics, Stat.of(params) if params else None, Stat.of(nbytes) if nbytes else None,
                        Stat.of([r.wall_s for r in recs]), _sorted_set(r.device for r in recs), task_v, zoo_v,
                        n_eval, digest))
    rows.sort(key=lambda w: (natural_key(w.member), w.method, natural_key(w.config), natural_key(w.preset)))
    rows.sort(key=lambda w: version_key(w.zoo_version), reverse=True)  # stable: newest versions first
    rows.sort(key=lambda w: (w.status != "ok", -w.task_version))
    return rows


def newest_content(records: Sequence[ResultRecord]) -> str | None:
    """The zoo content digest of the newest record that has one (None: no record has one)."""
    dated = [r for r in records if r.zoo_digest]
    return max(dated, key=lambda r: (r.date, r.record_id)).zoo_digest if dated else None


def build_tables(records: Sequence[ResultRecord]) -> list[Table]:
    """One table per (task, zoo, zoo variant, benchmark entry the records match), sorted; older
    task/zoo/method versions kept apart."""
    by_table: dict[tuple[str, str, str, str], list[ResultRecord]] = {}
    entries = loadable_benchmarks()[0]  # a broken entry names no table; `list` shows its error
    matched: dict[tuple, str] = {}
    for r in records:
        settings = (r.task, r.zoo, r.zoo_variant, json.dumps(r.task_config, sort_keys=True))
        if settings not in matched:
            hit = match_benchmark(r.task, r.zoo, r.zoo_variant, r.task_config, entries) if entries else None
            matched[settings] = hit.name if hit else ""
        by_table.setdefault((r.task, r.zoo, r.zoo_variant or "", matched[settings]), []).append(r)
    tables = []
    for (task, zoo, variant, entry), recs in sorted(by_table.items(), key=lambda kv: (
            kv[0][0], kv[0][1], kv[0][2] != "full", natural_key(kv[0][2]), kv[0][3])):
        labels = config_labels(recs)
        task_v = max(r.task_version for r in recs)
        zoo_v = max((r.zoo_version for r in recs), key=version_key)
        newest_method = {}
        for r in recs:
            newest_method[r.method] = max(newest_method.get(r.method, r.method_version), r.method_version)
        recs_now = [r for r in recs if r.method_version == newest_method[r.method]]
        current = [r for r in recs_now if r.task_version == task_v and r.zoo_version == zoo_v]
        if not current:  # the newest task and zoo versions were never run together
            task_v, zoo_v = max(((r.task_version, r.zoo_version) for r in recs_now),
                                key=lambda tv: (tv[0], version_key(tv[1])))
            current = [r for r in recs_now if (r.task_version, r.zoo_version) == (task_v, zoo_v)]
        content = newest_content(current)
        current = [r for r in current if r.zoo_digest in (None, content)]  # None: records from before digests
        ids = {r.record_id for r in current}
        older = [r for r in recs if r.record_id not in ids]
        hib: dict[str, bool] = {}
        for r in sorted(recs, key=lambda r: (r.date, r.record_id)):  # newest record's direction wins
            hib |= r.higher_is_better
        tables.append(Table(
            task=task, zoo=zoo, zoo_variant=variant or None, task_version=task_v, zoo_version=zoo_v,
            metrics=metric_order(m for r in current for m in r.metrics), higher_is_better=hib,
            rows=tuple(aggregate_rows(current, labels)), provenance=Provenance.of(current),
            older_metrics=metric_order(m for r in older for m in r.metrics),
            older_rows=tuple(aggregate_rows(older, labels, by_content=True)),
            older_provenance=Provenance.of(older) if older else None, card_version=_card_version(zoo),
            benchmark=entry or None))
    return tables


def _card_version(zoo: str) -> str | None:
    from ..registry import ZOOS

    try:
        return str(ZOOS.get(zoo).version)
    except Exception:  # noqa: BLE001 - an imported or unregistered zoo: nothing to compare with
        return None


TITLE = "wsbench leaderboards"  # the pages' heading; README.md's first line marks a folder as a leaderboard
