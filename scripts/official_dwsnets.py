"""The official DWSNets model, imported from a checkout of github:AvivNavon/DWSNets (never copied).

Used by scripts/perf_cpu.py (timing) and scripts/dwsnet_parity.py (learning curves); the checkout's
path comes from WSBENCH_OFFICIAL_DWSNETS.
"""
from __future__ import annotations


import torch

from official_model import SIREN_SHAPES, Official, checkout_import

# SIREN_SHAPES: our spec's tensors are [out, in]; the official takes [in, out, 1]


def official_dwsnet(path: str, n_classes: int = 10) -> torch.nn.Module:
    """DWSModelForClassification at the MNIST-INR settings of the official trainer (hidden 32, 4 hidden
    layers, max reduction, SAB with 8 heads, BatchNorm, no dropout)."""
    (DWSModelForClassification,) = checkout_import(path, "nn.models.DWSModelForClassification")
    return DWSModelForClassification(weight_shapes=SIREN_SHAPES, bias_shapes=tuple((b,) for _, b in SIREN_SHAPES),
                                     input_features=1, hidden_dim=32, n_hidden=4, reduction="max",
                                     n_classes=n_classes, num_heads=8, set_layer="sab", bn=True, dropout_rate=0.0)


def official_inputs(tensors: dict[str, torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Our SIREN tensors (layers.i.weight [B, out, in], layers.i.bias [B, out]) in the official layout:
    weights [B, in, out, 1], biases [B, out, 1]."""
    n = len(SIREN_SHAPES)
    return (tuple(tensors[f"layers.{i}.weight"].transpose(1, 2).unsqueeze(-1).contiguous() for i in range(n)),
            tuple(tensors[f"layers.{i}.bias"].unsqueeze(-1) for i in range(n)))


def _official_optimizer(params) -> torch.optim.Optimizer:
    """The official trainer's optimiser: AdamW, lr 1e-3, amsgrad, weight decay 5e-4."""
    return torch.optim.AdamW(params, lr=1e-3, amsgrad=True, weight_decay=5e-4)


OFFICIAL = {"dwsnet": Official(
    repo="AvivNavon/DWSNets", env="WSBENCH_OFFICIAL_DWSNETS",
    build=lambda path, spec, n_classes: official_dwsnet(path, n_classes), inputs=official_inputs,
    optimizer=_official_optimizer, our_preset="paper",
    settings="both at the official MNIST-INR settings (hidden 32, 4 hidden DWS layers, max reduction, SAB with 8 heads, "
             "BatchNorm, no dropout); per-entry normalisation from the training INRs; AdamW lr 1e-3, amsgrad, weight "
             "decay 5e-4; no augmentation.")}
