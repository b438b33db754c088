"""The fused activation-dropout step (compiled loops) against the eager activation and mask."""
from __future__ import annotations

import pytest
import torch

from wsbench.zoo_builders import counter_rng as rng
from wsbench.zoo_builders import fused_dropout
from wsbench.zoo_builders.batched_training import ACTIVATIONS


def _eager(h: torch.Tensor, nb: int, seeds, step: int, rate: torch.Tensor, name: str) -> torch.Tensor:
    n, bc, hh, ww = h.shape
    mask = rng.dropout_multipliers_member_axis1(seeds, rng.STREAM_DROPOUT, step, (n, bc // nb, hh, ww), rate)
    return (ACTIVATIONS[name](h).view(n, nb, bc // nb, hh, ww) * mask).view_as(h)


@pytest.mark.parametrize("name", fused_dropout.FUSED_ACTIVATIONS)
def test_fused_step_equals_eager_forward_and_backward(name):
    nb, seeds, rate = 3, torch.tensor([4, 9, 2**32 - 2]), torch.tensor([0.0, 0.45, 1.0])
    g = torch.Generator().manual_seed(0)
    h = torch.randn(5, nb * 4, 6, 6, generator=g)
    h[0, 0, 0, :3] = 0.0  # relu's kink
    upstream = torch.randn(h.shape, generator=g)
    outs, grads = [], []
    fused = lambda x, *a: fused_dropout.activation_dropout(x, nb, seeds, rng.STREAM_DROPOUT, 77, rate, name)  # noqa: E731
    for fn in (lambda x: _eager(x, nb, seeds, 77, rate, name), fused):
        x = h.clone().requires_grad_(True)
        y = fn(x)
        (gx,) = torch.autograd.grad(y, x, upstream)
        outs.append(y.detach())
        grads.append(gx)
    assert fused_dropout.fused_available()
    if name == "relu":  # exact: the same operations on the same masks
        assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1])
    else:  # a compiled transcendental may differ from ATen's by an ulp
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)
    member2 = outs[1].view(5, nb, 4, 6, 6)[:, 2]
    assert not member2.any()  # rate 1 drops everything


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="fused activation"):
        fused_dropout.activation_dropout(torch.zeros(1, 2, 2, 2), 1, torch.tensor([1]), 3, 0, torch.tensor([0.5]), "elu")


@pytest.mark.parametrize("name", fused_dropout.FUSED_ACTIVATIONS)
def test_backward_keeps_the_output_not_the_pre_activation_where_the_output_suffices(name):
    """The next convolution keeps the output anyway; keeping the pre-activation too doubles a layer's memory."""
    nb, seeds, rate = 2, torch.tensor([3, 5]), torch.tensor([0.3, 0.6])
    h = torch.randn(4, nb * 3, 5, 5, requires_grad=True)
    y = fused_dropout.activation_dropout(h, nb, seeds, rng.STREAM_DROPOUT, 1, rate, name)
    node = y.grad_fn.next_functions[0][0]  # y is a view of the function's output
    kept = node.saved_tensors[0]
    expected = y if name in fused_dropout.FROM_OUTPUT else h
    assert kept.untyped_storage().data_ptr() == expected.untyped_storage().data_ptr()
