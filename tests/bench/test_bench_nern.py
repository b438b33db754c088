"""NeRN speed on CPU, each against a simple reference timed in the same run and the official code's
figures on this 2-core machine (ResNet20 h180: 0.36 it/s with KD+FMD at 256 images / 4,096 kernels;
crossfilter 4.4 s / 13.9 s for ResNet20 / ResNet56; encodings 5.1 s / 12.6 s; set-up 9.7 s / 27.2 s).

Run: .venv/bin/python -m pytest tests/bench/test_bench_nern.py --benchmark-only -s
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.func import functional_call

from wsbench.methods.base import ReconstructionTarget, RunContext
from wsbench.methods.nern import NeRN
from wsbench.methods.nern.embeddings import kernel_coordinates, positional_encoding
from wsbench.methods.nern.layout import ConvLayout
from wsbench.methods.nern.losses import fmd_loss_reference, kd_loss
from wsbench.methods.nern.optim import build_optimizer
from wsbench.methods.nern.orderings import compute_positions
from bench_timing import best_of

DATA = Path(os.environ.get("WSBENCH_DATA_DIR", "../shared/data"))
OFFICIAL = {"step_it_s": 0.36, "cross20": 4.4, "cross56": 13.9, "enc20": 5.1, "enc56": 12.6,
            "setup20": 9.7, "setup56": 27.2}


def _target(depth: int) -> ReconstructionTarget:
    sd = load_file(str(DATA / "pretrained" / f"resnet{depth}.safetensors"))
    return ReconstructionTarget(f"r{depth}", "resnet_cifar", {"depth": depth}, sd, "cifar10")


def report(name: str, ours: float, reference: float, official: float | None = None, unit: str = "s") -> None:
    msg = f"\n{name}: ours {ours:.3f} {unit}, simple reference {reference:.3f} {unit} ({reference / ours:.1f}x)"
    if official is not None:
        msg += f", official figure {official:.2f} {unit} ({official / ours:.1f}x)"
    print(msg)


def numpy_greedy(items: np.ndarray) -> list[int]:
    """The official per-layer walk: cosine row of the current kernel on the fly, argmax over unvisited."""
    x = items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
    visited = np.zeros(len(x), dtype=bool)
    cur, path = 0, [0]
    visited[0] = True
    for _ in range(len(x) - 1):
        sim = x @ x[cur]
        sim[visited] = -np.inf
        cur = int(np.argmax(sim))
        visited[cur] = True
        path.append(cur)
    return path


@pytest.mark.parametrize("depth", [20, 56])
def test_bench_crossfilter(benchmark, depth):
    t = _target(depth)
    layout = ConvLayout(t.build_model())
    ws = [t.state_dict[k] for k in layout.keys]
    ours = benchmark.pedantic(lambda: compute_positions(ws, "crossfilter"), rounds=3, iterations=1)
    ours = benchmark.stats.stats.min
    if depth == 20:
        ref = best_of(lambda: [numpy_greedy(w.reshape(w.shape[0] * w.shape[1], -1).numpy()) for w in ws], 1)
    else:  # the quadratic reference on ResNet56 takes long: time ResNet20's and scale by sum n^2
        layout20 = ConvLayout(_target(20).build_model())
        ws20 = [_target(20).state_dict[k] for k in layout20.keys]
        r20 = best_of(lambda: [numpy_greedy(w.reshape(w.shape[0] * w.shape[1], -1).numpy()) for w in ws20], 1)
        ref = r20 * sum((w.shape[0] * w.shape[1]) ** 2 for w in ws) / sum((w.shape[0] * w.shape[1]) ** 2 for w in ws20)
    report(f"crossfilter ordering ResNet{depth}", ours, ref, OFFICIAL[f"cross{depth}"])


@pytest.mark.parametrize("depth", [20, 56])
def test_bench_encodings(benchmark, depth):
    layout = ConvLayout(_target(depth).build_model())
    pos = [torch.arange(l.n_kernels) for l in layout.layers]

    def ours_fn():
        return positional_encoding(kernel_coordinates(layout, pos), 40, 0.76)

    benchmark.pedantic(ours_fn, rounds=3, iterations=1)
    ours = benchmark.stats.stats.min
    # reference: one small tensor computation per kernel (as the official code), timed on 2,000 kernels
    coords = kernel_coordinates(layout, pos)[:2000].tolist()
    freqs = 0.76 ** torch.arange(40)

    def per_kernel():
        for c in coords:
            x = torch.tensor(c).unsqueeze(-1) * freqs * math.pi
            torch.dstack([torch.sin(x), torch.cos(x)]).flatten()

    ref = best_of(per_kernel, 1) * layout.n_kernels / 2000
    report(f"positional encodings ResNet{depth} ({layout.n_kernels} kernels)", ours, ref, OFFICIAL[f"enc{depth}"])


@pytest.mark.parametrize("depth", [20, 56])
def test_bench_setup(benchmark, depth):
    t = _target(depth)
    cfg = dict(hidden=180 if depth == 20 else 320, ordering="crossfilter", selection="last", iterations=10)
    x = torch.zeros(256, 3, 32, 32)

    def setup():
        return NeRN(**cfg).trainer(t, RunContext(progress=False), train_images=x).timings

    benchmark.pedantic(setup, rounds=2, iterations=1)
    tm = setup()
    print(f"\nset-up ResNet{depth}: {benchmark.stats.stats.min:.3f} s (ordering {tm.ordering:.3f}, encodings "
          f"{tm.encodings:.3f}, rest {tm.setup - tm.ordering - tm.encodings:.3f}); official figure "
          f"{OFFICIAL[f'setup{depth}']} s ({OFFICIAL[f'setup{depth}'] / benchmark.stats.stats.min:.1f}x)")


def _reference_step(tr, model, opt, it: int) -> None:
    """The straightforward step: all kernels predicted with autograd, gradient masked to the sampled
    ones, the unfolded NCHW model with BatchNorm, unfused FMD."""
    cfg = tr.cfg
    idx = tr.sampler.sample(tr.rnd, it)
    x = tr._inputs(it).contiguous()
    pred = tr.predictor(tr.emb)
    mask = torch.zeros(pred.shape[0], 1, dtype=torch.bool)
    mask[idx] = True
    flat = torch.where(mask, pred, pred.detach()).reshape(-1)
    params = {**dict(model.named_parameters()), **dict(model.named_buffers()), **tr.layout.split(flat)}
    with torch.no_grad():
        t_logits, t_maps = model(x, return_features=True)
    s_logits, s_maps = functional_call(model, params, (x,), {"return_features": True})
    loss = (flat - tr.target_flat).square().mean().sqrt() + cfg["kd_weight"] * kd_loss(s_logits, t_logits) \
        + cfg["fmd_weight"] * fmd_loss_reference(s_maps, t_maps)
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_bench_training_step(benchmark):
    """ResNet20, h=180, KD + FMD, 256 images, 4,096 kernels."""
    t = _target(20)
    x = torch.randn(1024, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tr = NeRN(hidden=180, ordering="none", selection="last", iterations=1000).trainer(
        t, RunContext(progress=False), train_images=x)
    model = t.build_model()
    for p in model.parameters():
        p.requires_grad_(False)
    ref_pred = tr.predictor
    opt = build_optimizer(ref_pred.parameters(), "ranger", 5e-3, (0.5, 0.999), 1e-5, 1e-3, 6, 0.5)
    counter = iter(range(10**6))
    for _ in range(2):
        tr.step(next(counter))
    benchmark.pedantic(lambda: tr.step(next(counter)), rounds=5, iterations=1)
    ours = benchmark.stats.stats.median
    _reference_step(tr, model, opt, 0)
    ref = min(best_of(lambda: _reference_step(tr, model, opt, next(counter)), 1) for _ in range(3))
    print(f"\ntraining step ResNet20 h180 KD+FMD 256/4096: ours {1 / ours:.2f} it/s ({ours:.3f} s), simple "
          f"reference {1 / ref:.2f} it/s ({ref / ours:.1f}x), official figure {OFFICIAL['step_it_s']} it/s "
          f"({1 / ours / OFFICIAL['step_it_s']:.1f}x); threads {torch.get_num_threads()}")


def test_bench_warmup_step(benchmark):
    """ResNet20, h=180, a step without KD/FMD (reconstruction-only runs, and the warm-up of the official
    ResNet56 config): only the sampled kernels predicted (RMSE estimated from them) vs every kernel
    predicted at every step (the official form's cost)."""
    t = _target(20)
    cfg = dict(hidden=180, ordering="none", selection="last", iterations=1000, kd_weight=0.0, fmd_weight=0.0)
    images = torch.zeros(8, 3, 32, 32)
    tr = NeRN(**cfg).trainer(t, RunContext(progress=False), train_images=images)
    full = NeRN(**cfg, rmse_scale="refresh", rmse_refresh_every=1).trainer(t, RunContext(progress=False),
                                                                          train_images=images)  # full form
    counter = iter(range(10**6))
    for _ in range(2):
        tr.step(next(counter))
        full.step(next(counter))
    benchmark.pedantic(lambda: tr.step(next(counter)), rounds=10, iterations=1)
    ours = benchmark.stats.stats.median
    ref = min(best_of(lambda: full.step(next(counter)), 1) for _ in range(5))
    print(f"\nwarm-up step ResNet20 h180 (4,096 kernels): ours {ours * 1e3:.1f} ms, every kernel predicted "
          f"{ref * 1e3:.1f} ms ({ref / ours:.1f}x)")
