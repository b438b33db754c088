"""Zoo building speed: many networks trained at once vs the same networks one at a time.

Run: .venv/bin/python -m pytest tests/bench/test_bench_zoo_build.py --benchmark-only -s
Each test times the batched builder code (pytest-benchmark) and, in the same run, a simple
reference: a plain PyTorch loop (nn.Module + torch.optim, or one SIREN fitted after another) over
the same members, then prints networks/s of both and the speed-up. Threads: WSBENCH_BENCH_THREADS
(default 1; on a shared 2-core machine 2 OpenMP threads make small ops erratic). On CPU the
speed-up is modest (the work is the same FLOPs); the GPU numbers come from scripts/gpu_build_zoos.py.
"""
from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from wsbench.archs import build_arch
from wsbench.zoo_builders import counter_rng as rng
from wsbench.zoo_builders.batched_training import CnnArch, ImageData, MemberHParams, train_batch
from wsbench.zoo_builders.siren_inr import fit_sirens
from bench_timing import bench_threads, best_of  # noqa: F401 (bench_threads: a fixture)

B, STEPS, BS = 32, 8, 32

pytestmark = pytest.mark.usefixtures("bench_threads")


def _data() -> ImageData:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(STEPS * BS, 1, 28, 28, generator=g), torch.randint(0, 10, (STEPS * BS,), generator=g)
    return ImageData(x, y, x[:64], y[:64])


def _hp(n: int) -> MemberHParams:
    return MemberHParams(seed=list(range(n)), optimizer=["sgd", "momentum", "adam", "adam"] * (n // 4),
                         lr=[0.01] * n, weight_decay=[1e-4] * n, dropout=[0.0] * n, init_scale=[1.0] * n,
                         train_fraction=[1.0] * n)


def _reference_loop(data: ImageData, hp: MemberHParams) -> None:
    """The same members, one after another, as anyone would write it: nn.Module + torch.optim."""
    arch = CnnArch()
    n = len(data.y_train)
    for b in range(len(hp)):
        m = build_arch("small_cnn", in_channels=1)
        o = hp.optimizer[b]
        opt = (torch.optim.Adam(m.parameters(), lr=hp.lr[b], weight_decay=hp.weight_decay[b]) if o == "adam" else
               torch.optim.SGD(m.parameters(), lr=hp.lr[b], momentum=0.9 if o == "momentum" else 0.0,
                               weight_decay=hp.weight_decay[b]))
        seeds = torch.tensor([hp.seed[b]])
        for step in range(STEPS):
            idx = rng.randint(seeds, rng.STREAM_BATCH, step, BS, n)[0]
            loss = F.cross_entropy(m(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():  # the evaluation the builder does at its checkpoint
            m.eval()
            m(data.x_test).argmax(1)
            m(data.x_train[:64]).argmax(1)
    assert arch.n_params == 4970


@pytest.mark.parametrize("conv_impl", ["grouped", "unfold"])
def test_bench_batched_cnn_training(benchmark, conv_impl):
    data, hp = _data(), _hp(B)
    run = lambda: train_batch(CnnArch(), hp, "relu", data, epochs=1, checkpoints=[1], batch_size=BS,  # noqa: E731
                              eval_train_images=64, conv_impl=conv_impl)
    res = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    assert all(torch.isfinite(v).all() for v in res.snapshots.values())
    ours = benchmark.stats.stats.min
    t = time.perf_counter()
    _reference_loop(data, hp)
    ref = time.perf_counter() - t
    print(f"\nsmall CNN, {B} members x {STEPS} steps of {BS} images ({conv_impl}): batched {B / ours:.1f} networks/s, "
          f"one at a time {B / ref:.1f} networks/s, speed-up {ref / ours:.2f}x")


def test_bench_batched_siren_fitting(benchmark):
    imgs = torch.rand(B, 28, 28)
    seeds = torch.arange(B)
    params, _ = benchmark.pedantic(lambda: fit_sirens(imgs, seeds, steps=20, lr=1e-3), rounds=3, iterations=1,
                                   warmup_rounds=1)
    assert torch.isfinite(params["layers.1.weight"]).all()
    ours = benchmark.stats.stats.min
    t = time.perf_counter()
    for b in range(B):  # one SIREN after another, the same code path with B = 1
        fit_sirens(imgs[b:b + 1], seeds[b:b + 1], steps=20, lr=1e-3)
    ref = time.perf_counter() - t
    print(f"\nSIREN, {B} images x 20 steps: batched {B / ours:.1f} networks/s, one at a time {B / ref:.1f} networks/s, "
          f"speed-up {ref / ours:.2f}x")


_SHARD_FIT = """
import resource, sys, time, torch
from wsbench.allocator import tune_allocator
if sys.argv[1] == "tuned":
    tune_allocator()
from wsbench.zoo_builders.siren_inr import fit_sirens
torch.set_num_threads(1)
imgs, seeds = torch.rand(400, 28, 28), torch.arange(400)
fit_sirens(imgs, seeds, steps=2, lr=1e-3)  # warm-up
t = time.perf_counter()
fit_sirens(imgs, seeds, steps=30, lr=1e-3, stop_psnr=40)
r = resource.getrusage(resource.RUSAGE_SELF)
print(time.perf_counter() - t, r.ru_stime)
"""


def test_bench_siren_shard_with_and_without_malloc_tuning(benchmark):
    """A shard-sized SIREN fit (400 networks: 40 MB temporaries) with glibc's default mmap threshold
    and with wsbench.allocator's, each in a fresh process (the setting is process-wide)."""
    import os
    import subprocess
    import sys

    def fit(mode: str) -> tuple[float, float]:
        env = dict(os.environ, WSBENCH_MALLOC_TUNING="1")
        out = subprocess.run([sys.executable, "-c", _SHARD_FIT, mode], capture_output=True, text=True, env=env,
                             check=True, timeout=600).stdout.split()
        return float(out[0]), float(out[1])

    tuned = benchmark.pedantic(lambda: fit("tuned"), rounds=1, iterations=1)
    plain = fit("plain")
    print(f"\nSIREN shard (400 x 30 steps, 1 thread): default malloc {plain[0]:.1f} s (system {plain[1]:.1f} s), "
          f"tuned {tuned[0]:.1f} s (system {tuned[1]:.1f} s): {plain[0] / tuned[0]:.2f}x")
    assert tuned[0] > 0



def test_bench_pooling_gradient_in_the_dropout_order(benchmark):
    """The last activation of a channels-last step (cnn_families_mnist d2w8: 32 images x 256 members x 8 channels,
    7x7) is average-pooled in its memory order, so its gradient reaches the fused dropout in that order; the
    NCHW-order mean's gradient had to be copied there. Both timed in the same run, each with that copy."""
    h = torch.randn(32, 256 * 8, 7, 7).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    up = torch.randn(32, 256 * 8)

    def pooled_gradient(in_memory_order: bool) -> torch.Tensor:
        pooled = h.permute(0, 2, 3, 1).mean(dim=(1, 2)) if in_memory_order else h.mean(dim=(2, 3))
        (grad,) = torch.autograd.grad(pooled, h, up)
        return grad.permute(0, 2, 3, 1).contiguous()  # what the fused dropout reads: a copy unless already in order

    ours = benchmark.pedantic(lambda: pooled_gradient(True), rounds=10, iterations=1, warmup_rounds=1)
    assert torch.equal(ours, pooled_gradient(False))
    before = best_of(lambda: pooled_gradient(False), 10)
    print(f"\npooling gradient in the dropout's order: {benchmark.stats.stats.min * 1e3:.2f} ms, the NCHW-order mean's "
          f"{before * 1e3:.2f} ms ({benchmark.stats.stats.min / before:.2f}x the time)")
