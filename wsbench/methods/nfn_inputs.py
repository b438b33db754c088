"""Input features and dropout of the NFN repository's SIREN classifiers (Zhou et al. 2023), as options of
wsbench.methods.nfn. Tensors are in the equivariant layout [B, *axes, C] (equivariant/layout.py).

- Gaussian Fourier features: every scalar entry x becomes [sin(2 pi x f_k)]_k ++ [cos(2 pi x f_k)]_k with
  k fixed frequencies f_k ~ N(0, scale^2), drawn at construction (a buffer, as the original's);
- neuron codes: channels that tell the network's input and output neurons apart (the original's
  IOSinusoidalEncoding without layer codes): each tensor gets 2 * bands + 1 more channels, zero except
  along its non-permutable neuron axes (input neurons of the first weight, output neurons of the last
  weight and bias), where they hold sin/cos(pi s t) for s in linspace(1, max_freq / 2, bands) and t itself,
  with t = linspace(-1, 1, n) the neuron's position; the original also counts those zero channels.
  For conv inputs the codes are one set of channels per entry, not repeated for each kernel entry;
- channel dropout: whole channels of a weight tensor dropped per network (the original's Dropout2d),
  bias entries one by one.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from .equivariant.layout import TensorLayout


class FourierFeatures(nn.Module):
    """[..., C] -> [..., C * 2k]: Gaussian Fourier features of each scalar entry."""

    def __init__(self, k: int, scale: float) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.randn(k) * scale)

    @property
    def factor(self) -> int:
        return 2 * self.freqs.numel()

    def forward(self, x: Tensor) -> Tensor:
        z = 2 * math.pi * x.unsqueeze(-1) * self.freqs
        return torch.cat([z.sin(), z.cos()], dim=-1).flatten(-2)


def neuron_codes(n: int, max_freq: float, bands: int) -> Tensor:
    """[n, 2 * bands + 1]: sinusoidal codes of n neuron positions spread over [-1, 1]."""
    t = torch.linspace(-1.0, 1.0, n).unsqueeze(-1)
    z = t * torch.linspace(1.0, max_freq / 2, bands) * math.pi
    return torch.cat([z.sin(), z.cos(), t], dim=-1)


class NeuronCodes(nn.Module):
    """Appends 2 * bands + 1 channels to every tensor: the codes of its non-permutable neuron axes."""

    def __init__(self, layouts: Sequence[TensorLayout], max_freq: float, bands: int) -> None:
        super().__init__()
        self.width = 2 * bands + 1
        for k, t in enumerate(layouts):
            code = torch.zeros(*(a.size for a in t.axes), self.width)
            for d, a in enumerate(t.axes):
                if a.group is None:
                    shape = [1] * len(t.axes) + [self.width]
                    shape[d] = a.size
                    code = code + neuron_codes(a.size, max_freq, bands).view(shape)
            self.register_buffer(f"code_{k}", code, persistent=False)

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:
        out = []
        for k, x in enumerate(xs):
            code = getattr(self, f"code_{k}").to(x.dtype)
            out.append(torch.cat([x, code.expand(x.shape[0], *code.shape)], dim=-1))
        return out


def channel_dropout(xs: Sequence[Tensor], layouts: Sequence[TensorLayout], p: float, training: bool) -> list[Tensor]:
    """Dropout of whole channels of each weight tensor per network (one mask over its neuron axes), of
    single entries of biases."""
    if not training or p <= 0:
        return list(xs)
    out = []
    for x, t in zip(xs, layouts):
        if t.kind == "weight":
            mask_shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
            keep = torch.empty(mask_shape, device=x.device, dtype=x.dtype).bernoulli_(1 - p) / (1 - p)
            out.append(x * keep)
        else:
            out.append(nn.functional.dropout(x, p, True))
    return out
