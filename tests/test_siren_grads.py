"""The fast SIREN fitting path (hand-written gradients over chunks, compiled on the CPU) against autograd."""
from __future__ import annotations

import pytest
import torch

from wsbench.archs.siren import image_coords
from wsbench.errors import ConfigError
from wsbench.zoo_builders import siren_grads
from wsbench.zoo_builders.compiled import CompiledOrEager
from wsbench.zoo_builders.siren_inr import fit_sirens, init_sirens, siren_forward, siren_shapes


def _autograd_reference(params, coords, target, omega0, offset):
    leaf = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    mse = ((siren_forward(leaf, coords, omega0, offset) - target) ** 2).mean(1)
    mse.sum().backward()
    return mse.detach(), {k: v.grad for k, v in leaf.items()}


@pytest.mark.parametrize("fused_trig", [False, True])
@pytest.mark.parametrize("hidden,n_hidden,chunk", [(32, 2, 16), (8, 1, 3), (12, 3, 5)])
def test_analytic_gradients_equal_autograd(hidden, n_hidden, chunk, fused_trig):
    n, size = 11, 9  # chunk sizes that do not divide the batch
    g = torch.Generator().manual_seed(0)
    params = init_sirens(torch.arange(n), siren_shapes(hidden, n_hidden), 30.0)
    params = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in params.items()}  # non-zero biases too
    coords, target = image_coords(size), torch.rand(n, size * size, generator=g)
    mse_ref, grads_ref = _autograd_reference(params, coords, target, 30.0, 0.5)
    mse, grads, compiled = siren_grads.loss_and_grads(params, coords, target, 30.0, 0.5, chunk=chunk, compile_fn=None,
                                                       fused_trig=fused_trig)
    assert not compiled
    torch.testing.assert_close(mse, mse_ref, rtol=1e-5, atol=1e-7)
    for k in params:
        torch.testing.assert_close(grads[k], grads_ref[k], rtol=1e-4, atol=1e-5 * grads_ref[k].abs().max().item())  # omega0 folded: rounding


def test_analytic_gradients_with_several_inputs_and_outputs_equal_autograd():
    """The thin first and last layers are written as sums over their few inputs / outputs: 3 in, 2 out."""
    n, pixels = 7, 20
    g = torch.Generator().manual_seed(4)
    params = init_sirens(torch.arange(n), siren_shapes(10, 2, in_dim=3, out_dim=2), 30.0)
    params = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in params.items()}
    coords, target = torch.rand(pixels, 3, generator=g) * 2 - 1, torch.rand(n, pixels, generator=g)
    leaf = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    mse_ref = ((siren_forward(leaf, coords, 30.0, 0.5) - target.unsqueeze(-1)) ** 2).mean((1, 2))
    mse_ref.sum().backward()
    mse, grads, _ = siren_grads.loss_and_grads(params, coords, target, 30.0, 0.5, chunk=3, compile_fn=None)
    torch.testing.assert_close(mse, mse_ref.detach(), rtol=1e-5, atol=1e-7)
    for k, v in leaf.items():
        torch.testing.assert_close(grads[k], v.grad, rtol=1e-4, atol=1e-5 * v.grad.abs().max().item())


def test_fits_agree_across_engines_and_with_early_stop():
    imgs, seeds = torch.rand(6, 10, 10, generator=torch.Generator().manual_seed(1)), torch.arange(6)
    runs = {}
    for engine, chunk in (("autograd", None), ("analytic", 4), ("analytic", 1)):
        report: dict = {}
        runs[(engine, chunk)] = fit_sirens(imgs, seeds, steps=40, lr=3e-3, stop_psnr=14.0, engine=engine, chunk=chunk,
                                           compile_mode="off", report=report)
        assert report["grad_engine"].startswith(engine)
    ref_params, ref_mse = runs[("autograd", None)]
    for key in (("analytic", 4), ("analytic", 1)):
        params, mse = runs[key]
        torch.testing.assert_close(mse, ref_mse, rtol=1e-3, atol=1e-6)
        for k in ref_params:
            torch.testing.assert_close(params[k], ref_params[k], rtol=1e-3, atol=1e-5)


def test_compiled_path_equals_eager():
    imgs, seeds = torch.rand(5, 8, 8, generator=torch.Generator().manual_seed(2)), torch.arange(5)
    report: dict = {}
    compiled, mse_c = fit_sirens(imgs, seeds, steps=6, lr=1e-3, chunk=2, compile_mode="on", report=report)
    eager, mse_e = fit_sirens(imgs, seeds, steps=6, lr=1e-3, chunk=2, compile_mode="off")
    if "+compiled" not in report["grad_engine"]:
        pytest.fail(f"torch.compile did not run on this CPU: {siren_grads._CHUNK.failure}")
    torch.testing.assert_close(mse_c, mse_e, rtol=1e-4, atol=1e-7)
    for k in eager:
        torch.testing.assert_close(compiled[k], eager[k], rtol=1e-4, atol=1e-6)


def test_a_compiler_failure_falls_back_to_the_same_maths(monkeypatch):
    def broken(*args):
        raise RuntimeError("no C++ compiler")

    failing = CompiledOrEager(siren_grads.chunk_loss_and_grads, "the SIREN gradients")
    failing._compiled = broken  # as if torch.compile had produced a function that cannot run here
    monkeypatch.setattr(siren_grads, "_CHUNK", failing)
    imgs, seeds = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(3)), torch.arange(3)
    report: dict = {}
    with pytest.warns(RuntimeWarning, match="runs eagerly"):
        params, mse = fit_sirens(imgs, seeds, steps=3, lr=1e-3, compile_mode="on", report=report)
    assert "+compiled" not in report["grad_engine"]
    eager, mse_e = fit_sirens(imgs, seeds, steps=3, lr=1e-3, compile_mode="off")
    torch.testing.assert_close(mse, mse_e)


def test_bad_engine_and_compile_mode_are_refused():
    imgs, seeds = torch.rand(2, 8, 8), torch.arange(2)
    with pytest.raises(ConfigError, match="engine must be one of"):
        fit_sirens(imgs, seeds, steps=1, lr=1e-3, engine="fast")
    with pytest.raises(ConfigError, match="compile_mode"):
        fit_sirens(imgs, seeds, steps=1, lr=1e-3, compile_mode="yes")
    with pytest.raises(ConfigError, match="at least one sine layer"):
        fit_sirens(imgs, seeds, steps=1, lr=1e-3, n_hidden=0)
