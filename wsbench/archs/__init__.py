"""Architectures zoos are made of. `build_arch(name, **kwargs)` builds one by registry name;
`arch_spec(name, **kwargs)` gives its NetworkSpec (shapes and neuron-permutation groups)."""
from __future__ import annotations

import functools
import inspect
import json
import typing
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


def canonical_arch_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` without the entries equal to the architecture's defaults, so that one network has
    one spec however its kwargs were spelt (a built SIREN's {} and an imported one's explicit
    hidden=32, in_dim=2, ...). Unknown keys are kept: building then names them."""
    defaults = _arch_defaults(name)
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # noqa: E731 (tuple == list)
    return {k: v for k, v in kwargs.items() if not (k in defaults and same(v, defaults[k]))}


@functools.lru_cache(maxsize=None)
def _arch_defaults(name: str) -> dict[str, Any]:
    fn = ARCHS.get(name)
    sig = inspect.signature(fn)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):  # a wrapper: the class it builds
        built = typing.get_type_hints(fn).get("return")
        sig = inspect.signature(built) if isinstance(built, type) else sig
    return {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}
