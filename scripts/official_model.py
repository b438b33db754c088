"""What scripts/encoder_parity.py needs to know of an original model: where its checkout is, how it is
built, fed and trained. Each scripts/official_<repo>.py defines OFFICIAL = {method: Official}."""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Iterable

import torch

from wsbench.weights import NetworkSpec

Tensors = dict[str, torch.Tensor]

# the MNIST-INR SIREN: 2 -> 32 -> 32 -> 1, (in, out) per layer
SIREN_SHAPES = ((2, 32), (32, 32), (32, 1))


def checkout_modules(path: str, *modules: str, extra_paths: Iterable[str] = ()) -> list[ModuleType]:
    """Modules of a checkout, imported with `path` (and `extra_paths`) first on sys.path for these imports only:
    the originals' top-level packages (DWSNets' and neural-graphs' `nn`) would shadow others if left there."""
    added = [path, *extra_paths]
    for folder in reversed(added):
        sys.path.insert(0, folder)
    try:
        return [importlib.import_module(m) for m in modules]
    finally:
        for folder in added:
            sys.path.remove(folder)


def checkout_import(path: str, *names: str, extra_paths: Iterable[str] = ()) -> list[Any]:
    """Objects of a checkout, `package.module.attr` each (see checkout_modules)."""
    parts = [name.rpartition(".") for name in names]
    modules = checkout_modules(path, *(module for module, _, _ in parts), extra_paths=extra_paths)
    return [getattr(m, attr) for m, (_, _, attr) in zip(modules, parts)]


def entry_normaliser(train: Tensors) -> Callable[[Tensors], Tensors]:
    """Per-entry mean and std of the training INRs, with torch.std's unbiased estimate as the official
    DWSNets compute_statistics.py (WeightNormalizer's `entry` mode uses the biased one)."""
    mean = {k: t.mean(0) for k, t in train.items()}
    std = {k: t.std(0).clamp_min(1e-8) for k, t in train.items()}
    return lambda tensors: {k: ((t - mean[k]) / std[k]).float() for k, t in tensors.items()}


@dataclass(frozen=True)
class Official:
    """One method's original model: where its checkout is, how it is built, fed and trained."""
    repo: str  # github owner/name
    env: str  # the variable holding the checkout's path
    build: Callable[[str, NetworkSpec, int], torch.nn.Module]  # (checkout, spec, classes) -> model
    inputs: Callable[[Tensors], Any]  # our normalised tensors (WeightSpace keys) -> the model's input
    optimizer: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]  # the original trainer's
    our_preset: str  # our preset at the same settings
    settings: str  # both models' settings, in words, for the report
    normaliser: Callable[[Tensors], Callable[[Tensors], Tensors]] = field(default=entry_normaliser)
    batch: int = 64
    command_env: tuple[str, ...] = ()  # variables of the adapter's own that change the run: shown in the command
