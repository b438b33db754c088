"""What scripts/encoder_parity.py needs to know of an original model: where its checkout is, how it is
built, fed and trained. Each scripts/official_<repo>.py defines OFFICIAL = {method: Official}."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

from wsbench.weights import NetworkSpec

Tensors = dict[str, torch.Tensor]


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
