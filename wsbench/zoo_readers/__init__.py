"""Readers for zoos published by others: each turns a published layout into the suite's zoo
format (card, members.parquet, stacked safetensors) without unpickling anything.

    small_cnn_zoo   Unterthiner et al. 2020 (weights.npy, metrics.csv.gz, layout.csv)
    dwsnets_inr     DWSNets' INR datasets (one .pth state dict per INR, plus a splits json)
    model_zoos      Schuerholt et al. 2022 (per-model folders: params.json, result.json,
                    checkpoint_NNNNNN/checkpoints)

`import_zoo(fmt, path, name)` writes the zoo to `out` (default: the zoo store,
$WSBENCH_ZOO_DIR/NAME/imported) and returns it loaded. Networks whose weights are not finite
are left out of the weights; their runs are flagged `diverged`.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError, DataError
from .common import (IMPORTED_VARIANT, READERS, Reader, ReaderResult, check_name, imported_card,
                     load_tensor_checkpoint, order_columns)

def import_zoo(fmt: str, path: str | os.PathLike, name: str, out: str | os.PathLike | None = None, *,
               limit: int | None = None, overwrite: bool = False):
    """Import a published zoo of format `fmt` (see READERS) from `path` as zoo `name`."""
    from ..zoo import built_zoo_path, check_zoo_output, write_zoo

    check_name(name)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be a positive number of networks, got {limit}")
    reader: Reader = READERS.get(fmt)
    src = Path(path).expanduser()
    if not src.exists():
        raise DataError(f"{fmt}: {src} does not exist")
    root = Path(out) if out else built_zoo_path(name, IMPORTED_VARIANT)
    check_zoo_output(root, overwrite=overwrite)  # before reading thousands of files
    card, members, weights = reader(src, name, limit=limit)
    if members.empty:
        raise DataError(f"{fmt}: {src} holds no networks with finite weights")
    return write_zoo(root, card, order_columns(members), weights, overwrite=overwrite)


# importing the reader modules registers them
from . import dwsnets_inr, model_zoos, small_cnn_zoo  # noqa: E402,F401

__all__ = ["IMPORTED_VARIANT", "READERS", "ReaderResult", "check_name", "import_zoo", "imported_card",
           "load_tensor_checkpoint", "order_columns"]
