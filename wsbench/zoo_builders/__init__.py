"""Zoo builders: turn a card (zoos/NAME.yaml) into a built zoo folder.

A builder is registered by name (the card's `builder` key) and called as
`builder(card, ctx) -> BuildResult`; `build_zoo` resolves the variant, runs it and writes the zoo
atomically. Builders that train many members save finished shards in `ctx.workdir` so that an
interrupted build resumes where it stopped (see the resumable builders).

Under torchrun (wsbench.distributed) a builder marked `shards_across_ranks` runs on every rank:
rank r trains the shards it owns (r, r + W, ...) into the shared work folder, and rank 0
assembles and writes the zoo, as a single process would. Other builders run on rank 0 alone.
Every rank returns the written zoo.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

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
    rank: int = 0  # this process under torchrun; shards k with k % world_size == rank are its own
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: assembles and writes the zoo."""
        return self.rank == 0

    def owns(self, shard_index: int) -> bool:
        """Whether this rank builds shard `shard_index`."""
        return shard_index % self.world_size == self.rank

    def barrier(self) -> None:
        """Wait for every rank (nothing in a single process)."""
        if self.world_size > 1:
            from .. import distributed

            distributed.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj` in rank order; waits for all ranks (so for their shards)."""
        if self.world_size == 1:
            return [obj]
        from .. import distributed

        return distributed.all_gather_object(obj)


@dataclass
class BuildResult:
    members: pd.DataFrame  # id, split, group, row, hyper-parameters, metrics
    weights: dict[str, dict[str, Tensor]]  # group -> key -> [n, *shape]
    stats: dict[str, Any] = field(default_factory=dict)  # timings, networks/s (printed, kept in card)


def shards_across_ranks(builder: Callable) -> Callable:
    """Mark a builder that splits its shards over torchrun ranks (BuildContext.owns) and returns
    its result on rank 0 only; unmarked builders run on rank 0 alone."""
    builder.shards_across_ranks = True  # type: ignore[attr-defined]
    return builder


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
    return build_resolved(resolved, root, device=device, progress=progress, overwrite=overwrite, log=log)


def build_resolved(resolved: ZooCard, root: Path, *, device: str | torch.device = "cpu", progress: bool | None = None,
                   overwrite: bool = False, log: Callable[[str], None] | None = None):
    """Build a resolved card (one variant's recipe; also a variant made in code, as the scale
    measurements do) into the folder `root`."""
    from .. import distributed
    from .. import zoo as zoo_mod

    zoo_mod.check_zoo_output(root, overwrite=True)  # before any work: never replace a folder of other files
    world = max(distributed.world(), int(os.environ.get("WORLD_SIZE", "1")))  # torchrun sets it before setup
    with _build_lock(root, world, log or print):
        if (root / zoo_mod.CARD_FILE).exists() and not overwrite:  # built by another process meanwhile
            _drop_if_nothing_to_resume(_work_folder(root))
            return zoo_mod.load_zoo(root)
        return _build_locked(resolved, root, device, progress, overwrite, log)


def _work_folder(root: Path) -> Path:
    return root.with_name(f".{root.name}.work")


@contextlib.contextmanager
def _build_lock(root: Path, world: int, log: Callable[[str], None]) -> Iterator[None]:
    """One build of a zoo folder at a time: an exclusive flock on its work folder (no lock file), so
    that other variants of the zoo build meanwhile. Two first runs of an auto-built zoo used to share
    the work folder until one deleted it under the other; a build that waits says so. The folder is
    removed when a build ends, so a lock taken on a removed folder is taken again on the new one.
    Under torchrun (world > 1) the ranks build together and are not serialised."""
    if world > 1:
        yield
        return
    workdir, told = _work_folder(root), False
    while True:
        workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not told:
                log(f"waiting for another process that builds {root} to finish")
                told = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            current = os.stat(workdir).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _drop_if_nothing_to_resume(workdir: Path) -> None:
    """After a failed build: keep the work folder only if it holds finished shards to resume from."""
    if not any(workdir.glob("shards/*.parquet")):
        shutil.rmtree(workdir, ignore_errors=True)


def _build_locked(resolved: ZooCard, root: Path, device: str | torch.device, progress: bool | None,
                  overwrite: bool, log: Callable[[str], None] | None):
    from .. import distributed
    from .. import zoo as zoo_mod

    workdir = _work_folder(root)
    workdir.mkdir(parents=True, exist_ok=True)
    builder = BUILDERS.get(resolved.builder)
    if progress is None:  # bars only on a terminal (not in CI, not in pipes)
        from ..console import progress_enabled

        progress = progress_enabled()
    device = distributed.setup(device)
    rank, world = distributed.rank(), distributed.world()
    ctx = BuildContext(device=device, workdir=workdir, progress=progress and rank == 0, rank=rank, world_size=world)
    if log is not None:
        ctx.log = log
    if rank != 0:
        ctx.log = lambda _m: None
    try:
        if getattr(builder, "shards_across_ranks", False):
            result: BuildResult = builder(resolved, ctx)
        elif rank == 0:  # a builder that knows nothing of ranks works alone
            result = builder(resolved, replace(ctx, rank=0, world_size=1))
    except BaseException:
        if rank == 0:
            _drop_if_nothing_to_resume(workdir)
        raise
    if rank != 0:
        distributed.barrier()  # rank 0 writes the zoo
        return zoo_mod.load_zoo(root)
    stats = {**result.stats, "processes": world} if world > 1 else result.stats
    if stats:
        resolved.recipe = {**resolved.recipe, "build_stats": stats}
    try:
        z = zoo_mod.write_zoo(root, resolved, result.members, result.weights, overwrite=overwrite or root.exists())
        shutil.rmtree(workdir, ignore_errors=True)
    except BaseException:
        _drop_if_nothing_to_resume(workdir)
        raise
    finally:
        distributed.barrier()
    return z
