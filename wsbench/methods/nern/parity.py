"""Parity with the official NeRN code: full-weight MSE curves at equal iterations.

The reference curves (shared/reference/nern_official_resnet20.json, measured from maorash/NeRN on
the suite's own ResNet20 teacher) log the full-weight MSE of the predictions used at step t, i.e.
before step t's update. `mse_curve` records the same quantity (one full no-grad prediction at each
checkpoint), and `compare_curves` sets the mean over seeds against the official value.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Sequence

from .trainer import NeRNTrainer


@dataclass
class CurveRun:
    mse: dict[int, float]  # iteration -> full-weight MSE before that iteration's step
    final_mse: float  # after the last step
    wall_s_per_it: float  # training steps only (checkpoint predictions excluded)


def mse_curve(trainer: NeRNTrainer, checkpoints: Sequence[int], iterations: int | None = None) -> CurveRun:
    """Train `iterations` steps (default: the config's), recording the full MSE at `checkpoints`."""
    total = trainer.cfg["iterations"] if iterations is None else iterations
    wanted = set(checkpoints)
    curve: dict[int, float] = {}
    train_s = 0.0
    trainer.predictor.train()
    for it in range(total):
        if it in wanted:
            curve[it] = trainer.full_mse()
        t0 = time.perf_counter()
        trainer.step(it)
        train_s += time.perf_counter() - t0
    final = trainer.full_mse()
    if total in wanted:
        curve[total] = final
    return CurveRun(curve, final, train_s / max(total, 1))


def compare_curves(official: dict[int, float], ours: dict[int, dict[int, float]],
                   tolerance: float = 0.10, from_iteration: int = 500, every: int = 250) -> dict:
    """Per checkpoint: the official value, each seed's, their mean and spread, mean / official.

    Parity: |mean / official - 1| <= tolerance at every judged checkpoint: iterations >= from_iteration
    that are multiples of `every`, and the last one (the reference is one seed and bumpy between)."""
    rows = []
    for it in sorted(official):
        vals = [run[it] for run in ours.values() if it in run]
        if not vals:
            continue
        mean = statistics.fmean(vals)
        rows.append({"iteration": it, "official": official[it],
                     "ours": {str(seed): run[it] for seed, run in ours.items() if it in run},
                     "mean": mean, "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                     "min": min(vals), "max": max(vals), "ratio": mean / official[it]})
    last = rows[-1]["iteration"] if rows else None
    judged = [r for r in rows if r["iteration"] >= from_iteration
              and (r["iteration"] % every == 0 or r["iteration"] == last)]
    for r in rows:
        r["judged"] = r in judged
    worst = max(judged, key=lambda r: abs(r["ratio"] - 1.0)) if judged else None
    return {"checkpoints": rows,
            "criterion": f"mean over seeds within {tolerance:.0%} of the official value at every {every}th "
                         f"iteration from {from_iteration} on and at the last",
            "passed": bool(judged) and all(abs(r["ratio"] - 1.0) <= tolerance for r in judged),
            "worst": None if worst is None else {"iteration": worst["iteration"], "ratio": worst["ratio"]}}


def official_curve(points: Sequence[Sequence[float]]) -> dict[int, float]:
    """[[iteration, mse], ...] of the reference file -> {iteration: mse} (finite values only)."""
    return {int(p[0]): float(p[1]) for p in points if math.isfinite(float(p[1]))}
