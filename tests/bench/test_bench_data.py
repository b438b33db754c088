"""Data-layer speed, each against a simple reference timed in the same run (ratio printed).

Run: .venv/bin/python -m pytest tests/bench/test_bench_data.py --benchmark-only -s
"""
from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from wsbench.data import load_split, random_crop_flip
from wsbench.data_sources import decode_images
from bench_timing import best_of

REAL = Path(os.environ.get("WSBENCH_DATA_DIR", "../shared/data"))
needs_real = pytest.mark.skipif(not (REAL / "cifar10-jpeg" / "test.parquet").is_file(), reason="no data mirror")



def _report(name: str, ours: float, reference: float) -> None:
    print(f"\n{name}: ours {ours * 1e3:.1f} ms, reference {reference * 1e3:.1f} ms, speed-up {reference / ours:.2f}x")


@needs_real
def test_bench_decode_cifar_jpegs(benchmark):
    t = pq.read_table(REAL / "cifar10-jpeg" / "test.parquet").slice(0, 2000)
    blobs = t.column("img").combine_chunks().field("bytes").to_pylist()

    def pil_loop() -> np.ndarray:  # the data README's recipe
        return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs]).transpose(0, 3, 1, 2)

    ours = benchmark(decode_images, blobs, 3, 32)
    assert np.array_equal(ours, pil_loop())
    _report("decode 2,000 CIFAR JPEGs", benchmark.stats.stats.min, best_of(pil_loop))


@needs_real
def test_bench_warm_vs_cold_load(benchmark, tmp_path, monkeypatch):
    monkeypatch.setenv("WSBENCH_DATA_DIR", str(REAL))
    monkeypatch.setenv("WSBENCH_CACHE_DIR", str(tmp_path / "cache"))
    t = time.perf_counter()
    cold = load_split("cifar10", "test")
    cold_s = time.perf_counter() - t
    warm = benchmark(load_split, "cifar10", "test")
    assert torch.equal(warm.x, cold.x)
    _report("load cifar10 test (10,000), warm cache vs cold", benchmark.stats.stats.min, cold_s)


def _crop_flip_loop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    out = torch.empty_like(x)
    h, w = x.shape[-2:]
    for k in range(len(x)):
        i, j = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
        crop = padded[k, :, i:i + h, j:j + w]
        out[k] = crop.flip(-1) if torch.rand(1, generator=gen).item() < 0.5 else crop
    return out


def test_bench_random_crop_flip(benchmark):
    x = torch.randn(512, 3, 32, 32)
    out = benchmark(random_crop_flip, x, 4, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    ref = best_of(lambda: _crop_flip_loop(x, 4, torch.Generator().manual_seed(0)))
    _report("random_crop_flip 512x3x32x32 vs per-image loop", benchmark.stats.stats.min, ref)
