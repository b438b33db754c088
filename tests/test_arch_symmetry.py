"""Every registered architecture declares its neuron-permutation symmetry (or has it derived as a
plain chain), and the declaration is right: a random permutation of its groups keeps the function.
An encoder that claims invariance refuses an architecture with hidden layers but no groups."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from wsbench.archs import build_arch, spec_for_arch
from wsbench.archs.symmetry import chain_groups, plain_chain_groups
from wsbench.errors import ConfigError
from wsbench.registry import ARCHS, METHODS
from wsbench.weights import WeightSpace, batched_forward

# the kwargs that make each architecture's other symmetry cases (defaults are always tested)
VARIANTS = {"resnet_cifar": [{"shortcut": "B"}], "small_cnn": [{"in_channels": 3, "n_conv": 2}, {"fc_hidden": 12}],
            "mlp": [{"widths": [3, 5, 7, 2]}], "modelzoo_cnn": [{"model_type": "CNN2", "fc_in": 54}]}


def _cases() -> list[tuple[str, dict]]:
    return [(name, kw) for name in ARCHS.names() for kw in [{}] + VARIANTS.get(name, [])]


@pytest.mark.parametrize("name,kwargs", _cases(), ids=lambda v: str(v))
def test_every_architecture_declares_groups_that_keep_its_function(name, kwargs):
    constructor = ARCHS.get(name)
    assert hasattr(constructor, "permutation_groups") and hasattr(constructor, "example_input"), \
        f"{name}: declare its symmetry beside its definition (wsbench.archs.symmetry.declare_symmetry)"
    spec = spec_for_arch(name, **kwargs)
    assert len(spec.weight_layers()) >= 2 and spec.group_sizes, f"{name} has hidden layers but no groups"
    torch.manual_seed(0)
    sds = []
    for _ in range(2):
        sd = build_arch(name, **kwargs).state_dict()
        for k, v in sd.items():  # non-trivial normalisation statistics, so that permuting them matters
            if v.is_floating_point() and "running" in k:
                sd[k] = v + 0.3 * torch.rand_like(v)
        sds.append(sd)
    ws = WeightSpace.from_state_dicts(spec, sds)
    model = build_arch(name, **kwargs).eval()
    x = constructor.example_input(model, 3)
    perms = ws.random_permutation(torch.Generator().manual_seed(1))
    permuted = ws.permute(perms)
    assert not torch.equal(permuted.flat(), ws.flat())
    torch.testing.assert_close(batched_forward(model, permuted, x), batched_forward(model, ws, x),
                               rtol=1e-4, atol=1e-4)


def test_plain_chain_derivation_ties_only_what_the_shapes_allow():
    flat = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.Flatten(), nn.Linear(6 * 4 * 4, 5),
                         nn.Tanh(), nn.Linear(5, 2))
    g = plain_chain_groups(flat, flat.state_dict())
    assert g["0.weight"] == ("h1", None, None, None) and g["2.weight"] == (None, "h1", None, None)
    assert g["4.weight"] == ("h3", None) and g["6.weight"] == (None, "h3")  # the flatten breaks conv -> linear
    with pytest.raises(ValueError, match="normalisation"):
        bn = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
        plain_chain_groups(bn, bn.state_dict())
    assert chain_groups([("a.weight", None, 2), ("b.weight", "b.bias", 2)], [False]) == \
        {"a.weight": (None, None), "b.weight": (None, None), "b.bias": (None,)}


def test_an_undeclared_architecture_that_is_no_plain_chain_is_refused(monkeypatch):
    class Skip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.norm, self.b = nn.Linear(2, 4), nn.LayerNorm(4), nn.Linear(4, 1)

        def forward(self, x):
            return self.b(self.norm(self.a(x)))

    monkeypatch.setitem(ARCHS._entries, "skip_toy", lambda: Skip())
    with pytest.raises(ConfigError, match="no declared neuron-permutation symmetry"):
        spec_for_arch("skip_toy")


def test_invariant_encoders_refuse_a_spec_without_groups():
    from dataclasses import replace

    spec = spec_for_arch("small_cnn")
    bare = replace(spec, group_sizes=(), params=tuple(replace(p, groups=(None,) * len(p.shape)) for p in spec.params),
                   layers=tuple(replace(lay, out_group=None, in_group=None) for lay in spec.layers))
    for name in METHODS.names():
        cls = METHODS.get(name)
        if cls.capability != "encoder":
            continue
        ok, why = cls.supports(bare)
        if cls.invariant:
            assert not ok and "declares no neuron-permutation groups" in why, name
        else:
            assert cls.supports(spec)[0] == ok, name  # the rule changes nothing for the others
