"""Accuracy of networks on an image split, many networks at once."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from .weights import WeightSpace, batched_forward


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, *, state_dict: Mapping[str, Tensor] | None = None,
             batch_size: int = 500, device: torch.device | str | None = None) -> float:
    """Top-1 accuracy (0..1) of `model` (optionally with `state_dict` loaded functionally)."""
    device = torch.device(device or next(model.parameters()).device)
    model = model.to(device).eval()
    params = {k: v.to(device) for k, v in state_dict.items()} if state_dict is not None else None
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(device, non_blocking=True)
        logits = torch.func.functional_call(model, params, (xb,)) if params is not None else model(xb)
        correct += (logits.argmax(1) == y[i:i + batch_size].to(device)).sum().item()
    return correct / max(len(x), 1)


@torch.no_grad()
def batched_accuracy(model: nn.Module, ws: WeightSpace, x: Tensor, y: Tensor, *, batch_size: int = 500,
                     device: torch.device | str | None = None) -> Tensor:
    """[B] accuracies of every network in `ws` (vmap over networks, shared image batches)."""
    device = torch.device(device or ws.device)
    model = model.to(device).eval()
    ws = ws.to(device)
    correct = torch.zeros(len(ws), device=device)
    for i in range(0, len(x), batch_size):
        logits = batched_forward(model, ws, x[i:i + batch_size].to(device))
        correct += (logits.argmax(-1) == y[i:i + batch_size].to(device)).float().sum(1)
    return (correct / max(len(x), 1)).cpu()


def describe_device(device: torch.device | str) -> str:
    """Human-readable device name for result records."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os

    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
