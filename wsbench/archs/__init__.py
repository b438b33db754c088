"""Architectures zoos are made of. `build_arch(name, **kwargs)` builds one by registry name;
`arch_spec(name, **kwargs)` gives its NetworkSpec (shapes and neuron-permutation groups)."""
from __future__ import annotations

from typing import Any

from torch import nn

from ..registry import ARCHS
from .mlp import mlp
from .resnet_cifar import resnet_cifar
from .siren import siren
from .small_cnn import small_cnn

ARCHS.add("resnet_cifar", resnet_cifar)
ARCHS.add("small_cnn", small_cnn)
ARCHS.add("siren", siren)
ARCHS.add("mlp", mlp)


def build_arch(name: str, **kwargs: Any) -> nn.Module:
    try:
        return ARCHS.get(name)(**kwargs)
    except (TypeError, ValueError) as e:
        from ..errors import ConfigError

        raise ConfigError(f"cannot build architecture {name!r} with {kwargs}: {e}") from None


def arch_spec(name: str, **kwargs: Any):
    from ..weights import spec_for_arch

    return spec_for_arch(name, **kwargs)
