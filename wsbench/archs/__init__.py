"""Architectures zoos are made of, each with its neuron-permutation symmetry declared beside its
definition (symmetry.py). `build_arch(name, **kwargs)` builds one by registry name;
`spec_for_arch(name, **kwargs)` gives its NetworkSpec (shapes and permutation groups)."""
from __future__ import annotations

from ..registry import ARCHS
from .mlp import mlp
from .resnet_cifar import resnet_cifar
from .siren import siren
from .small_cnn import small_cnn

ARCHS.add("resnet_cifar", resnet_cifar)
ARCHS.add("small_cnn", small_cnn)
ARCHS.add("siren", siren)
ARCHS.add("mlp", mlp)

from .spec import build_arch, canonical_arch_kwargs, spec_for_arch  # noqa: E402 (after the registrations)

__all__ = ["build_arch", "canonical_arch_kwargs", "spec_for_arch"]
