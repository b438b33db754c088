"""sin and cos from one range reduction (the SIREN fit's compiled trig) against float64 torch.sin / torch.cos."""
from __future__ import annotations

import math

import pytest
import torch

from wsbench.zoo_builders.sincos import sincos


def _max_errors(x: torch.Tensor, fn=sincos) -> tuple[float, float]:
    sin, cos = fn(x)
    x64 = x.double()
    return ((sin.double() - torch.sin(x64)).abs().max().item(), (cos.double() - torch.cos(x64)).abs().max().item())


def _test_points() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    quarter_turns = torch.arange(-400, 401, dtype=torch.float64) * (math.pi / 4)  # quadrant edges and midpoints
    near_edges = torch.cat([quarter_turns + d for d in (-1e-4, 0.0, 1e-4)]).float()
    return torch.cat([near_edges, torch.randn(20000, generator=g) * 30, torch.rand(20000, generator=g) * 2000 - 1000,
                      torch.tensor([0.0, -0.0, 1e-30, -1e-30])])


def test_within_float32_rounding_of_the_exact_values():
    sin_err, cos_err = _max_errors(_test_points())
    torch_sin_err, torch_cos_err = _max_errors(_test_points(), lambda x: (torch.sin(x), torch.cos(x)))
    assert sin_err < 2.5e-7 and cos_err < 2.5e-7  # torch's own float32 sin/cos are ~1.2e-7 off here
    assert max(torch_sin_err, torch_cos_err) < 2.5e-7


def test_large_arguments_lose_digits_gracefully():
    x = torch.linspace(-1e5, 1e5, 200001)
    sin_err, cos_err = _max_errors(x)
    assert sin_err < 2e-6 and cos_err < 2e-6  # the float32 argument itself is only exact to ~4e-3 there


def test_non_finite_inputs_give_nan_as_torch_does():
    sin, cos = sincos(torch.tensor([float("nan"), float("inf"), -float("inf")]))
    assert torch.isnan(sin).all() and torch.isnan(cos).all()


def test_other_dtypes_use_torch_trig():
    x = torch.linspace(-50, 50, 1001, dtype=torch.float64)
    sin, cos = sincos(x)
    assert torch.equal(sin, torch.sin(x)) and torch.equal(cos, torch.cos(x))


def test_compiled_equals_eager_to_rounding():
    x = _test_points()
    try:
        compiled = torch.compile(sincos, dynamic=False)
        sin_c, cos_c = compiled(x)
    except Exception as error:  # noqa: BLE001
        pytest.fail(f"torch.compile of sincos failed on this CPU: {type(error).__name__}: {error}")
    sin_e, cos_e = sincos(x)
    torch.testing.assert_close(sin_c, sin_e, rtol=0, atol=2e-7)  # the compiler may contract a*b+c into fma
    torch.testing.assert_close(cos_c, cos_e, rtol=0, atol=2e-7)
