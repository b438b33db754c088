"""The network NeRN trains through: the target with predicted conv kernels, run functionally.

In eval mode a BatchNorm right after a conv is a per-channel affine map, so BN(conv(x, W)) =
conv(x, W * s) + b with s = gamma / sqrt(var + eps), b = beta - mean * s. Folding it removes every
BN from the forward and backward pass (the largest non-conv cost on CPU) and gives exactly the
BN output the feature-map loss reads. The fold is checked numerically against the unfolded model
at set-up; on any mismatch (a conv whose BN does not directly follow it in `forward`) the
unfolded model is used. Both teacher and student run through the same module; only the conv
weights differ (the teacher's are folded once).
"""
from __future__ import annotations

import copy
import inspect
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .layout import ConvLayout


def _conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, bn) module names where a BatchNorm2d directly follows a Conv2d in module order."""
    mods = list(model.named_modules())
    pairs = []
    for (name, mod), (nxt_name, nxt) in zip(mods, mods[1:]):
        if isinstance(mod, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d) and nxt.num_features == mod.out_channels \
                and nxt.track_running_stats:
            pairs.append((name, nxt_name))
    return pairs


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


class FunctionalNet:
    """Runs `model` with given conv kernels; `scale[key]` multiplies each kernel's filters (the BN fold)."""

    def __init__(self, model: nn.Module, layout: ConvLayout, *, fold_bn: bool = True, input_size: int = 32,
                 channels_last: bool = False, log: Callable[[str], None] = lambda m: None) -> None:
        model = model.eval()
        self.layout = layout
        self.has_features = "return_features" in inspect.signature(model.forward).parameters
        self.channels_last = channels_last
        self.input_size = input_size
        self.folded = False
        self.module = model
        self.scale: dict[str, Tensor] = {}
        self.const: dict[str, Tensor] = {}
        if fold_bn and _conv_bn_pairs(model):  # nothing to fold in a network without BatchNorm
            folded = self._fold(model)
            if folded is not None:
                self.module, self.scale, self.const = folded
                self.folded = True
            else:
                log("[nern] BatchNorm folding does not reproduce the model; running unfolded")
        if not self.folded:
            self.const = {k: v for k, v in self._state(model).items() if k not in set(layout.keys)}
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)

    @staticmethod
    def _state(model: nn.Module) -> dict[str, Tensor]:
        return {**dict(model.named_parameters()), **dict(model.named_buffers())}

    def _fold(self, model: nn.Module):
        pairs = _conv_bn_pairs(model)
        if not pairs:
            return None
        folded = copy.deepcopy(model)
        scale: dict[str, Tensor] = {}
        for conv_name, bn_name in pairs:
            conv: nn.Conv2d = folded.get_submodule(conv_name)  # type: ignore[assignment]
            bn: nn.BatchNorm2d = folded.get_submodule(bn_name)  # type: ignore[assignment]
            with torch.no_grad():
                s = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
                shift = (bn.bias if bn.affine else torch.zeros_like(s)) - bn.running_mean * s
                if conv.bias is not None:
                    shift = shift + conv.bias * s
                conv.bias = nn.Parameter(shift.detach().clone(), requires_grad=False)
            scale[f"{conv_name}.weight"] = s.detach().clone()
            _set_module(folded, bn_name, nn.Identity())
        for p in folded.parameters():
            p.requires_grad_(False)
        const = {k: v for k, v in self._state(folded).items() if k not in set(self.layout.keys)}
        if not self._same_function(model, folded, scale, const):
            return None
        return folded, scale, const

    def _same_function(self, model: nn.Module, folded: nn.Module, scale: dict[str, Tensor],
                       const: dict[str, Tensor]) -> bool:
        """Whether the folded network computes what `model` does, checked in float64 on the CPU: the fold
        is exact algebra, and a check on the device would also measure its arithmetic (with TF32
        convolutions on a GPU, differences of ~1e-3 made every fold fail). The tolerance admits the
        float32 rounding of the folded kernels and biases (~1e-7 of the largest output on ResNet20)."""
        model = copy.deepcopy(model).to("cpu", torch.float64)
        folded = copy.deepcopy(folded).to("cpu", torch.float64)
        scale = {k: v.detach().to("cpu", torch.float64) for k, v in scale.items()}
        const = {k: v.detach().to("cpu", torch.float64) for k, v in const.items()}
        g = torch.Generator().manual_seed(0)
        first = self.layout.layers[0]
        x = torch.randn(4, first.channels, self.input_size, self.input_size, generator=g, dtype=torch.float64)
        sd = self._state(model)
        weights = {k: sd[k].detach() for k in self.layout.keys}
        params = {**const, **{k: w * scale[k].view(-1, 1, 1, 1) if k in scale else w for k, w in weights.items()}}
        kw = {"return_features": True} if self.has_features else {}
        try:
            with torch.no_grad():
                ref = model(x, **kw)
                out = functional_call(folded, params, (x,), kw)
        except Exception:  # noqa: BLE001 - any failure means: do not fold
            return False
        ref_t = [ref[0], *ref[1]] if self.has_features else [ref]
        out_t = [out[0], *out[1]] if self.has_features else [out]
        return len(ref_t) == len(out_t) and all(
            a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(a.abs().max().clamp_min(1)))
            for a, b in zip(ref_t, out_t))

    def params(self, weights: dict[str, Tensor]) -> dict[str, Tensor]:
        """The parameter dict for `functional_call`, given conv kernels keyed by state-dict key."""
        if not self.scale:
            return {**self.const, **weights}
        return {**self.const, **{k: w * self.scale[k].view(-1, 1, 1, 1) if k in self.scale else w
                                 for k, w in weights.items()}}

    def __call__(self, params: dict[str, Tensor], x: Tensor, features: bool):
        """logits, or (logits, feature maps) when `features`."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if features:
            return functional_call(self.module, params, (x,), {"return_features": True})
        return functional_call(self.module, params, (x,))

    def to(self, device: torch.device) -> "FunctionalNet":
        self.module = self.module.to(device)
        self.scale = {k: v.to(device) for k, v in self.scale.items()}
        self.const = {k: v.to(device) for k, v in self.const.items()}
        return self
