"""wsbench/methods/equivariant/cpu_kernels.py: the hand-written CPU backward passes of the DWS layer give
the plain ops' values and gradients (torch.max over one axis; softmax(q k^T scale) v)."""
from __future__ import annotations

import pytest
import torch

from wsbench.methods.equivariant.blocks import attention
from wsbench.methods.equivariant.cpu_kernels import first_argmax, max_first, set_attention

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _max_and_grad(fn, x: torch.Tensor, dim: int, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    out = fn(x, dim)
    (out * w).sum().backward()
    return out.detach(), x.grad


def _torch_max(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x.max(dim=dim).values


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [0, 1, 2, 3])
def test_max_first_gives_torch_max_values_and_gradient(dtype, dim):
    g = torch.Generator().manual_seed(dim)
    x = torch.randn(3, 5, 4, 6, generator=g, dtype=dtype)
    x = torch.relu(x)  # zeros: ties wherever a slice is all <= 0
    x[:, :, 1] = 0.0  # whole slices tied along every axis
    w = torch.randn(x.amax(dim=dim).shape, generator=g, dtype=dtype)
    ours, ours_grad = _max_and_grad(max_first, x, dim, w)
    ref, ref_grad = _max_and_grad(_torch_max, x, dim, w)
    assert torch.equal(ours, ref)
    assert torch.equal(ours_grad, ref_grad)  # all of each gradient to the first maximum, not split over ties
    assert (ours_grad != 0).sum() <= w.numel()


def test_first_argmax_is_torch_max_index_on_ties_and_non_finite_values():
    x = torch.tensor([[1.0, 3.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0], [-1.0, float("inf"), float("inf"), 2.0],
                      [float("-inf"), float("-inf"), -5.0, -5.0]])
    got = first_argmax(x, x.amax(dim=1, keepdim=True), 1)
    assert got.squeeze(1).tolist() == [1, 0, 1, 2] == x.max(dim=1).indices.tolist()
    nan = torch.tensor([[1.0, float("nan"), 2.0]])
    assert first_argmax(nan, nan.amax(dim=1, keepdim=True), 1).item() == nan.max(dim=1).indices.item()
    half = torch.tensor([[0.0, 2.0, 2.0]], dtype=torch.bfloat16)  # no exact float ranks: the plain path
    assert first_argmax(half, half.amax(dim=1, keepdim=True), 1).item() == 1


@pytest.mark.parametrize("contiguous", [False, True])
@pytest.mark.parametrize("heads,dim", [(8, 4), (4, 8), (1, 32)])
def test_set_attention_equals_scaled_dot_product_attention(heads, dim, contiguous):
    """Directly and through the SAB's entry point (blocks.attention), on inputs as the SAB makes them
    ([B, n, heads, d] viewed head-major, not contiguous) and on contiguous ones."""
    g = torch.Generator().manual_seed(heads)
    q, k, v = (torch.randn(3, 32, heads, dim, generator=g, dtype=torch.float64).transpose(1, 2) for _ in range(3))
    q, k, v = ((t.contiguous() if contiguous else t).requires_grad_(True) for t in (q, k, v))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.3)
    w = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    ref_grads = torch.autograd.grad((ref * w).sum(), (q, k, v))
    for fn in (set_attention, attention):
        out = fn(q, k, v, 0.3)
        assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-12)
        grads = torch.autograd.grad((out * w).sum(), (q, k, v))
        assert all(a.shape == b.shape and torch.allclose(a, b, atol=1e-12) for a, b in zip(grads, ref_grads))
    small = tuple(t[:1, :2, :5].detach().requires_grad_(True) for t in (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: set_attention(a, b, c, 0.3), small)


@pytest.mark.parametrize("dim", [1, 2])
def test_max_first_gradient_through_the_c_kernel_matches_torch_max_with_nan_and_inf(dim):
    """float32 contiguous inputs take the one-pass C kernel (max_pool.c): ties, NaN (the first NaN takes the
    gradient, as torch.max's index) and infinities give torch.max's gradient exactly; a non-contiguous
    input takes the float-ops path, with the same result."""
    from wsbench.methods.equivariant.cpu_kernels import _max_pool_kernel

    if _max_pool_kernel() is None:
        pytest.skip("no C compiler: the float-ops path runs")
    g = torch.Generator().manual_seed(dim)
    x = torch.relu(torch.randn(4, 9, 7, 300, generator=g))  # inner axis longer than the kernel's chunk of 256
    x[0, 3, 2, 5] = x[0, 6, 2, 5] = float("nan")
    x[1, :, 4, 7] = float("inf")
    x[2, 5, :, 9] = float("-inf")
    shape = x.amax(dim=dim).shape
    w = torch.randn(shape[::-1], generator=g).permute(2, 1, 0)  # the incoming gradient is not contiguous
    assert w.shape == shape and not w.is_contiguous()
    ours, ours_grad = _max_and_grad(max_first, x, dim, w)
    ref, ref_grad = _max_and_grad(_torch_max, x, dim, w)
    assert torch.equal(ours.isnan(), ref.isnan()) and torch.equal(ours[~ref.isnan()], ref[~ref.isnan()])
    assert torch.equal(ours_grad, ref_grad)
    strided = x.transpose(0, 3).contiguous().transpose(0, 3)  # same values, not contiguous
    assert torch.equal(_max_and_grad(max_first, strided, dim, w)[1], ref_grad)
