"""What the encoders share: their spec checks, the MLP they end in, neuron permutations (random and
canonical), sinusoidal position encodings, and the base of encoders built for one chain-structured
spec. Encoders import these from here, never from each other."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError, NotApplicableError
from ..weights import NetworkSpec, WeightSpace
from .base import Encoder
from .equivariant.layout import chain_problem

SpecArg = NetworkSpec | Sequence[NetworkSpec]

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


def sinusoidal(positions: Tensor, dim: int) -> Tensor:
    """[n] integer positions -> [n, dim] sine/cosine encodings (Vaswani et al.)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half, 1))
    ang = positions.float()[:, None] * freq[None]
    enc = torch.cat([ang.sin(), ang.cos()], dim=1)
    return torch.nn.functional.pad(enc, (0, dim - enc.shape[1]))


class ChainEncoder(Encoder):
    """An encoder built for one chain-structured spec (layers in sequence: MLPs, INRs, plain CNNs)."""

    @classmethod
    def supports(cls, spec: NetworkSpec) -> tuple[bool, str]:
        why = chain_problem(spec)
        return (not why, why)

    def check_spec(self, ws: WeightSpace) -> None:
        if ws.spec != self.spec:
            raise NotApplicableError(f"{self.name} was built for {self.spec.describe()}, got {ws.spec.describe()}")
