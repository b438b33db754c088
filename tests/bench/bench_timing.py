"""Shared by the benchmarks: best-of-n wall time and the thread-count fixture."""
from __future__ import annotations

import os
import time
from typing import Callable, Iterator

import pytest
import torch


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """The fastest of `repeats` calls, in seconds (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


@pytest.fixture(scope="module")
def bench_threads() -> Iterator[None]:
    """torch threads from WSBENCH_BENCH_THREADS (default 1), printed with the load average."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("WSBENCH_BENCH_THREADS", "1")))
    print(f"\n[torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}]")
    yield
    torch.set_num_threads(before)
