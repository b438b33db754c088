"""MLP baselines on flattened weights, and the small helpers every encoder shares.

- `mlp`: all parameters flattened, then an MLP (DWSNets' `MLPModelForClassification`:
  Linear-ReLU, n_hidden x [Linear (+BN) - ReLU], Linear).
- `mlp_permaug`: the same MLP trained with random neuron permutations of each input network
  (a fresh permutation per network and step, DWSNets' `--permutation true`).
- `mlp_align`: the same MLP on a canonical alignment: every permutation group's neurons are
  sorted by a permutation-invariant statistic (the summed squared weights that touch the neuron),
  so that every member of a network's symmetry orbit maps to one representative.

Encoder hooks read by the training loop (wsbench.tasks.encoder_training):
  `augment(ws, generator) -> WeightSpace`  training-time augmentation (after normalisation)
  `auxiliary_loss(ws, out, generator) -> Tensor | None`  added to the task loss
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError, NotApplicableError
from ..options import AT_LEAST_ONE, Range
from ..registry import METHODS
from ..weights import NetworkSpec, WeightSpace
from .base import Encoder

SpecArg = NetworkSpec | Sequence[NetworkSpec]

# ----------------------------------------------------------------------------- shared helpers


def spec_list(spec_or_specs: SpecArg) -> list[NetworkSpec]:
    specs = [spec_or_specs] if isinstance(spec_or_specs, NetworkSpec) else list(spec_or_specs)
    if not specs:
        raise ConfigError("an encoder needs at least one NetworkSpec")
    return list(dict.fromkeys(specs))


def checked_specs(cls: type[Encoder], spec_or_specs: SpecArg) -> list[NetworkSpec]:
    """The specs, each supported by `cls`; one only unless `cls` is architecture-agnostic."""
    specs = spec_list(spec_or_specs)
    if len(specs) > 1 and not cls.architecture_agnostic:
        raise NotApplicableError(f"method {cls.name!r} reads one architecture per model; got {len(specs)} "
                                 f"({', '.join(s.describe() for s in specs)})")
    for spec in specs:
        ok, why = cls.supports(spec)
        if not ok:
            raise NotApplicableError(f"method {cls.name!r} cannot read {spec.describe()}: {why}")
    return specs


def make_mlp(in_dim: int, hidden: int, n_hidden: int, out_dim: int, bn: bool = False) -> nn.Sequential:
    """Linear-ReLU, n_hidden x [Linear (+BatchNorm) - ReLU], Linear."""
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden), nn.ReLU()]
    for _ in range(n_hidden):
        layers.append(nn.Linear(hidden, hidden))
        if bn:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(nn.ReLU())
    layers.append(nn.Linear(hidden, out_dim))
    return nn.Sequential(*layers)


def random_neuron_permutation(ws: WeightSpace, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """A fresh random permutation per network and group: {group: [B, n]} (argsort of uniforms)."""
    return {g: torch.rand(len(ws), n, generator=generator).argsort(dim=1) for g, n in ws.spec.group_sizes}


def canonical_permutation(ws: WeightSpace, statistic: str = "norm") -> dict[str, Tensor]:
    """Per network and group, the neuron order by decreasing statistic: {group: [B, n]}.

    `norm`: sum of squares of every parameter entry that lies on the neuron's slice (incoming and
    outgoing weights, bias, norm-layer parameters); `incoming`: only tensors whose first axis is
    the group (the neuron's own weights and bias). Both are invariant under every permutation of
    the spec, so the sorted network is the same for the whole orbit (up to exact ties)."""
    B = len(ws)
    out = {}
    for g, n in ws.spec.group_sizes:
        score = torch.zeros(B, n, device=ws.device)
        for p in ws.spec.params:
            if p.is_buffer:
                continue
            for axis, grp in enumerate(p.groups):
                if grp != g or (statistic == "incoming" and axis != 0):
                    continue
                t = ws.tensors[p.key].movedim(axis + 1, 1)
                score = score + t.pow(2).reshape(B, n, -1).sum(-1)
        out[g] = score.argsort(dim=1, descending=True, stable=True)
    return out


# ----------------------------------------------------------------------------- encoders

MLP_DEFAULTS = {"hidden_dim": 32, "n_hidden": 4, "bn": True}


@METHODS.register("mlp")
class FlatMLP(Encoder):
    """All parameters flattened into one vector, then an MLP."""

    name: ClassVar[str] = "mlp"
    description: ClassVar[str] = "MLP on the flattened weights (DWSNets baseline)"
    invariant: ClassVar[bool] = False  # claims no exact invariance under neuron permutations
    intended_invariances: ClassVar[frozenset[str]] = frozenset()
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

    name: ClassVar[str] = "mlp_permaug"
    description: ClassVar[str] = "MLP on flattened weights with random neuron-permutation augmentation"

    def augment(self, ws: WeightSpace, generator: torch.Generator | None = None) -> WeightSpace:
        return ws.permute(random_neuron_permutation(ws, generator))


@METHODS.register("mlp_align")
class AlignedMLP(FlatMLP):
    """The flat MLP on networks put into a canonical neuron order first."""

    name: ClassVar[str] = "mlp_align"
    description: ClassVar[str] = "MLP on flattened weights after sorting neurons by a permutation-invariant statistic"
    invariant: ClassVar[bool] = True  # exact, up to ties in the statistic
    defaults: ClassVar[dict[str, Any]] = {**MLP_DEFAULTS, "statistic": "norm"}

    choices: ClassVar[dict[str, tuple[Any, ...]]] = {"statistic": ("norm", "incoming")}

    def features(self, ws: WeightSpace) -> Tensor:
        with torch.no_grad():
            perms = canonical_permutation(ws, self.config["statistic"])
        return ws.permute(perms).flat()
