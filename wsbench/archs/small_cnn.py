"""The small CNN of published CNN zoos (Unterthiner et al. 2020, "Predicting Neural Network
Accuracy from Weights"): n_conv conv layers (3x3, stride 2, `channels` filters), global average
pooling, one linear layer. Defaults (3 x 16 channels, 1 input channel) give 4,970 parameters.
`fc_hidden` > 0 puts a hidden linear layer of that width (same activation, no dropout) before the
classifier: SNE's cross-architecture "Arch2" (3 conv + 2 linear; Andreis et al., arXiv 2305.16625).
`padding=0` matches the published Small CNN Zoo (Keras 'valid' padding); the suite's zoos use 1.
Depth and width are arguments so that architecture families for transfer share one recipe.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .symmetry import Group, chain_groups, declare_symmetry


def _act(name: str):
    table = {"relu": torch.relu, "tanh": torch.tanh, "gelu": F.gelu, "sigmoid": torch.sigmoid}
    if name not in table:
        raise ValueError(f"activation must be one of {sorted(table)}, got {name!r}")
    return table[name]


class SmallCNN(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        channels: int = 16,
        n_conv: int = 3,
        activation: str = "relu",
        dropout: float = 0.0,
        padding: int = 1,
        fc_hidden: int = 0,
    ) -> None:
        super().__init__()
        if n_conv < 1 or channels < 1 or fc_hidden < 0:
            raise ValueError("n_conv and channels must be >= 1, fc_hidden >= 0")
        self.activation_name, self.act, self.dropout = activation, _act(activation), dropout
        widths = [in_channels] + [channels] * n_conv
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=padding) for a, b in zip(widths, widths[1:]))
        self.fc_hidden = nn.Linear(channels, fc_hidden) if fc_hidden else None
        self.fc = nn.Linear(fc_hidden or channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = self.act(conv(x))
            if self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)
        x = x.mean(dim=(2, 3))
        if self.fc_hidden is not None:
            x = self.act(self.fc_hidden(x))
        return self.fc(x)


def small_cnn_groups(model: nn.Module, sd: Mapping[str, Tensor]) -> dict[str, tuple[Group, ...]]:
    """Each conv layer's channels are one group; global average pooling passes them to the linear
    layers (the hidden one's units another group)."""
    layers = [(f"convs.{i}.weight", f"convs.{i}.bias", 4) for i in range(len(model.convs))]
    if model.fc_hidden is not None:
        layers.append(("fc_hidden.weight", "fc_hidden.bias", 2))
    return chain_groups(layers + [("fc.weight", "fc.bias", 2)], [True] * (len(layers)))


def small_image_input(model: nn.Module, n: int) -> Tensor:
    return torch.randn(n, model.convs[0].in_channels, 28, 28)


@declare_symmetry(small_cnn_groups, small_image_input)
def small_cnn(**kwargs) -> SmallCNN:
    return SmallCNN(**kwargs)
