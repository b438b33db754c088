"""Neuron-permutation symmetry, declared by each architecture beside its definition.

An architecture's constructor carries `permutation_groups(model, state_dict)`: for every
state-dict key, one group name (or None: not permutable) per tensor axis, where one group is one
set of hidden neurons that can be reordered without changing the network's function. It also
carries `example_input(model, n)`, an input batch, so that tests can check the declaration on
every registered architecture. An architecture without a declaration gets its groups derived
structurally when it is a plain chain of Linear/Conv2d layers (nfn's `network_spec_from_wsfeat`
reading); anything else is refused, never silently treated as having no symmetry.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

import torch
from torch import Tensor, nn

Group = str | None
GroupsFn = Callable[[nn.Module, Mapping[str, Tensor]], dict[str, tuple[Group, ...]]]
ExampleFn = Callable[[nn.Module, int], Tensor]
C = TypeVar("C", bound=Callable[..., nn.Module])


def declare_symmetry(groups: GroupsFn, example_input: ExampleFn) -> Callable[[C], C]:
    """Decorator for an architecture constructor: its permutation groups and an example input."""

    def deco(constructor: C) -> C:
        constructor.permutation_groups = groups  # type: ignore[attr-defined]
        constructor.example_input = example_input  # type: ignore[attr-defined]
        return constructor

    return deco


def chain_groups(layers: list[tuple[str, str | None, int]], tied: list[bool]) -> dict[str, tuple[Group, ...]]:
    """Groups of a chain of layers (weight key, bias key, weight rank), in forward order: between
    layer i and i+1 the hidden neurons form group `h{i+1}` when `tied[i]` (the output axis of one is
    the input axis of the next, through elementwise operations only), else stay fixed."""
    out: dict[str, tuple[Group, ...]] = {}
    for i, (weight, bias, rank) in enumerate(layers):
        g_out = f"h{i + 1}" if i < len(layers) - 1 and tied[i] else None
        g_in = f"h{i}" if i > 0 and tied[i - 1] else None
        out[weight] = (g_out, g_in) + (None,) * (rank - 2)
        if bias is not None:
            out[bias] = (g_out,)
    return out


def plain_chain_groups(model: nn.Module, sd: Mapping[str, Tensor]) -> dict[str, tuple[Group, ...]]:
    """Structural derivation for an undeclared architecture: its Linear/Conv2d layers in module
    order, tied where one's outputs count equals the next's inputs (a flatten of more than one
    position per channel breaks the tie). Refuses (ValueError) what is not a plain chain: normalisation
    layers, residual blocks, layers it cannot read, or parameters outside those layers."""
    layers: list[tuple[str, str | None, int, int, int]] = []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            bias = f"{name}.bias" if mod.bias is not None else None
            n_in = mod.in_features if isinstance(mod, nn.Linear) else mod.in_channels
            n_out = mod.out_features if isinstance(mod, nn.Linear) else mod.out_channels
            if isinstance(mod, nn.Conv2d) and mod.groups != 1:
                raise ValueError(f"{type(model).__name__}: grouped convolution {name!r} is not a plain chain")
            layers.append((f"{name}.weight", bias, mod.weight.dim(), n_in, n_out))
        elif isinstance(mod, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
            raise ValueError(f"{type(model).__name__}: normalisation layer {name!r}: declare its symmetry "
                             "with archs.symmetry.declare_symmetry")
        elif type(mod).__name__.endswith("Block"):
            raise ValueError(f"{type(model).__name__}: {name!r} looks like a residual block: declare its symmetry")
    covered = {k for w, b, *_ in layers for k in (w, b) if k is not None}
    stray = sorted(k for k in sd if k not in covered)
    if stray:
        raise ValueError(f"{type(model).__name__}: parameters {stray[:3]} are outside its Linear/Conv2d layers")
    tied = [a[4] == b[3] for a, b in zip(layers, layers[1:])]
    return chain_groups([(w, b, r) for w, b, r, *_ in layers], tied)


def permutation_groups(constructor: Any, model: nn.Module, sd: Mapping[str, Tensor]) -> tuple[dict[str, tuple[Group, ...]], str]:
    """(groups, where they come from: "declared" or "derived: plain chain")."""
    declared = getattr(constructor, "permutation_groups", None)
    if declared is not None:
        return declared(model, sd), "declared"
    try:
        return plain_chain_groups(model, sd), "derived: plain chain"
    except ValueError as e:
        from ..errors import ConfigError

        raise ConfigError(f"architecture {type(model).__name__}: no declared neuron-permutation symmetry and {e}") \
            from None


def image_input(channels: int, size: int) -> ExampleFn:
    """An example-input function of `channels` x size x size images."""
    return lambda model, n: torch.randn(n, channels, size, size)
