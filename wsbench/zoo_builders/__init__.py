"""Zoo builders: turn a card (zoos/NAME.yaml) into a built zoo folder.

A builder is registered by name (the card's `builder` key) and called as
`builder(card, ctx) -> BuildResult`; `build_zoo` resolves the variant, runs it and writes the zoo
atomically. Builders that train many members save finished shards in `ctx.workdir` so that an
interrupted build resumes where it stopped (see the resumable builders).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from torch import Tensor

from ..registry import Registry
from ..zoo_card import ZooCard

BUILDERS: Registry = Registry("zoo builder")


@dataclass
class BuildContext:
    device: torch.device
    workdir: Path  # scratch space that survives an interrupted build (resume)
    progress: bool = True
    log: Callable[[str], None] = field(default=lambda m: print(m, file=sys.stderr))


@dataclass
class BuildResult:
    members: pd.DataFrame  # id, split, group, row, hyper-parameters, metrics
    weights: dict[str, dict[str, Tensor]]  # group -> key -> [n, *shape]
    stats: dict[str, Any] = field(default_factory=dict)  # timings, networks/s (printed, kept in card)


def build_zoo(name: str, *, variant: str | None = None, device: str | torch.device = "cpu",
              out: str | Path | None = None, progress: bool | None = None, overwrite: bool = False,
              log: Callable[[str], None] | None = None):
    """Build zoo `name` (a registered card) as `variant` into `out` (default: the zoo store)."""
    from .. import zoo as zoo_mod
    from ..registry import ZOOS

    card: ZooCard = ZOOS.get(name)
    variant = variant or card.default_variant
    resolved = card.resolve(variant)
    root = Path(out) if out else zoo_mod.built_zoo_path(card.name, variant)
    workdir = root.with_name(f".{root.name}.work")
    workdir.mkdir(parents=True, exist_ok=True)
    builder = BUILDERS.get(resolved.builder)
    if progress is None:  # bars only on a terminal (not in CI, not in pipes)
        from ..console import progress_enabled

        progress = progress_enabled()
    ctx = BuildContext(device=torch.device(device), workdir=workdir, progress=progress)
    if log is not None:
        ctx.log = log
    result: BuildResult = builder(resolved, ctx)
    if result.stats:
        resolved.recipe = {**resolved.recipe, "build_stats": result.stats}
    z = zoo_mod.write_zoo(root, resolved, result.members, result.weights, overwrite=overwrite or root.exists())
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)
    return z
