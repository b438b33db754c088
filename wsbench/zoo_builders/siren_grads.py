"""Loss and gradients of many SIRENs at once, written out by hand (the fast path of SIREN fitting).

Autograd on a batch of SIRENs keeps every activation of the whole batch alive ([B, P, hidden]
tensors of tens of MB each), runs ~20 separate elementwise passes over them and multiplies by
omega0 on the activations; on a 2-core CPU that is memory-bound at ~5 % of the GEMM rate. Here
the batch is cut into chunks small enough to stay in cache, omega0 is folded into the (small)
weights, the cosine needed by the backward pass is taken in the forward pass, and, on the CPU,
`torch.compile` fuses the elementwise work of a chunk into a few loops. The gradients are those
of autograd on the same loss (the sum over networks of each network's pixel MSE); tests check
them against autograd to float rounding.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .compiled import CompiledOrEager


def chunk_loss_and_grads(weights: list[Tensor], biases: list[Tensor], coords: Tensor, target: Tensor,
                         omega0: float, offset: float, out_mse: Tensor, out_w: list[Tensor], out_b: list[Tensor]) -> None:
    """Per-network MSE [n] and the gradients of its sum for n SIRENs (weights[i]: [n, out, in]), written
    into out_mse / out_w / out_b (views of the caller's buffers: no copy after a compiled call).

    Layer i < last computes sin(omega0 * (h W^T + b)); the last layer h W^T + b + offset; target [n, P]."""
    n, last = weights[0].shape[0], len(weights) - 1
    h = coords.unsqueeze(0).expand(n, -1, -1)
    inputs, cosines, scaled = [], [], []
    for i, (w, b) in enumerate(zip(weights, biases)):
        scale = omega0 if i < last else 1.0
        w_s = w * scale
        z = torch.baddbmm((b * scale).unsqueeze(1), h, w_s.transpose(1, 2))
        inputs.append(h)
        scaled.append(w_s)
        if i < last:
            cosines.append(torch.cos(z))
            h = torch.sin(z)
        else:
            h = z
    residual = h + (offset - target.unsqueeze(-1))  # [n, P, out]
    out_mse.copy_(residual.square().mean(dim=(1, 2)))
    dz = residual * (2.0 / (residual.shape[1] * residual.shape[2]))
    for i in range(last, -1, -1):
        scale = omega0 if i < last else 1.0
        out_w[i].copy_(torch.bmm(dz.transpose(1, 2), inputs[i]) * scale)
        out_b[i].copy_(dz.sum(1) * scale)
        if i > 0:
            dz = torch.bmm(dz, scaled[i]) * cosines[i - 1]


_CHUNK = CompiledOrEager(chunk_loss_and_grads, "the SIREN gradients", dynamic=False)


def compiled_chunk_fn() -> CompiledOrEager | None:
    """`chunk_loss_and_grads` under torch.compile (made once per process; it runs the same maths
    eagerly from a compiler failure on), or None where compiling has failed before."""
    return _CHUNK if _CHUNK.usable else None


def loss_and_grads(params: dict[str, Tensor], coords: Tensor, target: Tensor, omega0: float, offset: float, *,
                   chunk: int, compile_fn: CompiledOrEager | None) -> tuple[Tensor, dict[str, Tensor], bool]:
    """Per-network MSE [B] and gradients {key: [B, ...]} over chunks of `chunk` networks.

    Returns whether the compiled function ran (False once it has failed and the eager one took over)."""
    n_layers = len(params) // 2
    weights = [params[f"layers.{i}.weight"] for i in range(n_layers)]
    biases = [params[f"layers.{i}.bias"] for i in range(n_layers)]
    total = target.shape[0]
    mse = torch.empty(total, device=target.device, dtype=target.dtype)
    grads = {k: torch.empty_like(v) for k, v in params.items()}
    for a in range(0, total, chunk):
        sl = slice(a, min(total, a + chunk))
        args = ([w[sl] for w in weights], [b[sl] for b in biases], coords, target[sl], omega0, offset, mse[sl],
                [grads[f"layers.{i}.weight"][sl] for i in range(n_layers)],
                [grads[f"layers.{i}.bias"][sl] for i in range(n_layers)])
        (compile_fn or chunk_loss_and_grads)(*args)
    compiled = compile_fn is not None and compile_fn.usable
    return mse, grads, compiled
