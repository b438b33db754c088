"""The fused CPU set attention (wsbench/methods/equivariant/set_attention.c through cpu_kernels) gives
the plain ops' values and gradients, NaN where they give NaN, whatever the thread count; and the C
kernel build (wsbench/native_build.py) falls back cleanly and leaves no half-written library."""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch

from wsbench import native_build
from wsbench.methods.equivariant import blocks, cpu_kernels
from wsbench.methods.equivariant.blocks import heads_attention


def _fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """The kernel on separate q, k, v (packed here by one copy; the set block packs them in its product)."""
    return cpu_kernels.fused_set_attention(torch.cat([q, k, v], -1), heads, scale)

pytestmark = pytest.mark.skipif(cpu_kernels._fused_kernel() is None, reason="no C compiler: the plain path runs")


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    B, n, F = q.shape
    split = [t.view(B, n, heads, F // heads).transpose(1, 2) for t in (q, k, v)]
    out = torch.nn.functional.scaled_dot_product_attention(*split, scale=scale)
    return out.transpose(1, 2).reshape(B, n, F)


def _inputs(B: int, n: int, F: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(2 * torch.randn(B, n, F, generator=g, dtype=torch.float64) for _ in range(4))


def _values_and_grads(fn, q, k, v, w, heads: int, scale: float) -> list[torch.Tensor]:  # noqa: ANN001
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out = fn(*leaves, heads, scale)
    return [out.detach(), *torch.autograd.grad((out * w).sum(), leaves)]


@pytest.mark.parametrize("B,n,heads,d", [(3, 32, 8, 4), (2, 7, 2, 4), (2, 7, 2, 3), (5, 1, 1, 1), (4, 33, 1, 8), (1, 17, 3, 5),
                                         (2, 64, 4, 8)])
def test_fused_attention_is_as_close_to_float64_as_torchs_float32(B, n, heads, d):
    """Values and the three gradients against float64 SDPA: at most twice the error of torch's own
    float32 SDPA on the same inputs, plus 1e-6 of the largest value (float32 sums in another order), on sets whose size is and is not a multiple of the
    kernel's 8 lanes."""
    q, k, v, w = _inputs(B, n, heads * d, seed=n + d)
    scale = 0.7
    exact = _values_and_grads(_reference, q, k, v, w, heads, scale)
    q32, k32, v32, w32 = (t.float() for t in (q, k, v, w))
    assert cpu_kernels.fused_kernel_applies(q32, d)
    ours = _values_and_grads(_fused, q32, k32, v32, w32, heads, scale)
    torch_f32 = _values_and_grads(_reference, q32, k32, v32, w32, heads, scale)
    assert ours[0].dtype == torch.float32 and ours[0].shape == exact[0].shape
    for got, plain, want in zip(ours, torch_f32, exact):
        bound = 2 * (plain.double() - want).abs().max() + 1e-6 * want.abs().max()
        assert (got.double() - want).abs().max() <= bound


@pytest.mark.parametrize("n,heads,d", [(32, 8, 4), (9, 2, 8)])
def test_packed_attention_with_the_residual_equals_q_plus_sdpa(n, heads, d):
    """The set block's path: one packed [q | k | v] tensor in (strided reads), q + attention out, one packed
    gradient back; against float64 q + SDPA as in the test above."""
    q, k, v, w = _inputs(3, n, heads * d, seed=n)

    def reference(q, k, v, heads, scale):  # noqa: ANN001, ANN202
        return q + _reference(q, k, v, heads, scale)

    def packed(q, k, v, heads, scale):  # noqa: ANN001, ANN202
        return cpu_kernels.fused_set_attention(torch.cat([q, k, v], -1), heads, scale, residual=True)

    exact = _values_and_grads(reference, q, k, v, w, heads, 0.5)
    q32, k32, v32, w32 = (t.float() for t in (q, k, v, w))
    ours = _values_and_grads(packed, q32, k32, v32, w32, heads, 0.5)
    torch_f32 = _values_and_grads(reference, q32, k32, v32, w32, heads, 0.5)
    for got, plain, want in zip(ours, torch_f32, exact):
        bound = 2 * (plain.double() - want).abs().max() + 1e-6 * want.abs().max()
        assert (got.double() - want).abs().max() <= bound


def test_fused_attention_propagates_nan_as_the_plain_ops_do():
    q, k, v, _ = (t.float() for t in _inputs(3, 12, 8, seed=1))
    q[0, 3, 1] = float("nan")  # one query of network 0, head 0: that row only
    k[1, 5, 6] = float("nan")  # one key of network 1, head 1: every query of that head
    v[2, 2, 0] = float("inf")  # a value: inf or NaN where it is weighted
    got = _fused(q, k, v, 2, 0.5)
    ref = _reference(q, k, v, 2, 0.5)
    assert torch.equal(got.isnan(), ref.isnan()) and got.isnan().any()
    assert torch.equal(got.isinf(), ref.isinf())
    finite = ~ref.isnan() & ~ref.isinf()
    torch.testing.assert_close(got[finite], ref[finite], rtol=1e-5, atol=1e-5)


def test_fused_attention_is_the_same_on_one_and_two_threads():
    q, k, v, g = (t.float() for t in _inputs(16, 32, 32, seed=2))
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
            out = _fused(*leaves, 8, 0.5)
            results.append((out, *torch.autograd.grad((out * g).sum(), leaves)))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_kernel_does_not_apply_to_float64_or_wide_heads_where_the_plain_head_path_matches_sdpa():
    q, k, v, _ = _inputs(2, 10, 64, seed=3)  # float64
    assert not cpu_kernels.fused_kernel_applies(q, 8)
    assert not cpu_kernels.fused_kernel_applies(q.float(), 32)  # wide heads: batched products
    for x, heads in ((q, 8), (q.float(), 2)):
        torch.testing.assert_close(heads_attention(x, k.to(x.dtype), v.to(x.dtype), heads, 0.3),
                                   _reference(x, k.to(x.dtype), v.to(x.dtype), heads, 0.3))


def test_dwsnet_step_is_the_same_with_and_without_the_kernel(monkeypatch):
    """A small DWSNet (set layers with heads of 4 channels), loss and every parameter gradient."""
    import wsbench.builtins  # noqa: F401
    from wsbench.archs import spec_for_arch
    from wsbench.registry import METHODS
    from wsbench.weights import WeightSpace

    spec = spec_for_arch("siren")
    g = torch.Generator().manual_seed(0)
    ws = WeightSpace(spec, {p.key: 0.1 * torch.randn(4, *p.shape, generator=g) for p in spec.params})
    torch.manual_seed(0)
    model = METHODS.get("dwsnet")(spec, 10, hidden_dim=16, n_hidden=2, num_heads=4)
    used = []
    real = blocks.fused_kernel_applies

    def spy(q, d):  # noqa: ANN001, ANN202
        used.append(real(q, d))
        return used[-1]

    results = []
    for fused in (True, False):
        monkeypatch.setattr(blocks, "fused_kernel_applies", spy if fused else (lambda q, d: False))
        m = copy.deepcopy(model)
        loss = m(ws).logsumexp(-1).sum()
        loss.backward()
        results.append((loss.detach(), [p.grad for p in m.parameters()]))
    assert True in used and False in used  # heads of 4 channels fused, the last layer's single head of 16 not
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _fresh_load(source: Path) -> object:
    native_build.load_kernel.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lib = native_build.load_kernel(source)
        return lib, [str(w.message) for w in caught]
    finally:
        native_build.load_kernel.cache_clear()


def test_kernel_build_is_cached_and_bad_builds_fall_back_without_leftovers(tmp_path, monkeypatch):
    monkeypatch.setenv("WSBENCH_CACHE_DIR", str(tmp_path / "cache"))
    good = tmp_path / "ok.c"
    good.write_text("int wsb_answer(void) { return 42; }\n")
    lib, caught = _fresh_load(good)
    assert lib is not None and lib.wsb_answer() == 42 and not caught
    built = list((tmp_path / "cache" / "native").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"
    stamp = built[0].stat().st_mtime_ns
    lib, _ = _fresh_load(good)  # same source, flags, compiler, CPU: the cached library, not rebuilt
    assert lib.wsb_answer() == 42 and built[0].stat().st_mtime_ns == stamp

    bad = tmp_path / "bad.c"
    bad.write_text("int wsb_broken(void) { return }\n")
    lib, caught = _fresh_load(bad)
    assert lib is None and len(caught) == 1 and "bad.c" in caught[0] and "plain torch path" in caught[0]
    assert sorted(p.name for p in (tmp_path / "cache" / "native").iterdir()) == [built[0].name]  # nothing half-written

    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    lib, caught = _fresh_load(tmp_path / "other.c")
    assert lib is None and "no C compiler" in caught[0]
    monkeypatch.delenv("CC")
    monkeypatch.setenv("WSBENCH_NATIVE", "0")
    lib, caught = _fresh_load(good)
    assert lib is None and not caught  # switched off on purpose: no warning
