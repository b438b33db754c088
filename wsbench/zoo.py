"""Model zoos on disk: a folder that is also a Hugging Face dataset repo.

    <zoo>/zoo.yaml               the card (ZooCard), with the variant it was built as
    <zoo>/members.parquet        one row per network: id, split, group, row, hyper-parameters, metrics
    <zoo>/weights/<group>.safetensors   one stacked tensor [n_group_members, *shape] per state-dict key
    <zoo>/manifest.json          sha256 and size of every file, checked on load

A "group" is one architecture (arch + kwargs) of the zoo; `row` is the member's index in its
group's stacked tensors. Zoos are written atomically (staging folder + rename) and never pickled.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from .archs import spec_for_arch
from .errors import DataError, IntegrityError
from .files import sweep_leftovers, temp_name
from .manifest import MANIFEST, read_manifest, safe_relpath, verify_manifest, write_manifest
from .weights import NetworkSpec, WeightSpace
from .zoo_card import ZooCard, card_path, load_card

REQUIRED_COLUMNS = ("id", "split", "group", "row")
METRIC_SUFFIXES = ("_acc", "_acc_exact", "_loss", "_gap", "psnr", "mse")  # columns that must be numbers
CARD_FILE, MEMBERS_FILE, WEIGHTS_DIR = "zoo.yaml", "members.parquet", "weights"


def zoo_store() -> Path:
    """Where built zoos live: $WSBENCH_ZOO_DIR, default ~/.cache/wsbench/zoos."""
    return Path(os.environ.get("WSBENCH_ZOO_DIR", Path.home() / ".cache" / "wsbench" / "zoos"))


def built_zoo_path(name: str, variant: str) -> Path:
    return zoo_store() / name / variant


@dataclass
class Zoo:
    root: Path
    card: ZooCard
    members: pd.DataFrame
    _cache: dict[str, dict[str, Tensor]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def groups(self) -> list[str]:
        return sorted(self.members["group"].unique())

    @functools.cached_property
    def content_digest(self) -> str:
        """What the zoo holds, as 16 hex digits: the sha256 of each weight file (from the manifest,
        which load_zoo verified) and the members table as canonical JSON (not the parquet bytes, which
        depend on the writer's version). Part of every run key: two zoos of the same name, version and
        variant but other networks or labels never share a record."""
        files = read_manifest(self.root)["files"]
        weights = sorted((rel, entry["sha256"]) for rel, entry in files.items() if rel.startswith(f"{WEIGHTS_DIR}/"))
        members = self.members.sort_values("id").to_json(orient="split", index=False, double_precision=15)
        blob = json.dumps({"weights": weights, "members": members}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def spec(self, group: str | None = None) -> NetworkSpec:
        group = group or self._only_group()
        arch = self.card.archs[group]
        return spec_for_arch(arch["arch"], **arch.get("kwargs", {}))

    def _only_group(self) -> str:
        if len(self.card.archs) != 1:
            raise DataError(f"zoo {self.name} has several architecture groups {sorted(self.card.archs)}: name one")
        return next(iter(self.card.archs))

    def split(self, name: str, group: str | None = None) -> pd.DataFrame:
        df = self.members[self.members["split"] == name]
        if group is not None:
            df = df[df["group"] == group]
        if df.empty:
            have = sorted(self.members["split"].unique())
            raise DataError(f"zoo {self.name}: split {name!r}{f' of group {group}' if group else ''} is empty "
                            f"(splits: {have})")
        return df

    def member(self, member_id: str) -> pd.Series:
        rows = self.members[self.members["id"] == member_id]
        if rows.empty:
            from .registry import closest

            hint = closest(member_id, list(self.members["id"].astype(str)))
            raise DataError(f"zoo {self.name} has no member {member_id!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))
        return rows.iloc[0]

    def _group_tensors(self, group: str) -> dict[str, Tensor]:
        if group not in self._cache:
            self._cache[group] = read_weight_file(self.root / WEIGHTS_DIR / f"{group}.safetensors", self.spec(group))
        return self._cache[group]

    def weights(self, members: pd.DataFrame | Sequence[str] | None = None, *, split: str | None = None,
                group: str | None = None, check_finite: bool = True) -> WeightSpace:
        """WeightSpace of the given members (a frame or ids), or of a split, all of one group."""
        if members is None:
            if split:
                members = self.split(split, group)
            else:
                members = self.members if group is None else self.members[self.members["group"] == group]
        elif not isinstance(members, pd.DataFrame):
            ids = list(members)
            unknown = sorted(set(ids) - set(self.members["id"]))
            if unknown:
                self.member(unknown[0])  # clear error with a did-you-mean
            members = self.members.set_index("id", drop=False).loc[ids]
        groups = members["group"].unique()
        if len(groups) != 1:
            raise DataError(f"zoo {self.name}: members span groups {sorted(groups)}; pick one with group=")
        tensors = self._group_tensors(groups[0])
        rows = torch.tensor(members["row"].astype("int64").tolist(), dtype=torch.long)
        ws = WeightSpace(self.spec(groups[0]), {k: t.index_select(0, rows) for k, t in tensors.items()})
        if check_finite:
            ws.check_finite(where=f"zoo {self.name}: ", ids=members["id"].tolist())
        return ws

    def member_arch(self, member_id: str) -> tuple[str, dict]:
        """(arch, kwargs) that reproduce this member's function (see `member_arch`)."""
        return member_arch(self.card, self.member(member_id))

    def state_dict(self, member_id: str) -> dict[str, Tensor]:
        self.member(member_id)  # clear error for an unknown id
        return self.weights(self.members[self.members["id"] == member_id]).state_dict(0)


def member_arch(card: ZooCard, row: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(arch, kwargs) that reproduce one member's function: the group's kwargs, overridden by the
    member's own columns named in the card's `recipe.member_arch_kwargs` ({column: kwarg}), e.g. the
    activation of a small-CNN zoo member (all activations share one group: same shapes)."""
    arch = card.archs[row["group"]]
    kwargs = dict(arch.get("kwargs", {}))
    for column, kwarg in (card.recipe.get("member_arch_kwargs") or {}).items():
        value = row.get(column) if hasattr(row, "get") else None
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            kwargs[kwarg] = value.item() if hasattr(value, "item") else value
    return arch["arch"], kwargs


def read_weight_file(path: Path, spec: NetworkSpec) -> dict[str, Tensor]:
    """Read one group's stacked tensors, checking keys, shapes and dtypes against the spec."""
    if not path.exists():
        raise DataError(f"weight file {path} is missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            missing = [k for k in spec.keys if k not in keys]
            if missing:
                raise IntegrityError(f"{path}: missing tensors {missing[:5]}")
            out = {k: f.get_tensor(k) for k in spec.keys}
    except IntegrityError:
        raise
    except Exception as e:  # truncated or not a safetensors file
        raise IntegrityError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    n = {t.shape[0] if t.dim() else -1 for t in out.values()}
    if len(n) != 1:
        raise IntegrityError(f"{path}: tensors disagree on the number of members")
    for p in spec.params:
        t = out[p.key]
        if t.dtype != torch.float32:
            raise IntegrityError(f"{path}: tensor {p.key!r} has dtype {t.dtype}, expected float32")
        if tuple(t.shape[1:]) != p.shape:
            raise IntegrityError(f"{path}: tensor {p.key!r} has shape {tuple(t.shape[1:])} per member, expected {p.shape}")
    return out


def _first(col: pd.Series) -> Any:
    v = col.iloc[0]
    return v.item() if hasattr(v, "item") else v


def _validate_members(df: pd.DataFrame, card: ZooCard, where: Path) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{where}: members table lacks columns {missing} (required: {list(REQUIRED_COLUMNS)})")
    if df.empty:
        raise DataError(f"{where}: the zoo has no members")
    dup = df["id"][df["id"].duplicated()].tolist()
    if dup:
        raise DataError(f"{where}: duplicate member ids {dup[:5]}")
    unknown = sorted(set(df["group"]) - set(card.archs))
    if unknown:
        raise DataError(f"{where}: members of groups {unknown} that the card does not define")
    if not pd.api.types.is_integer_dtype(df["row"]) or (df["row"] < 0).any():
        raise DataError(f"{where}: column 'row' must hold integers >= 0 (each member's index in its group's "
                        f"weight file), got {df['row'].dtype} values such as {_first(df['row'])!r}")
    for col in df.columns:
        if col.endswith(METRIC_SUFFIXES):
            if not pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
                raise DataError(f"{where}: column {col!r} must hold numbers, got {df[col].dtype} values such as "
                                f"{_first(df[col])!r}")
            inf = df["id"][df[col].abs() == math.inf].tolist()
            if inf:
                raise DataError(f"{where}: column {col!r} is infinite for member(s) {inf[:5]}")
    for split_name, ids in (card.split_ids or {}).items():
        bad = sorted(set(ids) - set(df["id"]))
        if bad:
            raise DataError(f"{where}: card split {split_name!r} refers to unknown members {bad[:5]}")


def load_zoo(root: str | os.PathLike, *, verify: bool = True) -> Zoo:
    """Load the zoo in folder `root` (manifest checked unless verify=False). A registered zoo by
    name, built when cheap: wsbench.zoo_store.open_zoo."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"zoo folder {root} does not exist")
    if not (root / CARD_FILE).exists():
        raise DataError(f"{root} is not a zoo folder: it has no {CARD_FILE}")
    card = load_card(root / CARD_FILE)
    if verify:
        verify_manifest(root)
    members_file = root / MEMBERS_FILE
    if not members_file.exists():
        raise DataError(f"{root}: {MEMBERS_FILE} is missing")
    try:
        members = pd.read_parquet(members_file)
    except Exception as e:
        raise IntegrityError(f"{members_file} is not a readable parquet file ({e})") from None
    _validate_members(members, card, members_file)
    weight_files = [f"{WEIGHTS_DIR}/{g}.safetensors" for g in sorted(members["group"].unique())]
    for rel in weight_files:
        if not safe_relpath(root, rel).is_file():
            raise IntegrityError(f"{root / rel} is missing (members.parquet has members in its group)")
    if verify:  # every file the zoo is read from must be covered by the manifest
        listed = read_manifest(root)["files"]
        unlisted = [rel for rel in [CARD_FILE, MEMBERS_FILE, *weight_files] if rel not in listed]
        if unlisted:
            raise IntegrityError(f"{root}: {unlisted} not listed in {MANIFEST}, so unverified: refusing to load")
    zoo = Zoo(root, card, members.reset_index(drop=True))
    for g in zoo.groups:  # shapes, dtypes and row ranges are checked now, not at first use
        n = next(iter(zoo._group_tensors(g).values())).shape[0]
        rows = members.loc[members["group"] == g, "row"]
        if rows.min() < 0 or rows.max() >= n:
            raise IntegrityError(f"{root}: members of group {g} point at rows outside 0..{n - 1}")
    return zoo


def check_zoo_output(root: str | os.PathLike, *, overwrite: bool) -> None:
    """Refuse an output path that writing a zoo there would destroy: a file, a folder holding anything
    but a wsbench zoo (it is replaced whole), or a zoo without `overwrite`. An empty folder is fine."""
    root = Path(root)
    if not root.exists() and not root.is_symlink():
        return
    if not root.is_dir() or root.is_symlink():
        raise DataError(f"{root} exists and is not a folder; choose another output path")
    if not any(root.iterdir()):
        return
    if not (root / CARD_FILE).is_file():
        raise DataError(f"{root} holds files that are not a wsbench zoo (no {CARD_FILE}); it would be replaced "
                        f"whole, so choose an empty or new folder")
    if not overwrite:
        raise DataError(f"{root} holds a zoo already (pass --overwrite to replace it)")


def write_zoo(root: str | os.PathLike, card: ZooCard, members: pd.DataFrame,
              weights: Mapping[str, Mapping[str, Tensor]], *, overwrite: bool = False) -> Zoo:
    """Write a complete zoo atomically: nothing appears at `root` unless everything was written.
    Only an empty folder or (with `overwrite`) a zoo is replaced (check_zoo_output)."""
    root = Path(root)
    check_zoo_output(root, overwrite=overwrite)
    _validate_members(members, card, root)
    root.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(root.parent, names={root.name})  # a build killed before its rename
    stage = Path(tempfile.mkdtemp(prefix=f".{root.name}.staging-{os.getpid()}-", dir=root.parent))
    try:
        (stage / WEIGHTS_DIR).mkdir()
        for group, tensors in weights.items():
            spec = spec_for_arch(card.archs[group]["arch"], **card.archs[group].get("kwargs", {}))
            data = {k: tensors[k].detach().to("cpu", torch.float32).contiguous() for k in spec.keys}
            save_file(data, str(safe_relpath(stage, f"{WEIGHTS_DIR}/{group}.safetensors")))
        members.reset_index(drop=True).to_parquet(stage / MEMBERS_FILE, index=False)
        card.save(stage / CARD_FILE)
        write_manifest(stage)
        if root.exists():
            old = temp_name(root, "old")
            os.replace(root, old)
            os.replace(stage, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, root)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return load_zoo(root)


__all__ = ["Zoo", "ZooCard", "load_zoo", "write_zoo", "zoo_store", "built_zoo_path", "card_path", "read_weight_file"]

