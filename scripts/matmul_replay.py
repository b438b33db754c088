"""What a training step's matrix work costs on its own: the ops torch.utils.flop_counter counts
(matrix products, convolutions, attention; forward and backward) are recorded during one step with
their shapes and strides, then each distinct call is replayed alone on random inputs and timed.

The sum is a ceiling for the step: the step cannot run faster than its own FLOP-carrying kernels
at the shapes it calls them. When a path's GFLOP/s are far below the GEMM rate, this tells apart
"its matrices are small or thin" (the replay itself is slow) from "time goes elsewhere"
(elementwise work, launches, Python; the step is slow against its own replay).
"""
from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode, flop_registry, sdpa_backward_flop_count, sdpa_flop_count

import wsbench.methods.equivariant.cpu_kernels  # noqa: F401 - defines the torch.ops.wsbench operators counted below

Call = tuple[Any, tuple, dict]
aten = torch.ops.aten


def _cpu_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
    return sdpa_backward_flop_count(grad_out, query, key, value)


def _fused_attention(qkv, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
    b, n, packed = qkv  # a shape, [B, n, 3 F]: q k^T and p v, 2 n^2 F FLOPs each over the heads
    return 4 * b * n * n * (packed // 3)


def _fused_attention_backward(qkv, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
    # dv, dp, dq, dk: the four products of the batched-product backward; the kernel's recomputed scores are
    # not counted, so that the step's FLOPs are those of the plain path
    return 2 * _fused_attention(qkv)


# flop_counter's registry knows the CUDA attention kernels only; these are the CPU ones (same formulas),
# with wsbench's fused set attention (cpu_kernels: the same products, scores not stored)
CPU_ATTENTION_FLOPS = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
                       aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
                       torch.ops.wsbench.head_attention_forward: _fused_attention,
                       torch.ops.wsbench.head_attention_backward: _fused_attention_backward}


def count_flops(step: Callable[[], None]) -> int:
    """FLOPs of one `step()`: flop_counter's count, CPU attention included."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        step()
    return counter.get_total_flops()


@dataclass(frozen=True)
class TensorShape:
    """A recorded input: what replay needs to make one like it (a leaf for pytree, unlike a tuple)."""
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype


def _describe(x: Any) -> Any:
    return TensorShape(tuple(x.shape), tuple(x.stride()), x.dtype) if isinstance(x, torch.Tensor) else x


def _materialise(x: Any) -> Any:
    if not isinstance(x, TensorShape):
        return x
    n = 1 + sum((s - 1) * st for s, st in zip(x.shape, x.stride)) if all(x.shape) else 0
    base = torch.randn(n) if x.dtype.is_floating_point else torch.zeros(n, dtype=torch.int64)
    return base.to(x.dtype).as_strided(x.shape, x.stride)


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func.overloadpacket in flop_registry or func.overloadpacket in CPU_ATTENTION_FLOPS:
            self.calls.append((func, tree_map(_describe, args), tree_map(_describe, kwargs)))
        return func(*args, **kwargs)


def record_counted_ops(step: Callable[[], None]) -> list[Call]:
    """Every call of one `step()` to an op that flop_counter counts, with its inputs' shapes and strides."""
    rec = _Recorder()
    with rec:
        step()
    return rec.calls


def replay_seconds(calls: list[Call], repeats: int = 3) -> float:
    """Seconds the recorded calls take, each distinct call timed alone (best of `repeats`) times its count."""
    counts = Counter(repr(c) for c in calls)
    first = {}
    for c in calls:
        first.setdefault(repr(c), c)
    total = 0.0
    with torch.no_grad():
        for key, (func, args, kwargs) in first.items():
            a, kw = tree_map(_materialise, args), tree_map(_materialise, kwargs)
            func(*a, **kw)  # warm-up
            best = math.inf
            for _ in range(repeats):
                t = time.perf_counter()
                func(*a, **kw)
                best = min(best, time.perf_counter() - t)
            total += best * counts[key]
    return total
