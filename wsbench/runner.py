"""Run a method on a zoo for a task and turn the outcomes into result records.

Presets live in `baselines/<method>/<preset>.yaml`: a mapping of method config keys, plus
optional `description`, `task` (task options), `extends` (another preset of the same method to
start from) and `groups` (per architecture group overrides; a value may name another preset).
`--preset auto` picks `paper` on a GPU and `quick` on CPU (else `default`, else no preset).

A run is identified by its run key (task, versions, zoo, method, config, seed): a run whose
records exist already is skipped (no duplicates), and its checkpoints live in `runs/<run key>/`
so that an interrupted run resumes where it stopped.

Under torchrun every rank runs the task (encoder tasks only: the encoder trains with DDP, see
tasks.encoder_training); rank 0 alone decides which runs are recorded already, logs and appends
the records, which are those of a single-process run (`device` names the number of processes).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from . import distributed
from .benchmarks import apply_benchmark, load_benchmark
from .errors import ConfigError, DataError, NotApplicableError
from .evaluation import describe_device
from .files import check_folder_path
from .methods.base import RunContext
from .options import yaml11_float
from .registry import METHODS, TASKS
from .resources import resource_dir
from .results import ResultRecord, append_records, current_git_commit, read_records
from .tasks.reconstruction import merged_method_config
from .zoo import Zoo
from .zoo_store import open_zoo

BASELINES_DIR = resource_dir("baselines")
RESERVED = {"description", "task", "extends", "groups"}


@dataclass
class RunRequest:
    method: str
    zoo: str | None
    task: str | None = None
    benchmark: str | None = None  # an entry of benchmarks/: fixes task, zoo, variant and the defining task options
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "auto"
    preset: str = "auto"
    config_path: str | None = None
    overrides: list[str] = field(default_factory=list)  # "key=value" (YAML values)
    members: list[str] | None = None
    zoo_variant: str | None = None
    results_dir: Path = Path("leaderboards/results")
    runs_dir: Path = Path("runs")
    save: bool = True
    force: bool = False
    progress: bool = True
    command: str = ""
    log: Callable[[str], None] = field(default=lambda m: print(m, file=sys.stderr))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device(name)


def preset_names(method: str) -> list[str]:
    d = BASELINES_DIR / method
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder; give a YAML file") from None
    except PermissionError:
        raise ConfigError(f"config file {path} cannot be read (permission denied)") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a YAML mapping")
    for key in ("task", "groups"):
        if key in data and not isinstance(data[key], dict):
            raise ConfigError(f"config file {path}: {key!r} must be a mapping, got {type(data[key]).__name__}")
    return data


def load_preset(method: str, preset: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A preset file with `extends` and named `groups` entries resolved."""
    if not isinstance(preset, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", preset) or ".." in preset:
        raise ConfigError(f"preset {preset!r}: a preset is a name from baselines/{method}/ (letters, digits, '_', "
                          f"'-', '.'); a YAML file of your own goes to --config")
    path = BASELINES_DIR / method / f"{preset}.yaml"
    if not path.exists():
        from .registry import closest

        names = preset_names(method)
        hint = closest(preset, names)
        raise ConfigError(f"method {method!r} has no preset {preset!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                          + f" (presets: {', '.join(names) or 'none'})")
    if preset in _seen:
        raise ConfigError(f"preset {preset!r} of {method!r} extends itself")
    data = _read_yaml(path)
    if "extends" in data:
        base = load_preset(method, data.pop("extends"), _seen + (preset,))
        data = {**base, **data, "task": {**base.get("task", {}), **data.get("task", {})}}
    groups = data.get("groups") or {}
    for g, v in list(groups.items()):
        if isinstance(v, str):
            sub = load_preset(method, v, _seen + (preset,))
            groups[g] = {k: x for k, x in sub.items() if k not in RESERVED}
    if groups:
        data["groups"] = groups
    return data


def preset_method_config(method: str, preset: str) -> dict[str, Any]:
    """The method's own options of a preset (description, task, extends and groups dropped)."""
    return {k: v for k, v in load_preset(method, preset).items() if k not in RESERVED}


def resolve_preset_name(method: str, preset: str, device: torch.device) -> str | None:
    names = preset_names(method)
    if preset != "auto":
        return preset
    for cand in (["paper"] if device.type == "cuda" else ["quick"]) + ["default"]:
        if cand in names:
            return cand
    return None


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
        out[key.strip()] = yaml11_float(parsed)
    return out


def method_and_task_config(req: RunRequest, device: torch.device) -> tuple[str | None, dict, dict]:
    """(preset name, method config, task config). What the user gives (a --config file, --set) wins over
    the preset, also over its per-group values: `--set iterations=100` under a preset with
    `groups: {resnet56: paper_resnet56_h320}` applies to every group."""
    preset = resolve_preset_name(req.method, req.preset, device)
    data = load_preset(req.method, preset) if preset else {}
    user_keys: set[str] = set()
    if req.config_path:
        extra = _read_yaml(Path(req.config_path))
        data = {**data, **extra, "task": {**data.get("task", {}), **extra.get("task", {})}}
        user_keys |= set(extra) - RESERVED
    over = parse_overrides(req.overrides)
    task_over = {k[len("task."):]: v for k, v in over.items() if k.startswith("task.")}
    method_cfg = {k: v for k, v in data.items() if k not in RESERVED - {"groups"}}
    method_cfg |= {k: v for k, v in over.items() if not k.startswith("task.")}
    user_keys |= {k for k in over if not k.startswith("task.")}
    if method_cfg.get("groups") and user_keys:
        method_cfg["groups"] = {g: {k: v for k, v in grp.items() if k not in user_keys}
                                for g, grp in method_cfg["groups"].items()}
    task_cfg = {**(data.get("task") or {}), **task_over}
    if req.members:
        task_cfg["members"] = req.members
    if req.benchmark:
        task_cfg = apply_benchmark(load_benchmark(req.benchmark), None, None, None, task_cfg)
    return preset, method_cfg, task_cfg


def check_method_configs(method_cls: type, method_cfg: dict[str, Any]) -> None:
    """The method's config and each per-group config (`groups: {resnet56: {...}}` merged over it), checked
    the way the method will read them: a typo under a group fails now, not when that group's turn comes."""
    groups = method_cfg.get("groups") or {}
    if not isinstance(groups, dict) or not all(isinstance(v, dict) for v in groups.values()):
        raise ConfigError(f"method {method_cls.name!r}: 'groups' maps architecture groups to config mappings, "
                          f"got {groups!r}")
    for group in [None, *groups]:
        cfg = merged_method_config(method_cfg, group)  # group None: the base config alone
        try:
            if method_cls.capability == "reconstructor":
                method_cls(**cfg)
            else:
                method_cls.parse_config(cfg)
        except ConfigError as error:
            if group is None:
                raise
            raise ConfigError(f"{error} (in groups.{group})") from None


def with_benchmark(req: RunRequest) -> RunRequest:
    """The request with its benchmark entry's task, zoo and variant (refusing contradicting flags), and
    the entry's preset when none was asked for and the method has it."""
    entry = load_benchmark(req.benchmark)
    apply_benchmark(entry, req.zoo, req.zoo_variant, req.task, {})
    preset = req.preset
    if preset == "auto" and entry.preset and entry.preset in preset_names(req.method):
        preset = entry.preset
    return replace(req, zoo=entry.zoo, zoo_variant=entry.zoo_variant, task=entry.task, preset=preset)


def default_task(method_cls: type, zoo: Zoo) -> str:
    if method_cls.capability == "reconstructor":
        return "reconstruction"
    return {"inr": "inr_classification", "cnn": "property_prediction"}.get(zoo.card.kind, "property_prediction")


def run_key(**parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


_ONE_PROCESS = ("{what} runs in one process; torchrun with several processes is for encoder tasks and zoo "
                "building (run it without torchrun)")


def run_benchmark(req: RunRequest, recorded: list[ResultRecord] | None = None) -> list[ResultRecord]:
    """Run and (unless req.save is False) append the records. Returns the new records; the records
    of runs skipped because they are recorded already are appended to `recorded` when given."""
    current_git_commit()  # read now: a long run's records name the commit it started from, not a later HEAD
    method_cls = METHODS.get(req.method)
    if req.benchmark:
        req = with_benchmark(req)
    if req.task:
        TASKS.get(req.task)  # a misspelt task name fails before any zoo is loaded or built
    device = distributed.setup(resolve_device(req.device))
    main = distributed.is_main()
    log = req.log if main else (lambda _m: None)
    preset, method_cfg, task_cfg = method_and_task_config(req, device)
    notes = {"preset_description": " ".join(load_preset(req.method, preset).get("description", "").split())} \
        if preset else {}
    if req.save and main:
        check_writable(req.results_dir)
    check_folder_path(req.runs_dir, "--runs-dir")
    if distributed.world() > 1 and method_cls.capability == "reconstructor":
        raise ConfigError(_ONE_PROCESS.format(what=f"method {req.method} (a reconstructor)"))
    check_method_configs(method_cls, method_cfg)  # every group's config, before any data is loaded
    zoo = open_zoo(req.zoo, variant=req.zoo_variant)
    task_name = req.task or default_task(method_cls, zoo)
    task = TASKS.get(task_name)(**task_cfg)
    ok, why = task.applicable(method_cls, zoo)
    if not ok:
        raise NotApplicableError(f"{why} (try `run_bench.py list` for what each method can do)")
    if distributed.world() > 1 and getattr(task, "capability", "") != "encoder":
        raise ConfigError(_ONE_PROCESS.format(what=f"task {task_name}"))
    readable, unread_why = task.reads_every_network(method_cls, zoo)
    stored: list[ResultRecord] = []
    if main and req.results_dir.exists():
        stored = read_records(req.results_dir)
    keys = distributed.broadcast_object({(r.run_key, r.zoo_digest is not None) for r in stored})
    identity = {"zoo_variant": zoo.card.variant, "zoo_digest": zoo.content_digest, "method_version": method_cls.version,
                "task_config": task_cfg}
    records = []
    for seed in req.seeds:
        versioned = {"method_version": method_cls.version} if method_cls.version != 1 else {}  # v1 keys unchanged
        parts = dict(task=task_name, task_version=task.version, zoo=zoo.name, zoo_version=zoo.version,
                     zoo_variant=zoo.card.variant, method=req.method, method_config=method_cfg, task_config=task_cfg,
                     seed=seed, **versioned)
        key = run_key(**parts, zoo_digest=zoo.content_digest)
        match = None if req.force else _recorded_key(key, run_key(**parts), keys)
        if match:
            log(f"seed {seed}: already recorded (run key {match}); skipping (use --force to run again)")
            if recorded is not None:
                recorded += [r for r in stored if r.run_key == match]
            continue
        if not readable:  # recorded, so that the leaderboard shows the method as not applicable
            log(f"seed {seed}: not applicable: {unread_why}")
            records.append(ResultRecord.create(
                task=task_name, task_version=task.version, zoo=zoo.name, zoo_version=zoo.version, split="test",
                method=req.method, method_config=method_cfg, preset=preset, seed=seed, metrics={},
                higher_is_better={}, status="not_applicable", reason=unread_why, n_train=0, n_eval=0, n_params=None,
                wall_s=0.0, device=distributed.describe(describe_device(device)), command=req.command,
                run_key=key, **identity, extra=notes))
            if req.save and main:
                append_records(req.results_dir, records[-1:], skip_recorded_runs=not req.force)
            continue
        workdir = req.runs_dir / key
        if req.force and workdir.is_dir():  # run again means from the start: not a re-score of the old checkpoint
            log(f"seed {seed}: --force: starting afresh (the checkpoints in {workdir} are discarded)")
            shutil.rmtree(workdir)
        ctx = RunContext(device=device, seed=seed, workdir=workdir, progress=req.progress and main, log=log)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        results = task.run(method_cls, method_cfg, zoo, ctx)
        wall = time.perf_counter() - t0
        device_text = distributed.describe(describe_device(device))
        for r in results:
            records.append(ResultRecord.create(
                task=task_name, task_version=task.version, zoo=zoo.name, zoo_version=zoo.version, split=r.split,
                method=req.method, method_config=r.method_config or method_cfg, preset=preset, seed=seed,
                metrics=r.metrics, higher_is_better=task.directions(r.metrics), status="ok", reason=None,
                n_train=r.n_train, n_eval=r.n_eval, n_params=r.n_params, wall_s=wall, device=device_text,
                command=req.command, run_key=key, member=r.member, variant=r.variant, **identity,
                extra={**r.extra, **notes}))
        _check_finite(records)
        if req.save and records and main:
            append_records(req.results_dir, [r for r in records if r.run_key == key],
                           skip_recorded_runs=not req.force)
    return records


def _recorded_key(key: str, legacy_key: str, keys: set[tuple[str, bool]]) -> str | None:
    """The run key under which this run is recorded (`keys`: (run key, record has a zoo digest) of the
    stored records): its own, or its key from before run keys held the zoo's content digest (records
    without one, so that the committed records stay recognised), else None."""
    if (key, True) in keys or (key, False) in keys:
        return key
    return legacy_key if (legacy_key, False) in keys else None


def check_writable(results_dir: Path) -> None:
    """Fail before the run, not after it, when the results cannot be written."""
    created = [p for p in [results_dir, *results_dir.parents] if not p.exists()]
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        probe = results_dir / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        for p in created:  # leave no empty folders behind: append_records makes them when it writes
            p.rmdir()
    except OSError as e:
        raise ConfigError(f"--results-dir: cannot write results to {results_dir} ({e.strerror or e})") from None


def _check_finite(records: list[ResultRecord]) -> None:
    import math

    for r in records:
        bad = [k for k, v in r.metrics.items() if not math.isfinite(v)]
        if bad:
            raise DataError(f"{r.method} on {r.zoo}: metrics {bad} are NaN/Inf; nothing was written")


