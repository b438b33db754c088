"""Two hot ops of the DWS layer with hand-written backward passes, for CPU.

On 2 CPU threads the DWSNet paper step (batch 64 SIRENs) spent about a fifth of its time in two
places that autograd's generic formulas make slow for these shapes:

* max pooling with indices over a small axis (`torch.max(x, dim)` over 32 neurons of a
  [64, 32, 32, 32] tensor: 4.1 ms, against 0.1 ms for the values alone with `amax`);
* set attention over sets of 32 neurons with heads of 4-8 channels, where `A @ V` has 4-8 output
  columns (0.27-0.40 ms per call, against 0.10-0.12 ms for the same product computed as
  `(V^T A^T)^T`).

`max_first` takes the values with `amax` and finds, only in the backward pass, the first index of
each maximum (what `torch.max` returns and the official DWSNets code back-propagates through);
`set_attention` computes softmax(q k^T scale) v and its gradients with every product in the
orientation that is fast here. Both are tested equal to the plain ops, values and gradients.
For float32 the max-pool gradient is one pass of a C kernel (max_pool.c) instead of the float ops.
`fused_set_attention` runs heads of up to 8 channels through a C kernel instead (set_attention.c,
built on first use by wsbench/native_build.py): no score matrix in memory, q, k and v read in place
from one packed product, the set block's residual added in the kernel; 0.52x the time of
`set_attention` at the DWSNet paper's shape (tests/bench).
"""
from __future__ import annotations

import ctypes
import math
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ...native_build import load_kernel

# heads of up to this many channels go through the C kernel (set_attention.c); at 32 and 64 channels the
# batched products were faster (2 threads, sets of 32)
FUSED_MAX_HEAD_DIM = 8


def first_argmax(x: Tensor, values: Tensor, dim: int) -> Tensor:
    """Index of the first maximum of `x` along `dim` (`values` = x.amax(dim, keepdim=True)), as
    torch.max returns it, with float ops only: 1 + sign(x - max) is 1 at a maximum and 0 elsewhere;
    weighted by n, n-1, ..., 1 along `dim` its max is n - (first index). Comparison ops that make
    bool tensors run several times slower here."""
    n = x.shape[dim]
    exact = x.dtype in (torch.float32, torch.float64) and n < 2 ** 24
    if not exact or not bool(torch.isfinite(values).all()):  # inf - inf is NaN: take the plain path
        return x.max(dim=dim, keepdim=True).indices
    rank = torch.arange(n, 0, -1, dtype=x.dtype, device=x.device).view(n, *[1] * (x.dim() - dim - 1))
    return (n - (x - values).sign_().add_(1).mul_(rank).amax(dim=dim, keepdim=True)).long()


class _MaxFirst(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, dim: int) -> Tensor:  # type: ignore[override]
        values = x.amax(dim=dim, keepdim=True)
        ctx.save_for_backward(x, values)
        ctx.dim = dim
        return values.squeeze(dim)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        x, values = ctx.saved_tensors
        if x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous() and x.numel() > 0:
            lib = _max_pool_kernel()
            if lib is not None:
                outer, n = math.prod(x.shape[:ctx.dim]), x.shape[ctx.dim]
                values, grad = values.contiguous(), grad.contiguous()  # held here: the kernel gets raw pointers
                grad_x = torch.empty_like(x)
                lib.wsb_max_first_backward(_ptr(x), _ptr(values), _ptr(grad), _ptr(grad_x), outer, n,
                                           x.numel() // (outer * n))
                return grad_x, None
        index = first_argmax(x, values, ctx.dim)
        return torch.zeros_like(x).scatter_(ctx.dim, index, grad.unsqueeze(ctx.dim)), None


def max_first(x: Tensor, dim: int) -> Tensor:
    """x.max(dim).values, with torch.max's gradient (all of it to the first maximum)."""
    return _MaxFirst.apply(x, dim)


class _SetAttention(torch.autograd.Function):
    """On [N, n, d] tensors: batched products take transposed operands without copies."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        qs = q * scale
        a = torch.softmax(torch.bmm(qs, k.transpose(1, 2)), dim=-1)
        ctx.save_for_backward(qs, k, v, a)
        ctx.scale = scale
        return torch.bmm(v.transpose(1, 2), a.transpose(1, 2)).transpose(1, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:  # type: ignore[override]
        qs, k, v, a = ctx.saved_tensors
        grad_v = torch.bmm(grad.transpose(1, 2), a).transpose(1, 2)  # a^T g
        grad_s = torch._softmax_backward_data(torch.bmm(grad, v.transpose(1, 2)), a, -1, a.dtype)
        grad_q = torch.bmm(k.transpose(1, 2), grad_s.transpose(1, 2)).transpose(1, 2).mul_(ctx.scale)
        grad_k = torch.bmm(qs.transpose(1, 2), grad_s).transpose(1, 2)  # grad_s^T (q scale)
        return grad_q, grad_k, grad_v, None


def set_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """softmax(q k^T scale) v over the last two dims (any leading dims)."""
    *lead, n, d = q.shape
    q3, k3, v3 = (t.reshape(-1, n, t.shape[-1]) for t in (q, k, v))
    return _SetAttention.apply(q3, k3, v3, scale).reshape(*lead, n, v.shape[-1])


_PTR, _I64, _F32, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
_MAX_POOL = (Path(__file__).with_name("max_pool.c"), (("wsb_max_first_backward", (_PTR,) * 4 + (_I64,) * 3),))
_ATTENTION = (Path(__file__).with_name("set_attention.c"),
              (("wsb_set_attention_forward", (_PTR,) * 3 + (_I64,) * 4 + (_F32, _INT)),
               ("wsb_set_attention_backward", (_PTR,) * 5 + (_I64,) * 4 + (_F32, _INT))))


def _max_pool_kernel() -> ctypes.CDLL | None:
    return load_kernel(*_MAX_POOL)


def _fused_kernel() -> ctypes.CDLL | None:
    return load_kernel(*_ATTENTION)


def _ptr(t: Tensor) -> int:
    return t.data_ptr()


def _sizes(qkv: Tensor, heads: int) -> tuple[int, int, int, int]:
    B, n, packed = qkv.shape
    return B, n, heads, packed // 3 // heads


def _head_attention_forward(qkv: Tensor, heads: int, scale: float, residual: bool) -> tuple[Tensor, Tensor]:
    B, n, H, d = _sizes(qkv, heads)
    out = qkv.new_empty(B, n, H * d)
    lse = qkv.new_empty(B, H, n)
    if _fused_kernel().wsb_set_attention_forward(_ptr(qkv), _ptr(out), _ptr(lse), B, n, H, d, scale, int(residual)):
        raise MemoryError("set attention kernel: out of memory")
    return out, lse


def _head_attention_backward(qkv: Tensor, out: Tensor, lse: Tensor, grad: Tensor, heads: int, scale: float,
                             residual: bool) -> Tensor:
    B, n, H, d = _sizes(qkv, heads)
    grad_qkv = torch.empty_like(qkv)
    if _fused_kernel().wsb_set_attention_backward(_ptr(qkv), _ptr(out), _ptr(lse), _ptr(grad), _ptr(grad_qkv),
                                                  B, n, H, d, scale, int(residual)):
        raise MemoryError("set attention kernel: out of memory")
    return grad_qkv


# The kernel's two calls as torch operators (wsbench::head_attention_forward / _backward), so that
# torch's dispatch-level tools see them: torch.utils.flop_counter (scripts/matmul_replay.py gives their
# FLOPs), the profiler, the replay of a step's matrix work.
_LIBRARY = torch.library.Library("wsbench", "FRAGMENT")
_LIBRARY.define("head_attention_forward(Tensor qkv, int heads, float scale, bool residual) -> (Tensor, Tensor)")
_LIBRARY.define("head_attention_backward(Tensor qkv, Tensor out, Tensor lse, Tensor grad, int heads, float scale, "
                "bool residual) -> Tensor")
_LIBRARY.impl("head_attention_forward", _head_attention_forward, "CPU")
_LIBRARY.impl("head_attention_backward", _head_attention_backward, "CPU")


class _FusedSetAttention(torch.autograd.Function):
    """On a contiguous float32 CPU [B, n, 3 * heads * d] tensor (q, k, v packed), through the C kernel."""

    @staticmethod
    def forward(ctx, qkv: Tensor, heads: int, scale: float, residual: bool) -> Tensor:  # type: ignore[override]
        out, lse = torch.ops.wsbench.head_attention_forward(qkv, heads, scale, residual)
        ctx.save_for_backward(qkv, out, lse)
        ctx.args = heads, scale, residual
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        qkv, out, lse = ctx.saved_tensors
        return torch.ops.wsbench.head_attention_backward(qkv, out, lse, grad.contiguous(), *ctx.args), None, None, None


def fused_kernel_applies(x: Tensor, head_dim: int) -> bool:
    """Whether the fused kernel runs for inputs like `x`: CPU float32, heads of at most
    FUSED_MAX_HEAD_DIM channels, and the kernel built (see wsbench/native_build.py)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and 0 < head_dim <= FUSED_MAX_HEAD_DIM
            and _fused_kernel() is not None)


def fused_set_attention(qkv: Tensor, heads: int, scale: float, residual: bool = False) -> Tensor:
    """Per head, softmax(q k^T scale) v (plus q with `residual`) for the packed [B, n, 3 * heads * d]
    float32 CPU tensor qkv = [q | k | v] (head h on channels h*d..(h+1)*d of each third), as
    [B, n, heads * d], through the C kernel (check `fused_kernel_applies` first)."""
    return _FusedSetAttention.apply(qkv.contiguous(), heads, scale, residual)
