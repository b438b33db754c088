"""Zoos by name: a registered zoo's folder in the store ($WSBENCH_ZOO_DIR/NAME/VARIANT), built on
first use when its variant is cheap (`auto_build`), or any zoo folder by path. Sits above both the
zoo format (zoo.py) and the builders, which know nothing of each other's callers."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError
from .registry import ZOOS
from .zoo import CARD_FILE, Zoo, built_zoo_path, load_zoo


def open_zoo(name_or_path: str | os.PathLike, *, variant: str | None = None, verify: bool = True) -> Zoo:
    """A zoo folder, or a registered zoo name from the store (building cheap variants). A bare
    registered name means the registered zoo unless a zoo folder (with its card) of that name is here:
    an unrelated folder named like it does not hide it."""
    text = str(name_or_path)
    path = Path(name_or_path)
    bare = os.sep not in text and not text.startswith(".")
    if path.is_dir() and not (bare and not (path / CARD_FILE).exists() and text in ZOOS):
        return load_zoo(path, verify=verify)
    if not bare:
        raise DataError(f"zoo folder {path} does not exist")
    card = ZOOS.get(text)  # UnknownNameError with close names
    variant = variant or card.default_variant
    root = built_zoo_path(card.name, variant)
    if not (root / CARD_FILE).exists():
        if not card.variant_config(variant).get("auto_build", False):
            raise DataError(f"zoo {card.name} ({variant}) is not built yet: run "
                            f"`python run_bench.py build-zoo {card.name} --variant {variant}`")
        from .zoo_builders import build_zoo

        return build_zoo(card.name, variant=variant)
    return load_zoo(root, verify=verify)
