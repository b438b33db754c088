"""The small-CNN training's CPU activations in channels-last order: the same results as NCHW (float rounding in
the convolutions, the dropout masks bit for bit), and the compiled dropout loops on both layouts."""
from __future__ import annotations

import logging

import pytest
import torch

from wsbench.zoo_builders import batched_training, counter_rng as rng, fused_dropout
from wsbench.zoo_builders.batched_training import CnnArch, init_params, loss_and_grad
from wsbench.zoo_builders.compiled import CompiledOrEager


@pytest.mark.parametrize("name", ["relu", "gelu"])  # two of the three backward passes: from the output, from the input
def test_dropout_on_a_channels_last_activation_equals_the_nchw_one(name):
    nb, seeds, rate = 3, torch.tensor([4, 9, 11]), torch.tensor([0.2, 0.45, 1.0])
    g = torch.Generator().manual_seed(1)
    h = torch.randn(4, nb * 5, 6, 7, generator=g)  # 5 channels, 6x7 pixels: no axis of the same size
    upstream = torch.randn(h.shape, generator=g)
    outs, grads = [], []
    for x in (h.clone(), h.contiguous(memory_format=torch.channels_last)):
        x.requires_grad_(True)
        y = fused_dropout.activation_dropout(x, nb, seeds, rng.STREAM_DROPOUT, 12, rate, name, first_image=3)
        (gx,) = torch.autograd.grad(y, x, upstream)
        outs.append(y.detach())
        grads.append(gx)
    assert outs[1].is_contiguous(memory_format=torch.channels_last) and not outs[1].is_contiguous()
    assert fused_dropout.fused_available()
    assert torch.equal(outs[0], outs[1])  # the same unit gets the same counter, so the same mask
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-7)
    kept = (outs[0] != 0).float().mean()
    assert 0.2 < kept < 0.8  # some units dropped, some kept (rate 1 drops member 2 entirely)


def _tiny_step(seed: int) -> tuple:
    """A 2-conv arch of 8 channels, 3 members, 40 images of 14x14, 12 a member: loss_and_grad's arguments."""
    arch = CnnArch(1, 10, 8, 2, padding=1)
    seeds = torch.tensor([1, 2, 3])
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(40, 1, 14, 14, generator=g), torch.randint(0, 10, (40,), generator=g)
    idx = torch.randint(0, 40, (3, 12), generator=g)
    return (arch, init_params(arch, seeds, torch.ones(3)), "relu", x, y, idx), \
        dict(dropout=torch.tensor([0.3, 0.0, 0.5]), seeds=seeds, step=2)


@pytest.mark.parametrize("compiled_dropout", [False, True])
def test_channels_last_training_step_equals_the_nchw_one(monkeypatch, compiled_dropout):
    monkeypatch.setattr(fused_dropout, "COMPILE_MIN_ELEMENTS", 0 if compiled_dropout else 1 << 60)
    monkeypatch.setattr(batched_training, "CHANNELS_LAST_MIN_ELEMENTS", 0)  # a zoo build's sizes, in small
    args, kw = _tiny_step(5)
    results = {}
    for channels_last in (False, True):
        monkeypatch.setattr(batched_training, "CPU_CHANNELS_LAST", channels_last)
        results[channels_last] = loss_and_grad(*args, **kw)
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(results[True][1], results[False][1], rtol=1e-5, atol=1e-6)
    assert results[True][1].abs().sum() > 0


@pytest.mark.parametrize("limit", [2, 4])
def test_the_recompile_limit_is_the_one_given(limit, caplog):
    """The zoo builds' static-shape loops raise dynamo's limit of compiled versions per function (8): past the
    limit dynamo runs the function eagerly, call after call, and says so. Here 4 shapes under limits of 2 and 4."""
    def double(t: torch.Tensor) -> torch.Tensor:
        return t * 2

    torch._dynamo.reset()  # dynamo keeps compiled versions per code object: none from the other limit's run
    f = CompiledOrEager(double, "a test function", dynamic=False, recompile_limit=limit)
    with caplog.at_level(logging.WARNING, logger="torch._dynamo"):
        for _ in range(2):
            for n in range(1, 5):
                assert torch.equal(f(torch.ones(n)), torch.full((n,), 2.0))
    assert f.usable
    assert ("recompile_limit" in caplog.text) == (limit < 4)
