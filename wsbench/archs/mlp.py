"""A plain ReLU MLP (weight-space tests and toy zoos)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class MLP(nn.Module):
    def __init__(self, widths: tuple[int, ...] | list[int] = (2, 16, 16, 1)) -> None:
        super().__init__()
        widths = list(widths)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


def mlp(widths: tuple[int, ...] | list[int] = (2, 16, 16, 1)) -> MLP:
    return MLP(widths)
