"""The NeRN predictor: a plain MLP from a kernel's embedding to its k_max x k_max values.

`n_layers=5` gives Linear(in, h) -> ReLU -> 3 x [Linear(h, h) -> ReLU] -> Linear(h, k*k), no output
activation, no normalisation (official `NeRNKxKPredictor`, `num_blocks=5`). With in=240 and
k=3: P(h) = 3h^2 + 253h + 9 parameters. PyTorch's default Linear initialisation (the official
"fmod" init is a no-op on it).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class KernelPredictor(nn.Module):
    def __init__(self, in_dim: int, hidden: int, out_dim: int, n_layers: int = 5) -> None:
        super().__init__()
        if n_layers < 2:
            raise ValueError("the predictor needs at least 2 layers")
        dims = [in_dim] + [hidden] * (n_layers - 1) + [out_dim]
        mods: list[nn.Module] = []
        for i in range(n_layers):
            mods.append(nn.Linear(dims[i], dims[i + 1]))
            if i < n_layers - 1:
                mods.append(nn.ReLU())
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def linears(self) -> list[nn.Linear]:
        return [m for m in self.net if isinstance(m, nn.Linear)]


def predictor_param_count(in_dim: int, hidden: int, out_dim: int, n_layers: int = 5) -> int:
    """Closed form of the predictor size: P(h) = 3h^2 + 253h + 9 for (240, h, 9, 5)."""
    return (in_dim + 1) * hidden + (n_layers - 2) * (hidden + 1) * hidden + (hidden + 1) * out_dim


@torch.no_grad()
def predict_all(predictor: nn.Module, emb: Tensor, chunk: int = 1 << 16) -> Tensor:
    """Predictions for every row of `emb` without autograd (chunked to bound memory)."""
    if emb.shape[0] <= chunk:
        return predictor(emb)
    return torch.cat([predictor(emb[i:i + chunk]) for i in range(0, emb.shape[0], chunk)])
