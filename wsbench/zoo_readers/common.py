"""What every zoo reader shares: the registry of formats, the card of an imported zoo, the safe
tensor-checkpoint loader and the members-table helpers."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from torch import Tensor

from ..errors import ConfigError, IntegrityError
from ..registry import Registry
from ..zoo_card import ZooCard

READERS: Registry = Registry("zoo format")
IMPORTED_VARIANT = "imported"

ReaderResult = tuple[ZooCard, pd.DataFrame, dict[str, dict[str, Tensor]]]


def load_tensor_checkpoint(path: Path, reader: str, unwrap: str | None = None) -> dict[str, Tensor]:
    """A published checkpoint read with weights_only=True (never unrestricted pickle), which must be a
    state dict of tensors (optionally wrapped under `unwrap`); IntegrityError naming the file otherwise."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise IntegrityError(f"{reader}: {path} is not a plain tensor checkpoint (read with weights_only=True, "
                             f"never unrestricted pickle): {type(e).__name__}: {str(e)[:200]}") from None
    if unwrap is not None and isinstance(sd, dict) and isinstance(sd.get(unwrap), dict):
        sd = sd[unwrap]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise IntegrityError(f"{reader}: {path} does not hold a state dict of tensors")
    return sd


Reader = Callable[..., ReaderResult]


def imported_card(name: str, fmt: str, *, kind: str, dataset: str, archs: dict[str, dict[str, Any]], description: str,
                  source: Path, recipe: dict[str, Any] | None = None, license: str = "", citation: str = "",
                  splits: dict[str, Any] | None = None) -> ZooCard:
    """The card of an imported zoo: variant `imported`; its `tiny` entry only says it cannot be rebuilt."""
    return ZooCard(
        name=name, version="imported-1", description=description, kind=kind, dataset=dataset, archs=archs,
        builder=f"import:{fmt}", recipe={"imported_from": str(source), "format": fmt, **(recipe or {})},
        splits=splits or {}, license=license, provenance=f"imported by `run_bench.py import-zoo {fmt}` from {source}",
        citation=citation, nondeterminism="none (weights copied from the published files)",
        variants={IMPORTED_VARIANT: {}, "tiny": {"note": "an imported zoo has no tiny build; import with --limit"}},
        default_variant=IMPORTED_VARIANT, variant=IMPORTED_VARIANT)


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
        raise ConfigError(f"zoo name {name!r} must be letters, digits, '_', '-' or '.' (it becomes a folder name)")
    return name


def order_columns(df: pd.DataFrame) -> pd.DataFrame:
    first = ["id", "split", "group", "row"]
    return df[first + [c for c in df.columns if c not in first]].reset_index(drop=True)
