"""Imports every module that registers architectures, methods, tasks, zoo builders and zoos
(loaded lazily by the registry on first look-up)."""
from __future__ import annotations

import importlib
import warnings

MODULES = (
    "archs",
    "methods.compression",
    "methods.nern",
    "methods.dwsnet",
    "methods.sne",
    "methods.deepsets",
    "methods.mlp",
    "methods.stat_features",
    "methods.graph",
    "methods.nfn",
    "tasks.reconstruction",
    "tasks.property_prediction",
    "tasks.inr_classification",
    "tasks.transfer",
    "zoo_builders.pretrained_resnet",
    "zoo_builders.small_cnn",
    "zoo_builders.siren_inr",
    "zoo_builders.resnet_training",
    "zoo_readers",
)


def _register_cards() -> None:
    from .registry import ZOOS
    from .zoo_card import registered_cards

    for name, card in registered_cards().items():
        if isinstance(card, Exception):
            ZOOS.add_broken(name, card)
        else:
            ZOOS.add(name, card)


for _mod in MODULES:
    with warnings.catch_warnings():  # torch_geometric's import warns about torch.jit.script
        warnings.filterwarnings("ignore", category=FutureWarning)
        importlib.import_module(f"wsbench.{_mod}")
_register_cards()
