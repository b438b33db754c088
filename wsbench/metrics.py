"""Scores: for encoder tasks Kendall tau-b (ties handled), R^2, MSE and accuracy (1-D array-likes:
lists, numpy arrays or tensors, to Python floats); for reconstructions the relative weight error
per tensor (`relative_weight_errors`, the one rule every reconstructor and the task use).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np


def _vec(a: Any, name: str) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    v = np.asarray(a, dtype=np.float64).reshape(-1)
    if not np.isfinite(v).all():
        raise ValueError(f"{name} has NaN/Inf values")
    return v


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = _vec(y_true, "y_true"), _vec(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values, y_pred {p.size}")
    if t.size == 0:
        raise ValueError("no values to score")
    return t, p


def kendall_tau(x: Any, y: Any, block: int = 2048) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties_x) (n0 - ties_y)).

    Pairs tied in x (or y) count in ties_x (ties_y) and are neither concordant nor discordant,
    as in scipy.stats.kendalltau's default. O(n^2) work in blocks of `block` rows (memory
    O(block * n)); a few seconds for 30k values. NaN when either input is constant.
    """
    a, b = _pair(x, y)
    n = a.size
    s = 0.0  # sum of sign(dx) * sign(dy) over pairs i < j
    tied_x = tied_y = 0.0
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        dx = np.sign(a[i0:i1, None] - a[None, :])
        dy = np.sign(b[i0:i1, None] - b[None, :])
        upper = np.arange(i0, i1)[:, None] < np.arange(n)[None, :]  # each unordered pair once
        s += float((dx * dy)[upper].sum())
        tied_x += float(((dx == 0) & upper).sum())
        tied_y += float(((dy == 0) & upper).sum())
    n0 = n * (n - 1) / 2
    den = math.sqrt((n0 - tied_x) * (n0 - tied_y))
    return s / den if den > 0 else float("nan")


def r2_score(y_true: Any, y_pred: Any) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot (can be negative; NaN for constant y_true)."""
    t, p = _pair(y_true, y_pred)
    ss_tot = float(((t - t.mean()) ** 2).sum())
    ss_res = float(((t - p) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def mse(y_true: Any, y_pred: Any) -> float:
    t, p = _pair(y_true, y_pred)
    return float(((t - p) ** 2).mean())


def accuracy(labels: Any, scores_or_pred: Any) -> float:
    """Fraction (0..1) of correct predictions; `scores_or_pred` is [N, classes] scores or [N] labels."""
    if hasattr(scores_or_pred, "detach"):
        scores_or_pred = scores_or_pred.detach().cpu().numpy()
    s = np.asarray(scores_or_pred)
    pred = s.argmax(axis=1) if s.ndim == 2 else s.reshape(-1)
    lab = _vec(labels, "labels")
    if pred.shape[0] != lab.shape[0]:
        raise ValueError(f"{lab.shape[0]} labels but {pred.shape[0]} predictions")
    if lab.size == 0:
        raise ValueError("no values to score")
    return float((pred.astype(np.int64) == lab.astype(np.int64)).mean())


def regression_scores(y_true: Any, y_pred: Any) -> dict[str, float]:
    """{'tau', 'r2', 'mse'} of a property prediction."""
    return {"tau": kendall_tau(y_true, y_pred), "r2": r2_score(y_true, y_pred), "mse": mse(y_true, y_pred)}




def relative_weight_errors(orig: Mapping[str, Any], new: Mapping[str, Any], keys: Sequence[str]) -> dict[str, float | None]:
    """Per key ||new - orig|| / ||orig|| in float64, and over all keys together under '__total__'.

    A tensor that is zero in the original has no relative error: 0.0 if the reconstruction is zero
    too, else None (never a NaN or an error over a clamped denominator)."""
    out: dict[str, float | None] = {}
    num_total = den_total = 0.0
    for k in keys:
        a, b = orig[k].detach().double(), new[k].detach().double()
        num, den = float((b - a).pow(2).sum()), float(a.pow(2).sum())
        num_total, den_total = num_total + num, den_total + den
        out[k] = math.sqrt(num / den) if den > 0 else (0.0 if num == 0 else None)
    out["__total__"] = math.sqrt(num_total / den_total) if den_total > 0 else (0.0 if num_total == 0 else None)
    return out


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of ys against xs (slope 0 when the xs do not vary)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
    return my - slope * mx, slope
