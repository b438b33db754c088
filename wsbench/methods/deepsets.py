"""DeepSets over weights: the architecture-agnostic set baseline of SNE's cross-architecture table
(Andreis et al., arXiv 2305.16625; the DeepSets baseline of the NFN papers, Zhou et al. 2023).

Every parameter tensor is a set of scalars. Each entry is embedded (a linear map of its value plus
the encoding of its tensor: sinusoidal in the tensor's index, and a learned type of linear weight /
conv weight / bias / other), passed through phi (an MLP shared by all entries) and mean-pooled within
its tensor; the tensor vectors are averaged, batch-normalised over networks (as SNE's head; option
head_bn) and rho (an MLP) maps the result to the output.

It is invariant to any permutation inside a tensor, so to neuron permutations and to much more
(which entries share a neuron, which input channel a kernel reads): the structure-blind reference
that SNE's chunking and the neural graph's edges are measured against. Any architecture reads
(one model over several specs). Memory grows with entries x hidden_dim per network: meant for
small networks (the Small CNN Zoo's 5k entries), not ResNets.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import METHODS
from ..weights import NetworkSpec, WeightSpace
from .base import Encoder
from .common import SpecArg, checked_specs, make_mlp, sinusoidal

TENSOR_TYPES = {"linear": 0, "conv": 1, "bias": 2, "other": 3}


def tensor_types(spec: NetworkSpec) -> list[int]:
    """The type id of each tensor of `spec`, in spec.keys order."""
    kinds: dict[str, str] = {}
    for lay in spec.layers:
        kinds[lay.weight] = lay.kind if lay.kind in ("linear", "conv") else "other"
        if lay.bias:
            kinds[lay.bias] = "bias"
    return [TENSOR_TYPES[kinds.get(key, "other")] for key in spec.keys]


@METHODS.register("deepsets")
class DeepSets(Encoder):
    description: ClassVar[str] = "DeepSets over weights: phi per entry, mean per tensor, rho (set baseline of SNE)"
    architecture_agnostic: ClassVar[bool] = True
    invariant: ClassVar[bool] = True
    intended_invariances: ClassVar[frozenset[str]] = frozenset({"untied_permutation", "layer_shuffle",
                                                                "input_permutation"})
    defaults: ClassVar[dict[str, Any]] = {"hidden_dim": 64, "n_phi": 2, "n_rho": 1, "max_tensors": 512, "head_bn": True}
    tiny_config: ClassVar[dict[str, Any]] = {"hidden_dim": 8, "n_phi": 1}

    def __init__(self, spec_or_specs: SpecArg, out_dim: int, **config: Any) -> None:
        super().__init__()
        self.specs = checked_specs(type(self), spec_or_specs)
        self.config = c = self.parse_config(config)
        for key in ("hidden_dim", "n_phi", "max_tensors"):
            if c[key] < 1:
                raise ConfigError(f"method {self.name!r}: option {key!r} must be >= 1, got {c[key]}")
        h = c["hidden_dim"]
        self.embed = nn.Linear(1, h)
        self.type_embedding = nn.Embedding(len(TENSOR_TYPES), h)
        self.register_buffer("tensor_pe", sinusoidal(torch.arange(c["max_tensors"]), h), persistent=False)
        phi: list[nn.Module] = []
        for _ in range(c["n_phi"]):
            phi += [nn.ReLU(), nn.Linear(h, h)]
        self.phi = nn.Sequential(*phi)
        # BatchNorm over networks first (as SNE's head): means over thousands of entries differ little
        # between networks, and rho would otherwise have to learn that gain itself.
        rho = make_mlp(h, h, c["n_rho"] - 1, out_dim) if c["n_rho"] >= 1 else nn.Linear(h, out_dim)
        self.rho = nn.Sequential(nn.BatchNorm1d(h) if c["head_bn"] else nn.Identity(), rho)
        self._layouts: dict[tuple[NetworkSpec, torch.device], tuple[Tensor, Tensor]] = {}
        for spec in self.specs:
            self._check(spec)

    @classmethod
    def supports(cls, spec: NetworkSpec) -> tuple[bool, str]:
        return (True, "") if spec.params else (False, "the architecture has no parameters")

    def _check(self, spec: NetworkSpec) -> None:
        if len(spec.keys) > self.config["max_tensors"]:
            raise ConfigError(f"method 'deepsets': {spec.describe()} has {len(spec.keys)} tensors > max_tensors "
                              f"{self.config['max_tensors']}")

    def layout(self, spec: NetworkSpec, device: torch.device) -> tuple[Tensor, Tensor]:
        """(tensor id of every flattened entry [D], averaging matrix [T, D]: row t = 1/n_t on tensor t's entries)."""
        key = (spec, device)
        if key not in self._layouts:
            self._check(spec)
            sizes = [math.prod(spec.param(k).shape) for k in spec.keys]
            ids = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
            avg = torch.zeros(len(sizes), len(ids))
            avg[ids, torch.arange(len(ids))] = 1.0 / torch.tensor(sizes, dtype=torch.float32)[ids]
            self._layouts[key] = (ids.to(device), avg.to(device))
        return self._layouts[key]

    def forward(self, ws: WeightSpace) -> Tensor:
        B = len(ws)
        ids, avg = self.layout(ws.spec, ws.device)
        types = torch.tensor(tensor_types(ws.spec), device=ws.device)
        pe = self.tensor_pe[: len(ws.spec.keys)] + self.type_embedding(types)  # [T, h]
        values = torch.cat([ws.tensors[k].reshape(B, -1) for k in ws.spec.keys], 1)  # [B, D]
        x = self.phi(self.embed(values.unsqueeze(-1)) + pe[ids])  # [B, D, h]
        per_tensor = torch.einsum("td,bdh->bth", avg, x)  # mean within each tensor
        return self.rho(per_tensor.mean(1))
