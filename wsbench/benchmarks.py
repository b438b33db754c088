"""Benchmark entries: named, versioned settings of a task on a zoo (`benchmarks/<name>.yaml`).

An entry fixes what makes numbers comparable: the task, the zoo and its variant, and the task
options that define the question (e.g. which architecture groups are held out), plus the headline
metrics and the preset its table was run with. `run_bench.py --benchmark NAME --method M` runs it;
the leaderboard names each table after the entry its records match (records made without
--benchmark match too, by their settings).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import yaml

from .errors import ConfigError, UnknownNameError
from .options import parse_options
from .registry import closest
from .resources import resource_dir

BENCHMARKS_DIR = resource_dir("benchmarks")
FIELDS = {"name": "", "version": 1, "description": "", "task": "", "zoo": "", "zoo_variant": "full", "options": {},
          "preset": "", "metrics": []}


@dataclass(frozen=True)
class Benchmark:
    name: str
    version: int
    description: str
    task: str
    zoo: str
    zoo_variant: str
    options: dict[str, Any]  # the task options that define the entry
    preset: str | None  # the preset its table was run with (a method without it runs its own default)
    metrics: tuple[str, ...]  # headline metrics

    def matches(self, task: str, zoo: str, zoo_variant: str | None, task_config: Mapping[str, Any]) -> bool:
        """Do records of (task, zoo, variant, task_config) answer this entry's question?"""
        if (task, zoo, zoo_variant or "full") != (self.task, self.zoo, self.zoo_variant):
            return False
        effective = effective_task_options(task, task_config)
        return all(effective.get(k) == v for k, v in self.options.items())


def benchmark_names() -> list[str]:
    return sorted(p.stem for p in BENCHMARKS_DIR.glob("*.yaml")) if BENCHMARKS_DIR.is_dir() else []


def load_benchmark(name: str) -> Benchmark:
    """The entry `name`, checked: fields, a registered task and zoo, a variant of the zoo, valid options."""
    names = benchmark_names()
    if name not in names:
        hint = closest(name, names)
        raise UnknownNameError(f"unknown benchmark {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                               + f" (benchmarks: {', '.join(names) or 'none'})")
    path = BENCHMARKS_DIR / f"{name}.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"benchmark file {path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"benchmark file {path}: expected a mapping of fields")
    f = parse_options(f"benchmark {name!r}", raw, FIELDS, untyped=("options", "metrics"))
    if f["name"] != name:
        raise ConfigError(f"benchmark file {path}: its name field is {f['name']!r}, the file says {name!r}")
    if not isinstance(f["options"], dict) or not isinstance(f["metrics"], list) or not f["metrics"]:
        raise ConfigError(f"benchmark {name!r}: options must be a mapping and metrics a non-empty list")
    from .registry import TASKS, ZOOS

    task_cls = TASKS.get(f["task"])
    card = ZOOS.get(f["zoo"])
    if f["zoo_variant"] not in card.variants:
        raise ConfigError(f"benchmark {name!r}: zoo {f['zoo']} has no variant {f['zoo_variant']!r} "
                          f"(variants: {', '.join(card.variants)})")
    task_cls(**f["options"])  # the options are valid task options
    return Benchmark(name, f["version"], f["description"], f["task"], f["zoo"], f["zoo_variant"], dict(f["options"]),
                     f["preset"] or None, tuple(str(m) for m in f["metrics"]))


def all_benchmarks() -> list[Benchmark]:
    return [load_benchmark(n) for n in benchmark_names()]


def loadable_benchmarks() -> tuple[list[Benchmark], dict[str, str]]:
    """(the entries that load, {name: error} of those that do not): one broken entry must not hide
    the others from `list` or the leaderboard."""
    entries, broken = [], {}
    for name in benchmark_names():
        try:
            entries.append(load_benchmark(name))
        except Exception as error:  # noqa: BLE001 - any failure of one entry is reported, not raised
            broken[name] = str(error)
    return entries, broken


def effective_task_options(task: str, task_config: Mapping[str, Any]) -> dict[str, Any]:
    """The task's option defaults overridden by a run's task config (its own sub-mapping merged in)."""
    from .registry import TASKS

    flat = {k: v for k, v in task_config.items() if not isinstance(v, Mapping) or k != task}
    own = task_config.get(task)
    if isinstance(own, Mapping):
        flat.update(own)
    return {**TASKS.get(task).option_defaults(), **flat}


def match_benchmark(task: str, zoo: str, zoo_variant: str | None, task_config: Mapping[str, Any],
                    entries: list[Benchmark] | None = None) -> Benchmark | None:
    """The entry these settings answer (the one fixing the most options when several do), or None."""
    hits = [b for b in (all_benchmarks() if entries is None else entries)
            if b.matches(task, zoo, zoo_variant, task_config)]
    return max(hits, key=lambda b: (len(b.options), b.name)) if hits else None


def apply_benchmark(entry: Benchmark, zoo: str | None, zoo_variant: str | None, task: str | None,
                    task_config: Mapping[str, Any]) -> dict[str, Any]:
    """The task config of a run of `entry`: refuses a --zoo, --zoo-variant or --task that differ from
    the entry's, and a task option the entry fixes set to another value."""
    for flag, given, fixed in (("--zoo", zoo, entry.zoo), ("--zoo-variant", zoo_variant, entry.zoo_variant),
                               ("--task", task, entry.task)):
        if given is not None and given != fixed:
            raise ConfigError(f"--benchmark {entry.name} runs {flag[2:]} {fixed!r}; {flag} {given!r} contradicts it")
    for key, value in entry.options.items():
        if key in task_config and task_config[key] != value:
            raise ConfigError(f"--benchmark {entry.name} fixes task.{key}={value!r}; task.{key}={task_config[key]!r} "
                              f"would make it another benchmark")
    return {**task_config, **entry.options}
