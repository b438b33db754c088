"""StatNN (Unterthiner et al. 2020, "Predicting Neural Network Accuracy from Weights"): per-tensor
weight statistics (mean, variance, and the 0/25/50/75/100% quantiles of every weight and bias
tensor), fed to an MLP. The features ignore where an entry sits in its tensor, so the encoder is
invariant to neuron permutations and also to any shuffle of entries inside one tensor (intended).
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import METHODS
from ..weights import NetworkSpec, WeightSpace
from .base import Encoder
from .common import SpecArg, checked_specs, make_mlp

QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
N_STATS = 2 + len(QUANTILES)


def weight_statistics(ws: WeightSpace, keys: list[str] | None = None) -> Tensor:
    """[B, 7 * n_tensors]: mean, variance, 5 quantiles of each parameter tensor (spec order)."""
    keys = keys or ws.spec.param_keys
    q = torch.tensor(QUANTILES, device=ws.device)
    feats = []
    for k in keys:
        t = ws.tensors[k].reshape(len(ws), -1)
        feats += [t.mean(1, keepdim=True), t.var(1, unbiased=False, keepdim=True), torch.quantile(t, q, dim=1).T]
    return torch.cat(feats, dim=1)


@METHODS.register("statnn")
class StatNN(Encoder):
    description: ClassVar[str] = "MLP on per-layer weight statistics (Unterthiner et al. 2020)"
    invariant: ClassVar[bool] = True
    intended_invariances: ClassVar[frozenset[str]] = frozenset({"layer_shuffle", "untied_permutation",
                                                                "input_permutation"})
    defaults: ClassVar[dict[str, Any]] = {"hidden_dim": 64, "n_hidden": 2, "bn": True, "input_bn": True}
    tiny_config: ClassVar[dict[str, Any]] = {"hidden_dim": 8, "n_hidden": 1}

    def __init__(self, spec_or_specs: SpecArg, out_dim: int, **config: Any) -> None:
        super().__init__()
        (self.spec,) = checked_specs(type(self), spec_or_specs)
        self.config = c = self.parse_config(config)
        if c["hidden_dim"] < 1:
            raise ConfigError(f"method {self.name!r}: option 'hidden_dim' must be >= 1")
        in_dim = N_STATS * len(self.spec.param_keys)
        self.input_norm = nn.BatchNorm1d(in_dim) if c["input_bn"] else nn.Identity()
        self.net = make_mlp(in_dim, c["hidden_dim"], c["n_hidden"], out_dim, c["bn"])

    @classmethod
    def supports(cls, spec: NetworkSpec) -> tuple[bool, str]:
        return (True, "") if spec.param_keys else (False, "the architecture has no parameters")

    def forward(self, ws: WeightSpace) -> Tensor:
        return self.net(self.input_norm(weight_statistics(ws)))
