"""Which kernels NeRN predicts, and where each one lives in one flat weight vector.

Every Conv2d of the target (module order, so a ResNet's option-B 1x1 shortcut comes after its
block's conv2, as in the official code) is a "layer"; its F x C kernels (f-major) are rows of one
kernel table of n_kernels rows. The predictor outputs k_max*k_max values per row (k_max = the
largest kernel of the network, paper sec. 3.1); smaller kernels take the centre. Weights are never
moved: row i is always kernel i of the original network; an ordering only changes its coordinate.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...errors import NotApplicableError


@dataclass(frozen=True)
class ConvLayer:
    key: str  # state-dict key of the weight, e.g. "layer1.0.conv1.weight"
    module: str  # module name, e.g. "layer1.0.conv1"
    shape: tuple[int, int, int, int]  # (F, C, k, k)
    kernel_offset: int  # first row in the kernel table
    weight_offset: int  # first element in the flat weight vector

    @property
    def filters(self) -> int:
        return self.shape[0]

    @property
    def channels(self) -> int:
        return self.shape[1]

    @property
    def k(self) -> int:
        return self.shape[2]

    @property
    def n_kernels(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def numel(self) -> int:
        return self.n_kernels * self.k * self.k


class ConvLayout:
    """The predicted conv layers of a model, with offsets into the kernel table and flat vector."""

    def __init__(self, model: nn.Module) -> None:
        layers: list[ConvLayer] = []
        n_k = n_w = 0
        for name, mod in model.named_modules():
            if not isinstance(mod, nn.Conv2d):
                continue
            f, c, kh, kw = mod.weight.shape
            if kh != kw or mod.groups != 1:
                raise NotApplicableError(
                    f"NeRN predicts square, ungrouped conv kernels; {name} has kernel {kh}x{kw}, groups={mod.groups}")
            layers.append(ConvLayer(f"{name}.weight" if name else "weight", name, (f, c, kh, kw), n_k, n_w))
            n_k += f * c
            n_w += f * c * kh * kw
        if not layers:
            raise NotApplicableError("NeRN needs a network with convolutions; this one has none")
        self.layers = layers
        self.n_kernels = n_k
        self.n_weights = n_w
        self.k_max = max(l.k for l in layers)
        self.out_dim = self.k_max * self.k_max
        self.uniform = all(l.k == self.k_max for l in layers)

    @property
    def keys(self) -> list[str]:
        return [l.key for l in self.layers]

    def crop_index(self) -> Tensor | None:
        """Index into the flattened (n_kernels, k_max^2) prediction giving the flat weight vector.

        None when every kernel has the full size (then the prediction IS the flat vector). A k x k
        kernel takes the centre k x k block of the k_max x k_max output (paper sec. 3.1)."""
        if self.uniform:
            return None
        parts = []
        km = self.k_max
        for l in self.layers:
            lo = (km - l.k) // 2
            rr, cc = torch.meshgrid(torch.arange(lo, lo + l.k), torch.arange(lo, lo + l.k), indexing="ij")
            within = (rr * km + cc).reshape(-1)  # (k*k,)
            rows = torch.arange(l.kernel_offset, l.kernel_offset + l.n_kernels)
            parts.append((rows[:, None] * self.out_dim + within[None, :]).reshape(-1))
        return torch.cat(parts)

    def flat_weights(self, state_dict: dict[str, Tensor]) -> Tensor:
        """The conv kernels of `state_dict` as one flat float32 vector (layer by layer, f-major)."""
        return torch.cat([state_dict[l.key].detach().reshape(-1).float() for l in self.layers])

    def padded_kernels(self, state_dict: dict[str, Tensor]) -> Tensor:
        """(n_kernels, k_max^2) table of the original kernels, smaller ones zero-padded around the centre."""
        out = torch.zeros(self.n_kernels, self.out_dim)
        idx = self.crop_index()
        flat = self.flat_weights(state_dict)
        if idx is None:
            return flat.view(self.n_kernels, self.out_dim)
        out.view(-1)[idx] = flat
        return out

    def split(self, flat: Tensor) -> dict[str, Tensor]:
        """Views of a flat weight vector as the layers' weight tensors, keyed by state-dict key.

        One `split` (its backward is a single concatenation) rather than a slice per layer (whose
        backwards would each fill and add a zero vector of the full size)."""
        parts = flat.split([l.numel for l in self.layers])
        return {l.key: p.view(l.shape) for l, p in zip(self.layers, parts)}

    def layer_of_kernel(self) -> Tensor:
        """(n_kernels,) layer index of every kernel row."""
        return torch.cat([torch.full((l.n_kernels,), i, dtype=torch.long) for i, l in enumerate(self.layers)])
