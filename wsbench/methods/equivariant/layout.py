"""How DWSNet sees a network: a list of tensors whose axes are labelled with permutation groups.

Each weight becomes a tensor [B, out, in, C] and each bias [B, out, C]. An axis carries its
neuron-permutation group (from the NetworkSpec) or None when it is not permutable (image
channels of the first layer, class logits of the last). Conv kernels are not permutable either:
their k x k entries become the C input channels (DWSNets, Appendix H), so a 3x3 conv enters with
C = 9 and a linear layer with C = 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

from torch import Tensor

from ...weights import NetworkSpec, WeightSpace


@dataclass(frozen=True)
class Axis:
    group: str | None  # None: not permutable (its entries are features)
    size: int


@dataclass(frozen=True)
class TensorLayout:
    key: str  # state-dict key
    kind: str  # "weight" | "bias"
    layer: int  # index among the spec's weight layers
    axes: tuple[Axis, ...]
    channels: int  # input channels: kernel entries (1 for linear layers and biases)

    @property
    def groups(self) -> list[str]:
        return [a.group for a in self.axes if a.group is not None]


def chain_problem(spec: NetworkSpec) -> str:
    """'' if DWSNet can read `spec`, else why not."""
    if not spec.is_chain():
        return "DWSNet reads plain feed-forward chains (MLPs, INRs, small CNNs) without residual or norm layers"
    layers = spec.weight_layers()
    if not layers:
        return "the architecture has no linear or conv layers"
    covered = {lay.weight for lay in layers} | {lay.bias for lay in layers if lay.bias}
    other = [k for k in spec.param_keys if k not in covered]
    if other:
        return f"parameters outside linear/conv layers: {other[:3]}"
    if any(p.is_buffer for p in spec.params):
        return "the architecture has buffers (e.g. norm statistics)"
    for lay in layers:
        p = spec.param(lay.weight)
        if any(g is not None for g in p.groups[2:]):
            return f"{lay.weight}: permutable kernel axes are not supported"
    return ""


def layouts_for_spec(spec: NetworkSpec) -> list[TensorLayout]:
    """Weights first, then biases, each in forward order (DWSNets' (weights, biases) pair)."""
    weights, biases = [], []
    for i, lay in enumerate(spec.weight_layers()):
        p = spec.param(lay.weight)
        axes = (Axis(p.groups[0], p.shape[0]), Axis(p.groups[1], p.shape[1]))
        weights.append(TensorLayout(lay.weight, "weight", i, axes, prod(p.shape[2:])))
        if lay.bias:
            b = spec.param(lay.bias)
            biases.append(TensorLayout(lay.bias, "bias", i, (Axis(b.groups[0], b.shape[0]),), 1))
    return weights + biases


def features_from_ws(ws: WeightSpace, layouts: list[TensorLayout]) -> list[Tensor]:
    """Per layout: [B, *axis sizes, C]."""
    B = len(ws)
    return [ws.tensors[t.key].reshape(B, *(a.size for a in t.axes), t.channels) for t in layouts]
