"""Zoo cards (zoos/*.yaml): what a zoo is, how it is built, and its variants.

A card names the zoo and its version, the architecture group(s), the dataset, the training
recipe and hyper-parameter grid, seeds, splits, licence and provenance, and a `variants`
mapping (every card has `tiny`, which builds on CPU in seconds for tests) whose entries
override top-level keys. A built zoo folder keeps the resolved card with `variant` set.
"""
from __future__ import annotations

import copy
import math
import os
import re
import tempfile
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from .errors import ConfigError, DataError
from .options import parse_options
from .resources import resource_dir

CARD_FORMAT_VERSION = 1
GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CARDS_DIR = resource_dir("zoos")


@dataclass
class ZooCard:
    name: str
    version: str
    description: str
    kind: str  # "cnn" | "resnet" | "inr"
    dataset: str  # wsbench.data dataset name the members were trained on / fitted to
    archs: dict[str, dict[str, Any]]  # group -> {"arch": registry name, "kwargs": {...}}
    builder: str  # zoo builder registry name
    recipe: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)
    seeds: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, Any] = field(default_factory=dict)
    split_ids: dict[str, list[str]] | None = None  # explicit member ids per split (optional)
    license: str = ""
    provenance: str = ""
    nondeterminism: str = ""
    citation: str = ""
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_variant: str = "full"
    variant: str | None = None  # set in a built zoo's copy of the card
    format_version: int = CARD_FORMAT_VERSION

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "card") -> "ZooCard":
        if not isinstance(d, dict):
            raise DataError(f"{where}: a zoo card must be a YAML mapping")
        fv = d.get("format_version", CARD_FORMAT_VERSION)
        if fv != CARD_FORMAT_VERSION:
            raise DataError(f"{where}: card format_version {fv!r} is not supported (this wsbench reads {CARD_FORMAT_VERSION})")
        missing = [k for k in ("name", "version", "description", "kind", "dataset", "archs", "builder") if k not in d]
        if missing:
            raise DataError(f"{where}: card lacks required keys {missing}")
        defaults = {f.name: f.default if f.default is not MISSING else (f.default_factory() if f.default_factory
                    is not MISSING else "") for f in fields(cls)}  # the required keys' types: strings, archs a mapping
        defaults["archs"] = {}
        try:  # the one option rule: unknown keys named with the closest, types from the defaults
            parse_options(where, d, defaults, untyped=("version", "description", "split_ids", "variant"),
                          nullable=("recipe", "grid", "seeds", "splits", "variants"))
        except ConfigError as error:
            raise DataError(str(error)) from None
        card = cls(**{k: copy.deepcopy(v) for k, v in d.items()})
        card.version = str(card.version)
        for g, a in card.archs.items():
            if not isinstance(g, str) or not GROUP_NAME.match(g):
                raise DataError(f"{where}: architecture group name {g!r} must be letters, digits, '_', '.', '-' "
                                "(it names a file in the zoo folder)")
            if not isinstance(a, dict) or "arch" not in a:
                raise DataError(f"{where}: archs.{g} must be a mapping with an 'arch' key")
            if not isinstance(a.get("kwargs", {}), dict):
                raise DataError(f"{where}: archs.{g}.kwargs must be a mapping of keyword arguments, "
                                f"got {type(a['kwargs']).__name__}")
        if "tiny" not in card.variants:
            raise DataError(f"{where}: every zoo card needs a 'tiny' variant")
        return card

    def variant_config(self, variant: str) -> dict[str, Any]:
        if variant not in self.variants:
            raise ConfigError(f"zoo {self.name} has no variant {variant!r} (variants: {sorted(self.variants)})")
        return dict(self.variants[variant])

    def resolve(self, variant: str) -> "ZooCard":
        """The card with the variant's overrides: recipe/grid/seeds/splits merged one level deep, other keys replaced."""
        over = self.variant_config(variant)
        d = asdict(self)
        for k, v in over.items():
            if k in ("auto_build", "n_members", "note"):
                d.setdefault("recipe", {})[k] = v
            elif k in ("recipe", "grid", "seeds", "splits") and isinstance(v, dict):
                d[k] = {**(d.get(k) or {}), **v}
            elif k in d:
                d[k] = v
            else:
                d.setdefault("recipe", {})[k] = v
        d["variant"] = variant
        return ZooCard.from_dict(d)

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(asdict(self), f, sort_keys=False)
        os.replace(tmp, path)


def load_card(path: str | os.PathLike) -> ZooCard:
    path = Path(path)
    try:
        d = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DataError(f"zoo card {path} does not exist") from None
    except yaml.YAMLError as e:
        raise DataError(f"zoo card {path} is not valid YAML: {e}") from None
    return ZooCard.from_dict(d, where=str(path))


def card_path(name: str) -> Path:
    return CARDS_DIR / f"{name}.yaml"


def registered_cards() -> dict[str, ZooCard | DataError]:
    """Every card in zoos/*.yaml, by name; a card that cannot be read is its DataError (so that one
    broken card fails only the commands that use it)."""
    cards: dict[str, ZooCard | DataError] = {}
    for p in sorted(CARDS_DIR.glob("*.yaml")):
        try:
            cards[p.stem] = load_card(p)
        except DataError as e:
            cards[p.stem] = e
    return cards


# ---------------------------------------------------------------- split rules (builders and readers)

def split_counts(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Exact split sizes summing to n (largest remainder; ties go to the smaller split); every split
    with a positive fraction gets at least one item when n allows."""
    names = list(fractions)
    total = sum(float(fractions[k]) for k in names)
    if total <= 0 or any(float(fractions[k]) < 0 for k in names):
        raise ConfigError(f"split fractions must be non-negative and not all zero, got {dict(fractions)}")
    quota = {k: n * float(fractions[k]) / total for k in names}
    counts = {k: int(math.floor(quota[k])) for k in names}
    by_remainder = sorted(names, key=lambda k: (-(quota[k] - counts[k]), float(fractions[k])))
    for k in by_remainder[:n - sum(counts.values())]:
        counts[k] += 1
    for k in names:  # a split that should exist is never empty
        if counts[k] == 0 and float(fractions[k]) > 0:
            donor = max(names, key=lambda d: counts[d])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[k] = 1
    return counts


def assign_splits(ids: Sequence[int], fractions: Mapping[str, float], seed: int) -> dict[int, str]:
    """{run index: split}: exact sizes, random (seeded) but independent of the order of `ids`."""
    ids = sorted(set(int(i) for i in ids))
    keys = np.array([np.random.default_rng([int(seed), i]).random() for i in ids])
    order = [ids[j] for j in np.argsort(keys, kind="stable")]
    out, start = {}, 0
    for name, count in split_counts(len(ids), fractions).items():
        for i in order[start:start + count]:
            out[i] = name
        start += count
    return out
