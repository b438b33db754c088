"""Transfer matrices (SNE's cross-dataset protocol): Kendall tau of a predictor trained on one zoo
(rows) and scored on each zoo (columns), every method side by side.

They are derived from the cross_dataset tables: each record of a run scored on several evaluation
zoos names the one it scored in ``member`` (the training zoo's own test split is the diagonal).
One matrix per zoo variant; a cell is the mean +- sample std over seeds, as in the tables. Bold
marks the best method of each (train, eval) cell; under each matrix, a count of the cells each
method wins off the diagonal (the transfer cells) says where which method is ahead.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from .tables import Row, Stat, Table, natural_key, slugify

MATRIX_TASKS = ("cross_dataset",)
MATRIX_METRIC = "tau"


@dataclass(frozen=True)
class MatrixRow:
    method: str  # method name and config label, as in the tables
    preset: str | None
    train_zoo: str
    cells: dict[str, Stat]  # eval zoo -> metric over seeds


@dataclass(frozen=True)
class TransferMatrix:
    task: str
    variant: str | None
    metric: str
    zoos: tuple[str, ...]  # every training and evaluation zoo, in column order
    rows: tuple[MatrixRow, ...]
    source_slugs: tuple[str, ...]  # the tables the cells come from (their commands and provenance)

    @property
    def title(self) -> str:
        return f"{self.task} matrix · {self.variant or 'full'} zoos"

    @property
    def slug(self) -> str:
        return slugify(f"matrix-{self.task}-{self.variant or 'full'}")

    @property
    def short_names(self) -> dict[str, str]:
        """Zoo names without the prefix they all share ('small_cnn_mnist' -> 'mnist')."""
        prefix = os.path.commonprefix(list(self.zoos))
        prefix = prefix[:prefix.rfind("_") + 1] if len(self.zoos) > 1 else ""
        return {z: z[len(prefix):] or z for z in self.zoos}

    def best(self) -> set[tuple[int, str]]:
        """(row index, eval zoo) of the best mean of each (train zoo, eval zoo) cell, when rows differ."""
        out: set[tuple[int, str]] = set()
        for train in self.zoos:
            for zoo in self.zoos:
                means = {i: r.cells[zoo].mean for i, r in enumerate(self.rows) if r.train_zoo == train and zoo in r.cells}
                if len(set(means.values())) >= 2:
                    top = max(means.values())
                    out |= {(i, zoo) for i, m in means.items() if m == top}
        return out

    def transfer_wins(self) -> dict[str, tuple[int, int]]:
        """method -> (off-diagonal cells it is best in, off-diagonal cells it was scored in)."""
        best = self.best()
        contested = {(r.train_zoo, z) for (i, z) in best for r in (self.rows[i],)}
        wins: dict[str, list[int]] = {}
        for i, row in enumerate(self.rows):
            tally = wins.setdefault(row.method, [0, 0])
            for zoo in row.cells:
                if zoo != row.train_zoo and (row.train_zoo, zoo) in contested:
                    tally[0] += (i, zoo) in best
                    tally[1] += 1
        return {m: (w, n) for m, (w, n) in sorted(wins.items())}


def build_matrices(tables: Sequence[Table]) -> list[TransferMatrix]:
    """One matrix per (task, zoo variant) from the current rows of the transfer tables whose records
    name their evaluation zoo; empty when no such records exist."""
    grouped: dict[tuple[str, str | None], list[tuple[Table, Row]]] = {}
    for t in tables:
        if t.task not in MATRIX_TASKS:
            continue
        for row in t.rows:
            if row.status == "ok" and row.member and MATRIX_METRIC in row.metrics:
                grouped.setdefault((t.task, t.zoo_variant), []).append((t, row))
    matrices = []
    for (task, variant), hits in sorted(grouped.items(), key=lambda kv: (kv[0][0], natural_key(kv[0][1]))):
        by_row: dict[tuple[str, str | None, str], dict[str, Stat]] = {}
        for t, row in hits:
            by_row.setdefault((row.name, row.preset, t.zoo), {})[str(row.member)] = row.metrics[MATRIX_METRIC]
        trains = sorted({k[2] for k in by_row}, key=natural_key)
        evals = sorted({z for cells in by_row.values() for z in cells} - set(trains), key=natural_key)
        rows = tuple(MatrixRow(m, p, z, cells) for (m, p, z), cells in sorted(
            by_row.items(), key=lambda kv: (trains.index(kv[0][2]), kv[0][0], natural_key(kv[0][1]))))
        matrices.append(TransferMatrix(task, variant, MATRIX_METRIC, tuple(trains + evals), rows,
                                       tuple(sorted({t.slug for t, _ in hits}))))
    return matrices


def wins_line(matrix: TransferMatrix) -> str:
    wins = matrix.transfer_wins()
    if not any(n for _, n in wins.values()):
        return "No transfer cell was scored by two or more methods yet."
    parts = [f"{m} {w} of {n}" for m, (w, n) in sorted(wins.items(), key=lambda kv: (-kv[1][0], kv[0])) if n]
    return ("Best mean in the transfer cells (trained on one zoo, scored on another; ties count for each): "
            + ", ".join(parts) + ".")


MATRIX_INTRO = ("Kendall tau of a predictor trained on the zoo of the row (its train split, val for model "
                "selection) and scored on the test split of the zoo of each column; the diagonal is in-distribution. "
                "Cells are mean ± sample std over seeds; bold is the best method of each cell.")
