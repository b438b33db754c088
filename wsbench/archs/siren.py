"""SIREN implicit neural representation of an image (Sitzmann et al. 2020) as used by DWSNets:
2 -> 32 -> 32 -> 1, sine activations with omega_0 = 30 on the hidden layers, a plain linear
output layer, and +0.5 added to the output (DWSNets' nn/inr.py) so that a zero network
predicts mid-grey on [0, 1] pixels.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .mlp import linear_chain_groups, vector_input
from .symmetry import declare_symmetry


class Siren(nn.Module):
    def __init__(self, in_dim: int = 2, hidden: int = 32, n_hidden: int = 2, out_dim: int = 1, omega0: float = 30.0,
                 output_offset: float = 0.5) -> None:
        super().__init__()
        widths = [in_dim] + [hidden] * n_hidden + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.omega0, self.output_offset = omega0, output_offset
        with torch.no_grad():  # the published INRs' init (DWSNets nn/inr.py); the output layer keeps nn.Linear's
            for layer in self.layers[:-1]:
                layer.weight.uniform_(-math.sqrt(6.0 / layer.in_features) / omega0,
                                      math.sqrt(6.0 / layer.in_features) / omega0)
                layer.bias.zero_()

    def forward(self, coords: Tensor) -> Tensor:
        h = coords
        for layer in self.layers[:-1]:
            h = torch.sin(self.omega0 * layer(h))
        return self.layers[-1](h) + self.output_offset


@declare_symmetry(linear_chain_groups, vector_input)  # sine is elementwise: hidden neurons permute freely
def siren(**kwargs) -> Siren:
    return Siren(**kwargs)


def image_coords(size: int, device: torch.device | str = "cpu") -> Tensor:
    """(size*size, 2) pixel-centre coordinates in [-1, 1], row-major (y, x)."""
    lin = torch.linspace(-1.0, 1.0, size, device=device)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack([yy.reshape(-1), xx.reshape(-1)], dim=1)
