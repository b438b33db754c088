"""The NetworkSpec of an architecture: its tensors, layers and neuron-permutation groups, read off
one built instance (groups as the architecture declares them, see symmetry.py). Cached per
canonical kwargs: kwargs equal to the defaults do not make another spec."""
from __future__ import annotations

import functools
import inspect
import json
import typing
from functools import lru_cache
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..registry import ARCHS
from ..weights import LayerSpec, NetworkSpec, ParamSpec
from .symmetry import permutation_groups


def _residual_links(model: nn.Module) -> tuple[tuple[str, str], ...]:
    links = []
    for name, mod in model.named_modules():
        if type(mod).__name__ == "BasicBlock":
            links.append((f"{name}.conv1", f"{name}.bn2"))
    return tuple(links)


def build_arch(name: str, **kwargs: Any) -> nn.Module:
    try:
        return ARCHS.get(name)(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot build architecture {name!r} with {kwargs}: {e}") from None


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


@lru_cache(maxsize=64)
def _spec_cached(name: str, kwargs_json: str) -> NetworkSpec:
    kwargs = json.loads(kwargs_json)
    model = build_arch(name, **kwargs)
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    groups, source = permutation_groups(ARCHS.get(name), model, sd)
    buffer_keys = {k for k, _ in model.named_buffers()}
    params = tuple(
        ParamSpec(k, tuple(v.shape), groups.get(k, (None,) * v.dim()), is_buffer=k in buffer_keys)
        for k, v in sd.items()
    )
    sizes: dict[str, int] = {}
    for p in params:
        for g, n in zip(p.groups, p.shape):
            if g is not None:
                if sizes.setdefault(g, n) != n:
                    raise ValueError(f"group {g} has sizes {sizes[g]} and {n}")
    layers = []
    for mname, mod in model.named_modules():
        kind = {nn.Linear: "linear", nn.Conv2d: "conv", nn.BatchNorm2d: "batchnorm"}.get(type(mod))
        if kind is None:
            continue
        w = f"{mname}.weight"
        b = f"{mname}.bias" if f"{mname}.bias" in sd else None
        bufs = tuple(f"{mname}.{x}" for x in ("running_mean", "running_var") if f"{mname}.{x}" in sd)
        g = groups.get(w, (None, None))
        layers.append(LayerSpec(mname, kind, w, b, bufs, out_group=g[0], in_group=g[1] if kind != "batchnorm" else None))
    return NetworkSpec(name, kwargs_json, params, tuple(layers), tuple(sorted(sizes.items())), _residual_links(model),
                       symmetry=source)


def spec_for_arch(name: str, **kwargs: Any) -> NetworkSpec:
    """The NetworkSpec of an architecture (cached); kwargs equal to the defaults do not matter."""
    return _spec_cached(name, json.dumps(canonical_arch_kwargs(name, kwargs), sort_keys=True))
