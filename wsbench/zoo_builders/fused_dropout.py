"""Activation and counter-based dropout as one autograd step with compiled loops.

Eagerly, `dropout(act(x))` on the batched small CNNs' activations (hundreds of MB per layer) is
about a dozen passes over memory per training step (activation, mask, product and their
backwards) and keeps three tensors per layer alive for the backward pass. Here the forward pass
is one loop (activation, hash, compare, scale) and the backward one loop. The dropout bits are
counter_rng's (the same masks as the eager path).

What the backward pass keeps: for ReLU, tanh and sigmoid only the output, which the next convolution
keeps anyway as its input, so a layer costs one activation-sized tensor instead of two (64 small
CNNs at batch 512 on 32x32 images: 470 MB less for the first layer alone). ReLU's gradient is the
upstream gradient times 1 / (1 - rate) where the output is positive (no mask recomputed; equal to the
eager path bit for bit); tanh and sigmoid recompute the mask from the member keys and take the
activation as output / multiplier on kept units (equal to float rounding, like a compiled tanh, which
may differ from ATen's by an ulp). GELU, whose derivative the output does not determine, keeps its
pre-activation.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from . import counter_rng as rng
from .compiled import CompiledOrEager

FUSED_ACTIVATIONS = ("relu", "tanh", "gelu", "sigmoid")
COMPILE_MIN_ELEMENTS = 1 << 22  # smaller activations run eagerly: compiling (seconds per shape) would cost more
# a run of at least LONG_RUN_STEPS steps pays for the compilation of smaller activations too: the eager hash is
# ~25 passes over memory a call (cnn_families_mnist d2w8, second layer 3.2M values a micro-batch of 32: a step of
# 256 members 0.43-0.50 s with it eager, 0.38 s compiled)
LONG_RUN_STEPS, LONG_RUN_MIN_ELEMENTS = 1000, 1 << 20


def compile_min_elements(total_steps: int) -> int:
    """The smallest activation (values) whose activation-dropout runs compiled, in a run of `total_steps` steps."""
    return min(COMPILE_MIN_ELEMENTS, LONG_RUN_MIN_ELEMENTS) if total_steps >= LONG_RUN_STEPS else COMPILE_MIN_ELEMENTS


def _activation(x: Tensor, name: str) -> Tensor:
    if name == "relu":
        return torch.relu(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "gelu":
        return F.gelu(x)
    return torch.sigmoid(x)


def _times_derivative(g: Tensor, x: Tensor, name: str) -> Tensor:
    """g * act'(x), as autograd computes it for each activation."""
    if name == "relu":
        return torch.where(x > 0, g, torch.zeros_like(g))
    if name == "tanh":
        t = torch.tanh(x)
        return g * (1 - t * t)
    if name == "gelu":  # exact (erf) GELU: Phi(x) + x phi(x)
        cdf = 0.5 * (1 + torch.erf(x * (1 / math.sqrt(2))))
        pdf = torch.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
        return g * (cdf + x * pdf)
    s = torch.sigmoid(x)
    return g * ((1 - s) * s)


def _multipliers(x: Tensor, k1: Tensor, k2: Tensor, rate: Tensor, start: Tensor, hw: int) -> Tensor:
    """The dropout multipliers in x's layout: [n0, B, inner] (an NCHW activation; hw 0) or [n0 * hw, B, c]
    (the memory order of a channels-last one with hw pixels); the same numbers for the same unit either way."""
    if not hw:
        return rng._dropout_multipliers(k1, k2, rate, x.shape[0], x.shape[2], start)
    return rng._dropout_multipliers_channels_last(k1, k2, rate, x.shape[0], hw, x.shape[2], start)


def _forward(x3: Tensor, k1: Tensor, k2: Tensor, rate: Tensor, start: Tensor, name: str, hw: int) -> Tensor:
    """act(x) * multipliers; x3 [n0, B, inner] or [n0 * hw, B, c] (see _multipliers), counters from `start`."""
    return _activation(x3, name) * _multipliers(x3, k1, k2, rate, start, hw)


def _backward(g3: Tensor, x3: Tensor, k1: Tensor, k2: Tensor, rate: Tensor, start: Tensor, name: str, hw: int) -> Tensor:
    return _times_derivative(g3 * _multipliers(x3, k1, k2, rate, start, hw), x3, name)


FROM_OUTPUT = ("relu", "tanh", "sigmoid")  # activations whose backward pass needs only the output


def _relu_backward_from_output(g3: Tensor, y3: Tensor, scale: Tensor) -> Tensor:
    """Kept units with a positive output pass g / (1 - rate), as the eager mask's product does."""
    return torch.where(y3 > 0, g3 * scale.view(1, -1, 1), torch.zeros_like(g3))


def _backward_from_output(g3: Tensor, y3: Tensor, k1: Tensor, k2: Tensor, rate: Tensor, start: Tensor,
                          name: str, hw: int) -> Tensor:
    m = _multipliers(y3, k1, k2, rate, start, hw)
    a = torch.where(m > 0, y3 / m, torch.zeros_like(y3))  # the activation on kept units; dropped ones pass nothing
    gm = g3 * m
    return gm * (1 - a * a) if name == "tanh" else gm * ((1 - a) * a)


def _compiled(fn, what: str) -> dict[bool, CompiledOrEager]:
    """fn compiled for NCHW activations (False: shapes made symbolic after the first recompilation, as torch does)
    and for channels-last ones (True: static shapes; with symbolic sizes their counters, row // hw and row % hw,
    compile to a separate mask loop and a bool buffer, 3x slower; a zoo build meets a few shapes a layer)."""
    return {False: CompiledOrEager(fn, what),
            True: CompiledOrEager(fn, what + " (channels-last)", dynamic=False, recompile_limit=64)}


_FORWARD = _compiled(_forward, "the fused activation-dropout forward pass")
_BACKWARD = _compiled(_backward, "the fused activation-dropout backward pass")
_RELU_BACKWARD = _compiled(_relu_backward_from_output, "the fused ReLU-dropout backward pass")
_BACKWARD_FROM_OUTPUT = _compiled(_backward_from_output, "the fused activation-dropout backward pass (from outputs)")


class _ActivationDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x3: Tensor, k1: Tensor, k2: Tensor, rate: Tensor, start: Tensor, name: str, hw: int) -> Tensor:  # type: ignore[override]
        y3 = _FORWARD[hw > 0](x3, k1, k2, rate, start, name, hw)
        ctx.save_for_backward(y3 if name in FROM_OUTPUT else x3, k1, k2, rate, start)
        ctx.name, ctx.hw = name, hw
        return y3

    @staticmethod
    def backward(ctx, g3: Tensor):  # type: ignore[override]
        kept, k1, k2, rate, start = ctx.saved_tensors
        g3 = g3.contiguous()
        if ctx.name == "relu":
            grad = _RELU_BACKWARD[ctx.hw > 0](g3, kept, rng.dropout_scale(rate))
        elif ctx.name in FROM_OUTPUT:
            grad = _BACKWARD_FROM_OUTPUT[ctx.hw > 0](g3, kept, k1, k2, rate, start, ctx.name, ctx.hw)
        else:
            grad = _BACKWARD[ctx.hw > 0](g3, kept, k1, k2, rate, start, ctx.name, ctx.hw)
        return grad, None, None, None, None, None, None


def fused_available() -> bool:
    """Whether the compiled loops still run (they fall back to the same maths eagerly after a failure)."""
    return all(f.usable for pair in (_FORWARD, _BACKWARD, _RELU_BACKWARD, _BACKWARD_FROM_OUTPUT) for f in pair.values())


def activation_dropout(h: Tensor, nb: int, seeds: Tensor, stream: int, step: int, rate: Tensor, name: str,
                       first_image: int = 0) -> Tensor:
    """dropout(act(h)) of B member-grouped activations h [N, B*C, H, W], member b at rate[b], with the
    masks of counter_rng.dropout_multipliers_member_axis1(seeds, stream, step, (N, C, H, W), first_image):
    a micro-batch starting at image `first_image` of a step gets that step's masks of its images. A
    channels-last h is worked on in its own memory order and the result is channels-last too."""
    if name not in FUSED_ACTIVATIONS:
        raise ValueError(f"fused activation must be one of {FUSED_ACTIVATIONS}, got {name!r}")
    n, bc, hh, ww = h.shape
    inner = (bc // nb) * hh * ww
    if (first_image + n) * inner >= rng.INT32_COUNTERS:
        raise ValueError("activation_dropout: too many counters per member for the int32 hash")
    k1, k2 = rng.member_keys(seeds, stream, step)
    channels_last = not h.is_contiguous() and h.is_contiguous(memory_format=torch.channels_last)
    if channels_last:  # its memory order, [N * H * W, B, C]
        x = h.permute(0, 2, 3, 1).view(n * hh * ww, nb, bc // nb)
    else:
        x = h.contiguous().view(n, nb, inner)
    start = torch.tensor(first_image * inner, dtype=torch.int32, device=h.device)
    y = _ActivationDropout.apply(x, rng._as_int32_bits(k1), rng._as_int32_bits(k2), rate.to(torch.float32), start, name,
                                 hh * ww if channels_last else 0)
    return y.view(n, hh, ww, bc).permute(0, 3, 1, 2) if channels_last else y.view(n, bc, hh, ww)
