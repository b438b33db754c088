"""Encoder speed: forward and training throughput (networks/s) of every registered encoder at its
default size, on SIREN INRs (2-32-32-1) and the small CNN (4,970 parameters), each against the
simplest encoder (one Linear on the flattened weights) timed in the same run; plus two of our
own speed-ups against their plain references (same outputs asserted).

Run: .venv/bin/python -m pytest tests/bench/test_bench_encoders.py --benchmark-only -s
"""
from __future__ import annotations

import itertools
import math
import time

import pytest
import torch

import wsbench.methods.dwsnet  # noqa: F401
import wsbench.methods.graph  # noqa: F401
import wsbench.methods.mlp  # noqa: F401
import wsbench.methods.nfn  # noqa: F401
import wsbench.methods.sne  # noqa: F401
import wsbench.methods.stat_features  # noqa: F401
from wsbench.archs import build_arch
from wsbench.methods.equivariant.blocks import PairBlock
from wsbench.methods.equivariant.layer import DWSLayer
from wsbench.methods.equivariant.layout import features_from_ws, layouts_for_spec
from wsbench.metrics import kendall_tau
from wsbench.registry import METHODS
from wsbench.archs import spec_for_arch
from wsbench.weights import WeightSpace
from bench_timing import best_of

ENCODERS = [n for n in METHODS.names() if METHODS.get(n).capability == "encoder"]
ARCHS = {"siren": ("siren", {}), "small_cnn": ("small_cnn", {})}
BATCH = 64


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # comparable numbers on a shared 2-core machine
    yield
    torch.set_num_threads(n)


def _zoo(key: str, n: int = BATCH) -> WeightSpace:
    arch, kw = ARCHS[key]
    torch.manual_seed(0)
    return WeightSpace.from_state_dicts(spec_for_arch(arch, **kw), [build_arch(arch, **kw).state_dict() for _ in range(n)])



def _report(name: str, ours: float, reference: float, n: int = BATCH) -> None:
    print(f"\n{name}: ours {ours * 1e3:.1f} ms ({n / ours:,.0f} networks/s), reference {reference * 1e3:.2f} ms "
          f"({n / reference:,.0f} networks/s); ours takes {ours / reference:.2f}x the reference time")


def _flat_linear(ws: WeightSpace) -> torch.nn.Module:
    return torch.nn.Linear(ws.flat().shape[1], 10)


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("name", ENCODERS)
def test_bench_forward(benchmark, name, arch):
    ws = _zoo(arch)
    cls = METHODS.get(name)
    if not cls.supports(ws.spec)[0]:
        pytest.skip(f"{name} cannot read {arch}")
    enc = cls(ws.spec, 10).eval()
    ref = _flat_linear(ws)
    with torch.no_grad():
        out = benchmark(enc, ws)
        ref_s = best_of(lambda: ref(ws.flat()))
    assert out.shape == (BATCH, 10) and torch.isfinite(out).all()
    _report(f"{name} forward, {BATCH} {arch} networks", benchmark.stats.stats.min, ref_s)


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("name", ENCODERS)
def test_bench_training_step(benchmark, name, arch):
    ws = _zoo(arch)
    cls = METHODS.get(name)
    if not cls.supports(ws.spec)[0]:
        pytest.skip(f"{name} cannot read {arch}")
    enc = cls(ws.spec, 1).train()
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-4)
    y = torch.randn(BATCH)
    ref = _flat_linear(ws)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-4)

    def step(model, optim):
        loss = torch.nn.functional.mse_loss(model(ws)[:, 0], y)
        optim.zero_grad()
        loss.backward()
        optim.step()
        return loss.detach()

    loss = benchmark(step, enc, opt)
    ref_s = best_of(lambda: step(lambda w: ref(w.flat()), ref_opt))
    assert torch.isfinite(loss)
    _report(f"{name} training step (fwd+bwd+AdamW), {BATCH} {arch} networks", benchmark.stats.stats.min, ref_s)


def _per_block_reference(layer: DWSLayer) -> list[tuple[int, int, PairBlock]]:
    """The pooled blocks as one PairBlock each (one Linear per block), weights copied from `layer`."""
    pooled, blocks = layer.pooled, []
    for j, lin, bias in zip(pooled.dsts, pooled.linears, pooled.biases):
        start = 0
        for k, i in enumerate(pooled.sources[j]):
            src, dst, f = layer.layouts[i], layer.layouts[j], pooled.f_in[i]
            fixed = math.prod(a.size for a in src.axes if a.group is None)
            block = PairBlock(src.axes, dst.axes, f // fixed, layer.c_out, reduction=pooled.reduction)
            with torch.no_grad():
                block.terms[0].weight.copy_(lin.weight[:, start:start + f])
                block.terms[0].bias.copy_(bias[k])
            start += f
            blocks.append((i, j, block))
    return blocks


def test_bench_dws_pooled_blocks_vs_one_linear_per_block(benchmark):
    """DWS layer with the no-shared-group blocks batched (PooledBlocks) vs one module per block."""
    ws = _zoo("siren")
    layouts = layouts_for_spec(ws.spec)
    torch.manual_seed(0)
    layer = DWSLayer(layouts, 32, 32).eval()
    xs = [torch.randn(BATCH, *(a.size for a in t.axes), 32) for t in layouts]
    naive = _per_block_reference(layer)

    def reference():
        outs = [None] * len(layouts)
        for i, j, fam, key in layer.routes:
            h = layer.blocks[fam][key](xs[i])
            outs[j] = h if outs[j] is None else outs[j] + h
        for i, j, block in naive:
            h = block(xs[i])
            outs[j] = h if outs[j] is None else outs[j] + h
        return [o.expand(BATCH, *(a.size for a in t.axes), 32) / len(layouts) for o, t in zip(outs, layouts)]

    with torch.no_grad():
        ours = benchmark(layer, xs)
        ref = reference()
        ref_s = best_of(reference)
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-5)
    print(f"\n(pooled pairs: {len(naive)}, shared-group pairs: {len(layer.routes)})")
    _report("DWS layer 32->32 on SIREN features", benchmark.stats.stats.min, ref_s)


def test_bench_kendall_tau_vs_python_pairs(benchmark):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(1500, generator=g).tolist(), torch.randint(0, 50, (1500,), generator=g).tolist()

    def python_pairs():
        s = tx = ty = 0
        for i, j in itertools.combinations(range(len(x)), 2):
            dx, dy = (x[i] > x[j]) - (x[i] < x[j]), (y[i] > y[j]) - (y[i] < y[j])
            s, tx, ty = s + dx * dy, tx + (dx == 0), ty + (dy == 0)
        n0 = len(x) * (len(x) - 1) / 2
        return s / ((n0 - tx) * (n0 - ty)) ** 0.5

    ours = benchmark(kendall_tau, x, y)
    t = time.perf_counter()
    ref = python_pairs()
    ref_s = time.perf_counter() - t
    assert ours == pytest.approx(ref)
    _report("Kendall tau-b, 1,500 values", benchmark.stats.stats.min, ref_s, n=1)


def test_bench_set_attention_vs_sdpa(benchmark):
    """The DWSNet SAB attention (8 heads of 4 channels over 32 neurons, 64 networks), forward and backward:
    ours (cpu_kernels.set_attention: every product oriented by hand) against PyTorch's
    scaled_dot_product_attention and against softmax(q k^T) v as three plain autograd ops."""
    from wsbench.methods.equivariant.blocks import attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(BATCH, 32, 8, 4, generator=g).transpose(1, 2).requires_grad_(True) for _ in range(3))
    grad = torch.randn(BATCH, 8, 32, 4, generator=g)
    scale = 32 ** -0.5

    def ours():
        attention(q, k, v, scale).backward(grad)

    def sdpa():
        torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale).backward(grad)

    def plain():
        torch.matmul(torch.softmax(torch.matmul(q * scale, k.transpose(-1, -2)), dim=-1), v).backward(grad)

    assert torch.allclose(attention(q, k, v, scale), torch.nn.functional.scaled_dot_product_attention(
        q, k, v, scale=scale), atol=1e-5)
    benchmark(ours)
    _report("SAB attention forward+backward vs SDPA", benchmark.stats.stats.min, best_of(sdpa, repeats=20))
    _report("SAB attention forward+backward vs plain ops", benchmark.stats.stats.min, best_of(plain, repeats=20))


def test_bench_max_pool_vs_torch_max(benchmark):
    """Max pooling of a DWSNet hidden weight tensor ([64, 32, 32, 32]) over one neuron axis, forward and
    backward: cpu_kernels.max_first (amax; first index found in the backward pass) against torch.max."""
    from wsbench.methods.equivariant.cpu_kernels import max_first

    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(BATCH, 32, 32, 32, generator=g)).requires_grad_(True)
    grad = torch.randn(BATCH, 32, 32, generator=g)

    def ours():
        max_first(x, 1).backward(grad)

    def reference():
        x.max(dim=1).values.backward(grad)

    assert torch.equal(max_first(x, 1), x.max(dim=1).values)
    benchmark(ours)
    _report("max pooling over one axis, forward+backward", benchmark.stats.stats.min, best_of(reference, repeats=20))


def test_bench_dwsnet_step_with_and_without_sdpa(benchmark, monkeypatch):
    """The DWSNet paper-preset training step (batch 64 SIRENs) with our CPU attention, against the same
    step with PyTorch's scaled_dot_product_attention in the set layers."""
    from wsbench.methods.equivariant import blocks
    from wsbench.runner import preset_method_config

    ws = _zoo("siren")
    y = torch.randint(0, 10, (BATCH,), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = METHODS.get("dwsnet")(ws.spec, 10, **preset_method_config("dwsnet", "paper")).train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)

    def step():
        loss = torch.nn.functional.cross_entropy(model(ws), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
    monkeypatch.setattr(blocks, "fused_kernel_applies", lambda q, d: False)
    monkeypatch.setattr(blocks, "attention", lambda q, k, v, scale: torch.nn.functional.scaled_dot_product_attention(
        q, k, v, scale=scale))
    step()
    _report("DWSNet paper training step", benchmark.stats.stats.min, best_of(step, repeats=5))


@pytest.mark.parametrize("batch", [BATCH, 2])
def test_bench_dwsnet_step_set_blocks_together_vs_one_at_a_time(benchmark, batch):
    """The DWSNet paper-preset training step with each layer's set blocks of equal sizes run together
    (blocks.batched_set_blocks; the default) against the same step with every set block on its own. At
    batch 2 the step is the part of its cost that does not grow with the batch (dispatch, autograd)."""
    from wsbench.flat_adamw import adamw
    from wsbench.runner import preset_method_config

    ws = _zoo("siren", batch)
    y = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = METHODS.get("dwsnet")(ws.spec, 10, **preset_method_config("dwsnet", "paper")).train()
    layers = [m for m in model.modules() if isinstance(m, DWSLayer)]
    assert all(layer.set_classes for layer in layers)
    opt = adamw(list(model.parameters()), lr=1e-3)

    def step(together: bool) -> None:
        for layer in layers:
            layer.batch_set_blocks = together
        loss = torch.nn.functional.cross_entropy(model(ws), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(True)
    benchmark.pedantic(step, args=(True,), rounds=5, iterations=1, warmup_rounds=1)
    step(False)
    _report(f"DWSNet paper training step, batch {batch}: set blocks together vs one at a time",
            benchmark.stats.stats.min, best_of(lambda: step(False), repeats=5), batch)


def test_bench_fused_head_attention_vs_batched_products(benchmark):
    """The SAB attention as the set layer calls it ([64, 32, 8 x 4] float32: 64 networks, sets of 32 neurons,
    8 heads of 4 channels), forward and backward: the fused C kernel on the packed [q | k | v] the set block's
    product gives (cpu_kernels.fused_set_attention) against the batched-product path it replaces
    (blocks.heads_attention: cpu_kernels.set_attention on the heads' transposed views)."""
    from wsbench.methods.equivariant.blocks import heads_attention
    from wsbench.methods.equivariant.cpu_kernels import fused_kernel_applies, fused_set_attention

    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(BATCH, 32, 96, generator=g).requires_grad_(True)
    q, k, v = (t.detach().clone().requires_grad_(True) for t in qkv.split(32, dim=-1))  # the old block's 3 products
    grad = torch.randn(BATCH, 32, 32, generator=g)
    scale = 32 ** -0.5
    if not fused_kernel_applies(qkv, 4):
        pytest.skip("the C kernel could not be built here")

    def fused():
        fused_set_attention(qkv, 8, scale).backward(grad)

    def batched_products():
        heads_attention(q, k, v, 8, scale).backward(grad)

    benchmark(fused)
    _report("SAB attention (8 heads of 4) forward+backward, fused kernel vs batched products",
            benchmark.stats.stats.min, best_of(batched_products, repeats=20))


def test_bench_flat_adamw_vs_per_tensor_fused_adamw(benchmark):
    """One optimiser step (zero_grad, gradients in place, step) over the DWSNet paper preset's 790
    parameter tensors: FlatAdamW (one fused update of one flat tensor; the trainer's) against torch's
    fused AdamW over the tensors one by one."""
    from wsbench.flat_adamw import FlatAdamW
    from wsbench.runner import preset_method_config

    spec = spec_for_arch("siren")
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(METHODS.get("dwsnet")(spec, 10, **preset_method_config("dwsnet", "paper")))
    grads = [torch.randn_like(p) for p in models[0].parameters()]
    flat = FlatAdamW(list(models[0].parameters()), lr=1e-3, weight_decay=0.01)
    per_tensor = torch.optim.AdamW(models[1].parameters(), lr=1e-3, weight_decay=0.01, fused=True)

    def step(model, opt):
        opt.zero_grad(set_to_none=True)
        for p, g in zip(model.parameters(), grads):
            p.grad = g
        opt.step()

    step(models[0], flat)
    step(models[1], per_tensor)
    for a, b in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert len(grads) > 500 and flat.flattened
    benchmark(step, models[0], flat)
    ours, reference = benchmark.stats.stats.min, best_of(lambda: step(models[1], per_tensor), repeats=20)
    print(f"\nAdamW step over the DWSNet paper preset's {len(grads)} parameter tensors: flat {ours * 1e3:.2f} ms, "
          f"per tensor {reference * 1e3:.2f} ms; flat takes {ours / reference:.2f}x the time")
