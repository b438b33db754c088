"""MLP baselines on flattened weights.

- `mlp`: all parameters flattened, then an MLP (DWSNets' `MLPModelForClassification`:
  Linear-ReLU, n_hidden x [Linear (+BN) - ReLU], Linear).
- `mlp_permaug`: the same MLP trained with random neuron permutations of each input network
  (a fresh permutation per network and step, DWSNets' `--permutation true`).
- `mlp_align`: the same MLP on a canonical alignment: every permutation group's neurons are
  sorted by a permutation-invariant statistic (the summed squared weights that touch the neuron),
  so that every member of a network's symmetry orbit maps to one representative.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ..errors import NotApplicableError
from ..options import AT_LEAST_ONE, Range
from ..registry import METHODS
from ..weights import NetworkSpec, WeightSpace
from .base import Encoder
from .common import SpecArg, canonical_permutation, checked_specs, make_mlp, random_neuron_permutation

# ----------------------------------------------------------------------------- encoders

MLP_DEFAULTS = {"hidden_dim": 32, "n_hidden": 4, "bn": True}


@METHODS.register("mlp")
class FlatMLP(Encoder):
    """All parameters flattened into one vector, then an MLP."""

    description: ClassVar[str] = "MLP on the flattened weights (DWSNets baseline)"
    invariant: ClassVar[bool] = False  # claims no exact invariance under neuron permutations
    defaults: ClassVar[dict[str, Any]] = MLP_DEFAULTS
    ranges: ClassVar[dict[str, Range]] = {"hidden_dim": AT_LEAST_ONE}
    tiny_config: ClassVar[dict[str, Any]] = {"hidden_dim": 8, "n_hidden": 1}  # tests and benchmarks

    def __init__(self, spec_or_specs: SpecArg, out_dim: int, **config: Any) -> None:
        super().__init__()
        (self.spec,) = checked_specs(type(self), spec_or_specs)
        self.config = c = self.parse_config(config)
        self.net = make_mlp(self.spec.n_params, c["hidden_dim"], c["n_hidden"], out_dim, c["bn"])

    @classmethod
    def supports(cls, spec: NetworkSpec) -> tuple[bool, str]:
        return (True, "") if spec.n_params > 0 else (False, "the architecture has no parameters")

    def features(self, ws: WeightSpace) -> Tensor:
        return ws.flat()

    def forward(self, ws: WeightSpace) -> Tensor:
        if ws.spec != self.spec:
            raise NotApplicableError(f"method {self.name!r} was built for {self.spec.describe()}, got {ws.spec.describe()}")
        return self.net(self.features(ws))


@METHODS.register("mlp_permaug")
class PermAugMLP(FlatMLP):
    """The flat MLP, trained on randomly neuron-permuted copies of the input networks."""

    description: ClassVar[str] = "MLP on flattened weights with random neuron-permutation augmentation"

    def augment(self, ws: WeightSpace, generator: torch.Generator | None = None) -> WeightSpace:
        return ws.permute(random_neuron_permutation(ws, generator))


@METHODS.register("mlp_align")
class AlignedMLP(FlatMLP):
    """The flat MLP on networks put into a canonical neuron order first."""

    description: ClassVar[str] = "MLP on flattened weights after sorting neurons by a permutation-invariant statistic"
    invariant: ClassVar[bool] = True  # exact, up to ties in the statistic
    defaults: ClassVar[dict[str, Any]] = {**MLP_DEFAULTS, "statistic": "norm"}

    choices: ClassVar[dict[str, tuple[Any, ...]]] = {"statistic": ("norm", "incoming")}

    def features(self, ws: WeightSpace) -> Tensor:
        with torch.no_grad():
            perms = canonical_permutation(ws, self.config["statistic"])
        return ws.permute(perms).flat()
