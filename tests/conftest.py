"""Shared test setup: the real data mirror when present, the `slow` and `gpu` markers."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
if _SHARED_DATA.is_dir():
    os.environ.setdefault("WSBENCH_DATA_DIR", str(_SHARED_DATA))
# Zoos built by tests (tiny variants) go to one scratch store per test session, never ~/.cache.
os.environ.setdefault("WSBENCH_ZOO_DIR", tempfile.mkdtemp(prefix="wsbench-test-zoos-"))


def pytest_configure(config: pytest.Config) -> None:
    from wsbench.allocator import tune_allocator

    tune_allocator()  # as run_bench.py does: the suite then measures the code as users run it
    config.addinivalue_line("markers", "slow: long-running tests (run with -m slow)")
    config.addinivalue_line("markers", "gpu: needs a CUDA device")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny tensors gain nothing from two, and on a busy 2-core machine every
    parallel region waits for a descheduled thread (10-100x slower steps)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
