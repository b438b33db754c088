"""Shard-based resume for zoo builds.

A build trains its members in shards (a few hundred networks trained together). Every finished
shard is saved in the build's work folder as `<shard>.safetensors` (stacked weights of one
architecture group) and `<shard>.parquet` (its member rows, `shard_row` pointing into the
weights). Each file is written to a temporary name and renamed, the parquet file last: a shard
counts as done only when both exist, so Ctrl-C at any moment leaves complete shards only. A
restarted build skips the done shards; `plan.json` holds a fingerprint of the resolved card,
and shards of a different recipe are discarded instead of being mixed in.

Several processes (torchrun) share one work folder: rank 0 opens it first (tidying and checking
the plan), each rank saves the shards it owns, and rank 0 loads them all once every rank is done.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..errors import IntegrityError
from ..zoo_card import ZooCard

BUILDER_FORMAT = 1  # bump when a builder's output for the same card changes
_VOLATILE_RECIPE_KEYS = ("build_stats", "auto_build", "note")


def card_fingerprint(card: ZooCard, extra: Mapping[str, Any] | None = None) -> str:
    """sha256 of what determines a build's members: the resolved card (minus notes and stats)."""
    d = asdict(card)
    d["recipe"] = {k: v for k, v in (d.get("recipe") or {}).items() if k not in _VOLATILE_RECIPE_KEYS}
    for k in ("description", "license", "provenance", "citation", "nondeterminism", "variants", "default_variant"):
        d.pop(k, None)
    d["_builder_format"] = BUILDER_FORMAT
    d["_extra"] = dict(extra or {})
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ShardStore:
    """Finished shards of one build, in `workdir/shards`."""

    def __init__(self, workdir: str | os.PathLike, fingerprint: str, log: Callable[[str], None] = print,
                 tidy: bool = True) -> None:
        """`tidy=False` (ranks other than 0): open a folder rank 0 has tidied, remove nothing."""
        self.dir = Path(workdir) / "shards"
        self.dir.mkdir(parents=True, exist_ok=True)
        plan = self.dir / "plan.json"
        if not tidy:
            if not plan.exists() or json.loads(plan.read_text()).get("fingerprint") != fingerprint:
                raise IntegrityError(f"{self.dir}: the build plan of rank 0 is missing or differs from this rank's "
                                     "(all ranks must see the same folder and build the same card on the same device type)")
            return
        for stale in self.dir.glob(".*.tmp"):  # left by an interrupted write
            stale.unlink(missing_ok=True)
        if plan.exists():
            old = json.loads(plan.read_text()).get("fingerprint")
            if old != fingerprint:
                n = len(list(self.dir.glob("*.parquet")))
                if n:
                    log(f"resume: discarding {n} shard(s) built from a different recipe in {self.dir}")
                shutil.rmtree(self.dir)
                self.dir.mkdir(parents=True)
        if not plan.exists():
            _atomic(plan, lambda tmp: Path(tmp).write_text(json.dumps({"fingerprint": fingerprint})))

    def _paths(self, shard_id: str) -> tuple[Path, Path]:
        if not shard_id or "/" in shard_id or shard_id.startswith("."):
            raise ValueError(f"bad shard id {shard_id!r}")
        return self.dir / f"{shard_id}.safetensors", self.dir / f"{shard_id}.parquet"

    def has(self, shard_id: str) -> bool:
        w, m = self._paths(shard_id)
        return w.exists() and m.exists()

    def done(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.parquet") if self.has(p.stem))

    def save(self, shard_id: str, group: str, members: pd.DataFrame, tensors: Mapping[str, Tensor]) -> None:
        """Save one finished shard: member rows (with `shard_row`) and stacked tensors of `group`."""
        w, m = self._paths(shard_id)
        n = {int(t.shape[0]) for t in tensors.values()}
        if len(n) > 1 or (n and max(members["shard_row"], default=-1) >= next(iter(n))):
            raise ValueError(f"shard {shard_id}: members and tensors disagree")
        data = {k: t.detach().to("cpu", torch.float32).contiguous() for k, t in tensors.items()}
        _atomic(w, lambda tmp: save_file(data, tmp, metadata={"group": group, "shard": shard_id}))
        _atomic(m, lambda tmp: members.to_parquet(tmp, index=False))

    def load(self, shard_id: str) -> tuple[str, pd.DataFrame, dict[str, Tensor]]:
        w, m = self._paths(shard_id)
        try:
            members = pd.read_parquet(m)
            with safe_open(str(w), framework="pt") as f:
                group = (f.metadata() or {}).get("group", "")
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:
            raise IntegrityError(f"shard {shard_id} in {self.dir} is unreadable ({e}); delete it to rebuild it") from None
        return group, members, tensors


def assemble(parts: Sequence[tuple[str, pd.DataFrame, Mapping[str, Tensor]]], sort_by: Sequence[str]
             ) -> tuple[pd.DataFrame, dict[str, dict[str, Tensor]]]:
    """Concatenate shards into one members table (sorted by `sort_by`, `row` assigned per group)
    and stacked tensors per group, in the same order."""
    frames = []
    for i, (group, df, _) in enumerate(parts):
        frames.append(df.assign(group=group, _part=i))
    members = pd.concat(frames, ignore_index=True).sort_values(list(sort_by), kind="stable").reset_index(drop=True)
    weights: dict[str, dict[str, Tensor]] = {}
    members["row"] = -1
    for group, idx in members.groupby("group", sort=True).groups.items():
        rows = members.loc[idx]
        part_ids = sorted(set(int(p) for p in rows["_part"]))
        offsets, n = {}, 0
        for p in part_ids:
            offsets[p] = n
            n += next(iter(parts[p][2].values())).shape[0]
        order = torch.as_tensor([offsets[int(p)] + int(r) for p, r in zip(rows["_part"], rows["shard_row"])])
        keys = list(parts[part_ids[0]][2])
        weights[group] = {k: torch.cat([parts[p][2][k] for p in part_ids]).index_select(0, order) for k in keys}
        members.loc[idx, "row"] = range(len(idx))
    return members.drop(columns=["_part", "shard_row"]), weights


def open_store(ctx: Any, fingerprint: str) -> ShardStore:
    """The ShardStore of a build (`ctx`: a BuildContext); with several ranks, rank 0 opens it first."""
    if ctx.world_size == 1:
        return ShardStore(ctx.workdir, fingerprint, ctx.log)
    store = ShardStore(ctx.workdir, fingerprint, ctx.log) if ctx.is_main else None
    ctx.barrier()
    return store if store is not None else ShardStore(ctx.workdir, fingerprint, ctx.log, tidy=False)


def load_shards(store: ShardStore, shard_ids: Sequence[str], world_size: int = 1
                ) -> list[tuple[str, pd.DataFrame, dict[str, Tensor]]]:
    """Every shard, in order; with several ranks, first a check that the other ranks' shards are here."""
    if world_size > 1:
        missing = [s for s in shard_ids if not store.has(s)]
        if missing:
            raise IntegrityError(f"{len(missing)} shard(s) built by other ranks are not in {store.dir} (e.g. "
                                 f"{missing[0]}): with several nodes, the zoo store must be on a file system they share")
    return [store.load(s) for s in shard_ids]


def combine_reports(reports: Sequence[Mapping[str, Any]], maximum: Sequence[str] = ()) -> dict[str, Any]:
    """Per-rank build counters as one: numbers summed (keys in `maximum`: their maximum, e.g. seconds
    the ranks spent side by side), other values from the first rank that has one."""
    out: dict[str, Any] = {}
    for rep in reports:
        for k, v in rep.items():
            if k not in out or (not out[k] and out[k] != 0):
                out[k] = v
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = max(out[k], v) if k in maximum else out[k] + v
    return out
