"""A plain ReLU MLP (weight-space tests and toy zoos)."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from .symmetry import Group, chain_groups, declare_symmetry


class MLP(nn.Module):
    def __init__(self, widths: tuple[int, ...] | list[int] = (2, 16, 16, 1)) -> None:
        super().__init__()
        widths = list(widths)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


def linear_chain_groups(model: nn.Module, sd: Mapping[str, Tensor]) -> dict[str, tuple[Group, ...]]:
    """`layers.i`, elementwise activations between them: each hidden layer's neurons are one group."""
    n = len(model.layers)
    return chain_groups([(f"layers.{i}.weight", f"layers.{i}.bias", 2) for i in range(n)], [True] * (n - 1))


def vector_input(model: nn.Module, n: int) -> Tensor:
    return torch.randn(n, model.layers[0].in_features)


@declare_symmetry(linear_chain_groups, vector_input)
def mlp(widths: tuple[int, ...] | list[int] = (2, 16, 16, 1)) -> MLP:
    return MLP(widths)
