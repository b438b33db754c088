"""Compression baselines: budgets are met exactly, sizes are accounted right, quality rises with budget."""
from __future__ import annotations

import pytest
import torch

from wsbench.archs import build_arch
from wsbench.errors import ConfigError
from wsbench.methods.base import ReconstructionTarget, RunContext
from wsbench.methods.compression import LowRank, MagnitudePrune, Quantize, conv_keys, kept_size


@pytest.fixture(scope="module")
def target() -> ReconstructionTarget:
    torch.manual_seed(0)
    sd = {k: v for k, v in build_arch("resnet_cifar", depth=20).state_dict().items() if "num_batches" not in k}
    return ReconstructionTarget("r20", "resnet_cifar", {"depth": 20}, sd, "cifar10")


def _errors(rec):
    return [v.extra["layer_rel_error"] for v in rec.variants.values()]


def test_magnitude_prune_keeps_exactly_the_budget(target):
    rec = MagnitudePrune(budgets=[0.1, 0.5]).reconstruct(target, RunContext())
    keys = conv_keys(target)
    n_conv = sum(target.state_dict[k].numel() for k in keys)
    assert n_conv == 29744 * 9 + 0  # ResNet20 option A: only 3x3 kernels
    for b, var in zip([0.1, 0.5], rec.variants.values()):
        nz = sum(int((var.state_dict[k] != 0).sum()) for k in keys)
        assert nz == round(b * n_conv)
        assert var.n_params == nz + kept_size(target, keys)
        assert var.n_bytes == 4 * var.n_params + -(-n_conv // 8)
        # the kept weights are the largest ones, unchanged
        for k in keys:
            kept = var.state_dict[k] != 0
            torch.testing.assert_close(var.state_dict[k][kept], target.state_dict[k][kept])
    e10, e50 = (sum(e.values()) for e in _errors(rec))
    assert e50 < e10


def test_low_rank_respects_budget_and_improves(target):
    rec = LowRank(budgets=[0.2, 0.6]).reconstruct(target, RunContext())
    keys = conv_keys(target)
    n_conv = sum(target.state_dict[k].numel() for k in keys)
    errs = []
    for b, var in zip([0.2, 0.6], rec.variants.values()):
        assert var.n_params - kept_size(target, keys) <= b * n_conv
        for k in keys:
            w = var.state_dict[k]
            m = w.reshape(w.shape[0], -1)
            assert torch.linalg.matrix_rank(m) <= min(m.shape)
        errs.append(sum(var.extra["layer_rel_error"].values()))
    assert errs[1] < errs[0]


def test_quantize_levels_and_bytes(target):
    rec = Quantize(budgets=[2, 8]).reconstruct(target, RunContext())
    keys = conv_keys(target)
    two = rec.variants["quantize@2bit"]
    for k in keys:
        assert len(torch.unique(two.state_dict[k])) <= 4
    n_conv = sum(target.state_dict[k].numel() for k in keys)
    assert two.n_bytes == -(-n_conv * 2 // 8) + 8 * len(keys) + 4 * kept_size(target, keys)
    e2, e8 = (sum(v.extra["layer_rel_error"].values()) for v in rec.variants.values())
    assert e8 < e2 / 10


@pytest.mark.parametrize("cls,cfg", [(MagnitudePrune, {"budgets": [1.5]}), (MagnitudePrune, {"budgets": []}),
                                     (Quantize, {"budgets": [0]}), (LowRank, {"rank": 3})])
def test_bad_configs(cls, cfg):
    with pytest.raises(ConfigError):
        cls(**cfg)


def test_one_relative_error_rule_with_a_zero_original_tensor():
    """Every reconstructor and the task use wsbench.metrics.relative_weight_errors: a tensor that is
    zero in the original gives 0.0 when reconstructed exactly, None otherwise (no NaN, no 1e12)."""
    from wsbench.metrics import relative_weight_errors

    orig = {"a": torch.tensor([3.0, 4.0]), "z": torch.zeros(2)}
    same = relative_weight_errors(orig, {"a": torch.tensor([3.0, 4.0]), "z": torch.zeros(2)}, ["a", "z"])
    assert same == {"a": 0.0, "z": 0.0, "__total__": 0.0}
    off = relative_weight_errors(orig, {"a": torch.tensor([0.0, 4.0]), "z": torch.ones(2)}, ["a", "z"])
    assert off["a"] == pytest.approx(0.6) and off["z"] is None
    assert off["__total__"] == pytest.approx((9 + 2) ** 0.5 / 5)


def test_conv_layers_come_from_the_architectures_spec(target):
    from wsbench.methods.compression import conv_keys

    assert conv_keys(target) == [k for k, v in target.state_dict.items() if k.endswith("weight") and v.dim() == 4]
    assert all(lay.kind in ("conv", "linear") for lay in target.spec.weight_layers())
