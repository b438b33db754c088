"""Loss and gradients of many SIRENs at once, written out by hand (the fast path of SIREN fitting).

Autograd on a batch of SIRENs keeps every activation of the whole batch alive ([B, P, hidden]
tensors of tens of MB each), runs ~20 separate elementwise passes over them and multiplies by
omega0 on the activations; on a 2-core CPU that is memory-bound at ~5 % of the GEMM rate. Here
the batch is cut into chunks small enough to stay in cache, omega0 is folded into the (small)
weights and, on the CPU, `torch.compile` fuses the elementwise work of a chunk into a few loops.
Only the square hidden-to-hidden layers are batched matrix products; the thin first layer (2
coordinates in) and last layer (1 value out) are written as sums of a few broadcast products,
which the compiler fuses with the sines, cosines and pixel sums beside them, instead of matrix
products of inner size 2 or 1 that each write and re-read a [chunk, P, hidden] tensor. Compiled,
the sine and cosine of each pre-activation come from one range reduction (`sincos`), and the
forward pass keeps the cosine for the backward pass instead of the pre-activation. The
gradients are those of autograd on the same loss (the sum over networks of each network's
pixel MSE); tests check them against autograd to float rounding.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .compiled import CompiledOrEager
from .sincos import sincos

CPU_CHUNK = 16  # networks per chunk on the CPU: the fastest of 4-64 on a 2-core CPU (chunks of [16, 784, 32] fp32)


def chunk_loss_and_grads(first_weight_t: Tensor, weights: list[Tensor], biases: list[Tensor], coord_columns: list[Tensor],
                         target: Tensor, omega0: float, offset: float, out_mse: Tensor, out_w: list[Tensor],
                         out_b: list[Tensor], fused_trig: bool = False) -> None:
    """Per-network MSE [n] and the gradients of its sum for n SIRENs, written into out_mse / out_w /
    out_b (views of the caller's buffers: no copy after a compiled call).

    weights[i]: [n, out, in]; first_weight_t: weights[0] transposed to [n, in, hidden], contiguous (the
    layout the fused first layer reads along the hidden axis); coord_columns: the P coordinates' columns,
    each [P]; target [n, P]. Layer i < last computes sin(omega0 * (h W^T + b)); the last layer
    h W^T + b + offset. At least one sine layer."""
    last, n_pixels = len(weights) - 1, coord_columns[0].shape[0]
    columns = [c.view(1, n_pixels, 1) for c in coord_columns]
    first_t = first_weight_t * omega0
    z = (biases[0] * omega0).unsqueeze(1)
    for k, column in enumerate(columns):
        z = z + column * first_t[:, k].unsqueeze(1)
    h, cos_pre = _sin_cos(z, fused_trig)
    cosines, hidden_in, scaled = [cos_pre], [], []  # cos of the pre-activations; inputs and omega0-scaled weights of the square layers
    for i in range(1, last):
        w_s = weights[i] * omega0
        hidden_in.append(h)
        scaled.append(w_s)
        z = torch.bmm(h, w_s.transpose(1, 2).contiguous()) + (biases[i] * omega0).unsqueeze(1)
        h, cos_pre = _sin_cos(z, fused_trig)
        cosines.append(cos_pre)
    w_last, n_out = weights[last], weights[last].shape[1]
    y = torch.stack([(h * w_last[:, o].unsqueeze(1)).sum(-1) for o in range(n_out)], -1) + biases[last].unsqueeze(1)
    residual = y + (offset - target.unsqueeze(-1))  # [n, P, out]
    out_mse.copy_(residual.square().mean(dim=(1, 2)))
    dy = residual * (2.0 / (residual.shape[1] * residual.shape[2]))
    out_w[last].copy_(torch.stack([(dy[..., o].unsqueeze(-1) * h).sum(1) for o in range(n_out)], 1))
    out_b[last].copy_(dy.sum(1))
    dh = dy[..., 0].unsqueeze(-1) * w_last[:, 0].unsqueeze(1)
    for o in range(1, n_out):
        dh = dh + dy[..., o].unsqueeze(-1) * w_last[:, o].unsqueeze(1)
    for i in range(last - 1, 0, -1):
        dz = dh * cosines[i]
        out_w[i].copy_(torch.bmm(dz.transpose(1, 2), hidden_in[i - 1]) * omega0)
        out_b[i].copy_(dz.sum(1) * omega0)
        dh = torch.bmm(dz, scaled[i - 1])
    dz = dh * cosines[0]
    out_b[0].copy_(dz.sum(1) * omega0)
    for k, column in enumerate(columns):
        out_w[0][:, :, k].copy_((dz * column).sum(1) * omega0)


def _sin_cos(z: Tensor, fused: bool) -> tuple[Tensor, Tensor]:
    """sin and cos of the pre-activations: the cosine is kept for the backward pass in place of z."""
    return sincos(z) if fused else (torch.sin(z), torch.cos(z))


_CHUNK = CompiledOrEager(chunk_loss_and_grads, "the SIREN gradients", dynamic=False)


def compiled_chunk_fn() -> CompiledOrEager | None:
    """`chunk_loss_and_grads` under torch.compile (made once per process; it runs the same maths
    eagerly from a compiler failure on), or None where compiling has failed before."""
    return _CHUNK if _CHUNK.usable else None


def loss_and_grads(params: dict[str, Tensor], coords: Tensor, target: Tensor, omega0: float, offset: float, *,
                   chunk: int, compile_fn: CompiledOrEager | None,
                   fused_trig: bool | None = None) -> tuple[Tensor, dict[str, Tensor], bool]:
    """Per-network MSE [B] and gradients {key: [B, ...]} over chunks of `chunk` networks. The sines and
    cosines come from `sincos` (one range reduction for both) where `fused_trig`, by default where the
    chunks run compiled (eagerly it is slower than torch.sin and torch.cos).

    Returns whether the compiled function ran (False once it has failed and the eager one took over)."""
    n_layers = len(params) // 2
    weights = [params[f"layers.{i}.weight"] for i in range(n_layers)]
    biases = [params[f"layers.{i}.bias"] for i in range(n_layers)]
    first_t = weights[0].transpose(1, 2).contiguous()
    columns = [coords[:, k].contiguous() for k in range(coords.shape[1])]
    total = target.shape[0]
    fused_trig = compile_fn is not None if fused_trig is None else fused_trig
    mse = torch.empty(total, device=target.device, dtype=target.dtype)
    grads = {k: torch.empty_like(v) for k, v in params.items()}
    for a in range(0, total, chunk):
        sl = slice(a, min(total, a + chunk))
        args = (first_t[sl], [w[sl] for w in weights], [b[sl] for b in biases], columns, target[sl], omega0, offset,
                mse[sl], [grads[f"layers.{i}.weight"][sl] for i in range(n_layers)],
                [grads[f"layers.{i}.bias"][sl] for i in range(n_layers)], fused_trig)
        (compile_fn or chunk_loss_and_grads)(*args)
    compiled = compile_fn is not None and compile_fn.usable
    return mse, grads, compiled
