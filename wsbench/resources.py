"""Where the presets (baselines/), zoo cards (zoos/) and benchmark entries (benchmarks/) are: the checkout's top-level folders, or in an
installed, non-editable wsbench the copies its wheel bundles (setup.py puts them in wsbench/_bundled/)."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The folder `name` ("baselines", "zoos" or "benchmarks") this wsbench reads."""
    checkout = PACKAGE.parent / name
    if checkout.is_dir():
        return checkout
    bundled = PACKAGE / "_bundled" / name
    return bundled if bundled.is_dir() else checkout  # neither: the checkout path, for the error messages


def cache_dir() -> Path:
    """Where wsbench keeps what it can rebuild (downloaded data, compiled kernels): $WSBENCH_CACHE_DIR, else
    ~/.cache/wsbench."""
    return Path(os.environ.get("WSBENCH_CACHE_DIR") or Path.home() / ".cache" / "wsbench").expanduser()
