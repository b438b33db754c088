"""NetworkSpec derivation and WeightSpace symmetries: a valid neuron permutation leaves the
network's function unchanged; permuting a non-permutable axis does not."""
from __future__ import annotations

import pytest
import torch

from wsbench.archs import build_arch
from wsbench.errors import IntegrityError
from wsbench.archs import spec_for_arch
from wsbench.weights import WeightSpace, batched_forward

CASES = [
    ("mlp", {"widths": [3, 8, 8, 2]}, (5, 3)),
    ("siren", {}, (7, 2)),
    ("small_cnn", {"in_channels": 1}, (4, 1, 28, 28)),
    ("resnet_cifar", {"depth": 20}, (2, 3, 32, 32)),
    ("resnet_cifar", {"depth": 20, "shortcut": "B"}, (2, 3, 32, 32)),
]


def _random_ws(name: str, kwargs: dict, n: int, seed: int = 0) -> tuple[torch.nn.Module, WeightSpace]:
    torch.manual_seed(seed)
    spec = spec_for_arch(name, **kwargs)
    sds = []
    for _ in range(n):
        m = build_arch(name, **kwargs)
        sd = m.state_dict()
        for k, v in sd.items():  # non-trivial BN statistics so that permutations matter
            if v.is_floating_point() and ("running" in k or "bn" in k):
                sd[k] = v + 0.3 * torch.rand_like(v)
        sds.append(sd)
    return build_arch(name, **kwargs).eval(), WeightSpace.from_state_dicts(spec, sds)


@pytest.mark.parametrize("name,kwargs,xshape", CASES)
def test_permutation_leaves_function_unchanged(name, kwargs, xshape):
    model, ws = _random_ws(name, kwargs, n=3)
    x = torch.randn(*xshape)
    y = batched_forward(model, ws, x)
    g = torch.Generator().manual_seed(1)
    perms = ws.random_permutation(g)
    assert perms, "every architecture here has permutable neurons"
    ws_p = ws.permute(perms)
    assert not torch.allclose(ws_p.flat(), ws.flat())
    torch.testing.assert_close(batched_forward(model, ws_p, x), y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,kwargs,xshape", CASES[:3])
def test_permuting_input_axis_changes_function(name, kwargs, xshape):
    model, ws = _random_ws(name, kwargs, n=2)
    x = torch.randn(*xshape)
    first = ws.spec.weight_layers()[0].weight
    t = dict(ws.tensors)
    t[first] = t[first].flip(-1)  # reverse a non-permutable axis (inputs / kernel columns)
    y0 = batched_forward(model, ws, x)
    y1 = batched_forward(model, WeightSpace(ws.spec, t), x)
    assert (y0 - y1).abs().max() > 1e-3


@pytest.mark.parametrize("impl", ["auto", "loop", "vmap"])
def test_batched_forward_matches_module(impl):
    model, ws = _random_ws("resnet_cifar", {"depth": 20}, n=2)
    x = torch.randn(3, 3, 32, 32)
    y = batched_forward(model, ws, x, impl=impl)
    m = build_arch("resnet_cifar", depth=20).eval()
    m.load_state_dict(ws.state_dict(1), strict=False)
    torch.testing.assert_close(y[1], m(x), rtol=1e-4, atol=1e-4)


def test_batched_forward_per_network_inputs_agree_across_impls():
    model, ws = _random_ws("small_cnn", {"in_channels": 1}, n=3)
    x = torch.randn(3, 5, 1, 28, 28)
    loop = batched_forward(model, ws, x, per_network_input=True, impl="loop")
    torch.testing.assert_close(batched_forward(model, ws, x, per_network_input=True, impl="vmap"), loop,
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="impl"):
        batched_forward(model, ws, x, impl="fast")


def test_specs_are_right():
    s = spec_for_arch("small_cnn", in_channels=1)
    assert s.n_params == 4970  # Unterthiner et al.'s small CNN on MNIST
    assert s.groups == {"h1": 16, "h2": 16, "h3": 16}
    assert s.is_chain() and [lay.kind for lay in s.weight_layers()] == ["conv", "conv", "conv", "linear"]
    s = spec_for_arch("siren")
    assert [p.shape for p in s.params] == [(32, 2), (32,), (32, 32), (32,), (1, 32), (1,)]
    assert s.is_chain() and s.groups == {"h1": 32, "h2": 32}
    r20 = spec_for_arch("resnet_cifar", depth=20)
    assert r20.n_params == 269722 and not r20.is_chain()
    assert len(r20.residual) == 9 and len([lay for lay in r20.layers if lay.kind == "conv"]) == 19
    assert r20.param("layer2.0.conv1.weight").groups == ("layer2.0.mid", None, None, None)
    r56 = spec_for_arch("resnet_cifar", depth=56)
    assert r56.n_params == 853018
    b = spec_for_arch("resnet_cifar", depth=20, shortcut="B")
    assert b.param("layer2.0.shortcut.0.weight").groups == ("stream2", "stream1", None, None)


def test_shape_mismatch_and_nan_are_refused():
    spec = spec_for_arch("mlp", widths=[2, 4, 1])
    good = {p.key: torch.zeros(2, *p.shape) for p in spec.params}
    bad = dict(good, **{"layers.0.weight": torch.zeros(2, 4, 3)})
    with pytest.raises(IntegrityError, match="layers.0.weight"):
        WeightSpace(spec, bad)
    nan = dict(good, **{"layers.0.bias": torch.full((2, 4), float("nan"))})
    with pytest.raises(IntegrityError, match="NaN"):
        WeightSpace(spec, nan).check_finite()
