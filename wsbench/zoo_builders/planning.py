"""What a zoo build trains, decided up front from the card alone: per-run hyper-parameters
sampled from the card's grid, splits by run id, and the progress bar with an ETA.

Every run's hyper-parameters come from its own generator seeded by (grid seed, run index), so a
zoo extended with more runs keeps the runs it had, and run i gets the same hyper-parameters in
every architecture group of a family zoo (paired runs for cross-architecture transfer).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError
from ..zoo import member_arch  # noqa: F401  (re-exported: builders use it)
from ..zoo_card import assign_splits, split_counts  # noqa: F401  (re-exported: builders use them)

# sampling order is fixed: adding a grid key never changes the values of the keys before it
GRID_ORDER = ("optimizer", "activation", "lr", "weight_decay", "dropout", "init_scale", "train_fraction",
              "w_init", "init_std", "l2reg")


def _sample_one(key: str, spec: Any, rng: np.random.Generator, sampled: Mapping[str, Any]) -> Any:
    if not isinstance(spec, Mapping):
        return spec  # a constant
    if len(spec) != 1:
        raise ConfigError(f"grid.{key} must be a constant or one of {{choice|uniform|log_uniform: ...}}, got {spec}")
    kind, arg = next(iter(spec.items()))
    if isinstance(arg, Mapping):  # per-optimizer ranges, e.g. lr: {log_uniform: {sgd: [..], adam: [..]}}
        opt = sampled.get("optimizer")
        if opt not in arg:
            raise ConfigError(f"grid.{key}.{kind} has no range for optimizer {opt!r} (has {sorted(arg)})")
        arg = arg[opt]
    if kind == "choice":
        if not arg:
            raise ConfigError(f"grid.{key}.choice is empty")
        return arg[int(rng.integers(len(arg)))]
    lo, hi = (float(v) for v in arg)
    if lo > hi:
        raise ConfigError(f"grid.{key}.{kind}: low {lo} > high {hi}")
    if kind == "uniform":
        return float(rng.uniform(lo, hi))
    if kind == "log_uniform":
        if lo <= 0:
            raise ConfigError(f"grid.{key}.log_uniform needs positive bounds, got {arg}")
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    raise ConfigError(f"grid.{key}: unknown distribution {kind!r} (choice, uniform, log_uniform)")


def sample_runs(grid: Mapping[str, Any], n_runs: int, grid_seed: int, seed_base: int = 0) -> list[dict[str, Any]]:
    """Hyper-parameters of runs 0..n_runs-1 (`seed` = seed_base + run index)."""
    unknown = sorted(set(grid) - set(GRID_ORDER))
    if unknown:
        raise ConfigError(f"unknown grid keys {unknown} (known: {', '.join(GRID_ORDER)})")
    runs = []
    for i in range(n_runs):
        rng = np.random.default_rng([int(grid_seed), i])
        hp: dict[str, Any] = {}
        for key in GRID_ORDER:
            if key in grid:
                hp[key] = _sample_one(key, grid[key], rng, hp)
        hp["seed"] = int(seed_base) + i
        if not 0 <= hp["seed"] < 2 ** 32:
            raise ConfigError(f"run seeds must lie in [0, 2^32), got {hp['seed']}")
        runs.append(hp)
    return runs


def progress(total: float, desc: str, enabled: bool, unit: str = "net"):
    """A tqdm bar on stderr with rate and ETA (silent when disabled)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, smoothing=0.1,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} [{elapsed}<{remaining}, {rate_fmt}]")


def device_name(device) -> str:
    from ..evaluation import describe_device

    return describe_device(device)
