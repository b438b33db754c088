"""Counter-based random numbers for training many networks at once.

Each member's numbers depend only on (its seed, a stream id, a step counter, the element's
position), never on which other members share its batch or on the device: a member trained
in a batch of 1,000 draws exactly the minibatches and dropout masks it draws when trained
alone. The hash is a 32-bit integer mixer (xorshift-multiply rounds, multipliers < 2^31 so
every product fits in int64) applied to two independent 32-bit keys per member, i.e. an
effective 64-bit key: streams of different members collide with probability ~2^-64.

The per-element hashing runs in int32 arithmetic (in place, wrapping multiplications, masked
logical shifts): the same bits as the int64 form, at half the memory and ~3x the speed. Eagerly,
the hash is still about 25 passes over memory per element: large dropout masks are made inside the
compiled activation-dropout loops of fused_dropout, from `_dropout_multipliers` (the same bits).
"""
from __future__ import annotations

import torch
from torch import Tensor

M32 = 0xFFFFFFFF
INT32_COUNTERS = 2**31  # from this many counters on, hashing falls back to int64
_K1, _K2 = 0x3C6EF372, 0x1B873593  # salts of the two key lanes

# named streams (stable ids: changing one changes every zoo built with it)
STREAM_INIT, STREAM_BATCH, STREAM_DROPOUT, STREAM_EVAL, STREAM_SUBSET = 1, 2, 3, 4, 5


def _mix(x: Tensor) -> Tensor:
    """A bijective 32-bit mixer on int64 tensors holding values in [0, 2^32)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & M32
    x = x ^ (x >> 15)
    x = (x * 0x68E31DA5) & M32
    return x ^ (x >> 16)


def _mix32_(x: Tensor) -> Tensor:
    """`_mix` on int32 tensors holding the same 32 bits, in place (int32 products wrap mod 2^32)."""
    x ^= (x >> 16) & 0xFFFF
    x *= 0x7FEB352D
    x ^= (x >> 15) & 0x1FFFF
    x *= 0x68E31DA5
    x ^= (x >> 16) & 0xFFFF
    return x


def _as_int32_bits(k: Tensor) -> Tensor:
    """int64 values in [0, 2^32) -> int32 tensors with the same 32 bits."""
    return (k - ((k >> 31) << 32)).to(torch.int32)


def _hash_to_uniform(ctr_shape: tuple[int, ...], k1: Tensor, k2: Tensor, device: torch.device,
                     start: int = 0) -> Tensor:
    """uniforms u[i] = top 24 bits of mix(mix(k1 ^ i) ^ k2) / 2^24 for counters i = start.. laid out in
    `ctr_shape`, k1/k2 broadcast against it."""
    n = 1
    for s in ctr_shape:
        n *= s
    if start + n >= INT32_COUNTERS:  # counters beyond int32: the int64 form
        ctr = torch.arange(start, start + n, device=device, dtype=torch.int64).view(ctr_shape)
        h = _mix(_mix(k1 ^ ctr) ^ k2)
        return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))
    h = torch.arange(start, start + n, device=device, dtype=torch.int32).view(ctr_shape) ^ _as_int32_bits(k1)
    _mix32_(h)
    h ^= _as_int32_bits(k2)
    _mix32_(h)
    return ((h >> 8) & 0xFFFFFF).to(torch.float32).mul_(1.0 / (1 << 24))


def member_keys(seeds: Tensor, stream: int, step: int) -> tuple[Tensor, Tensor]:
    """Two 32-bit keys per member ([B] int64 each) for one (stream, step)."""
    s = seeds.to(torch.int64) & M32
    out = []
    for salt in (_K1, _K2):
        k = _mix(s ^ salt)
        k = _mix(k ^ (stream & M32))
        k = _mix(k ^ (step & M32))
        k = _mix(k ^ ((step >> 32) & M32))
        out.append(k)
    return out[0], out[1]


def uniform(seeds: Tensor, stream: int, step: int, shape: tuple[int, ...], device: torch.device | str | None = None) -> Tensor:
    """[B, *shape] float32 uniforms in [0, 1) with 24 random bits each."""
    device = torch.device(device) if device is not None else seeds.device
    k1, k2 = member_keys(seeds.to(device), stream, step)
    n = 1
    for s in shape:
        n *= s
    u = _hash_to_uniform((1, n), k1.view(-1, 1), k2.view(-1, 1), device)
    return u.view(len(seeds), *shape)


def uniform_member_axis1(seeds: Tensor, stream: int, step: int, shape: tuple[int, ...], first_row: int = 0) -> Tensor:
    """[shape[0], B, *shape[1:]]: the same numbers as `uniform(...)` transposed to put members on
    axis 1 (the layout of grouped-convolution activations), without materialising a transpose.
    `first_row` > 0 gives rows first_row.. of a taller draw (a micro-batch's images of a step)."""
    k1, k2 = member_keys(seeds, stream, step)
    inner = 1
    for s in shape[1:]:
        inner *= s
    u = _hash_to_uniform((shape[0], 1, inner), k1.view(1, -1, 1), k2.view(1, -1, 1), seeds.device, first_row * inner)
    return u.view(shape[0], len(seeds), *shape[1:])


def _mix32(x: Tensor) -> Tensor:
    """`_mix32_` without in-place updates (the form torch.compile fuses into one loop)."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * 0x7FEB352D
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * 0x68E31DA5
    return x ^ ((x >> 16) & 0xFFFF)


def dropout_scale(rate: Tensor) -> Tensor:
    """A kept unit's inverted-dropout multiplier, 1 / (1 - rate) (0 at rate 1, which drops everything)."""
    return torch.where(rate < 1.0, 1.0 / (1.0 - rate), torch.zeros_like(rate))


def _inverted_dropout(u: Tensor, rate: Tensor) -> Tensor:
    """1 / (1 - rate) where u >= rate, else 0; rate broadcasts against u."""
    return (u >= rate).to(torch.float32) * dropout_scale(rate)


def _dropout_multipliers(k1: Tensor, k2: Tensor, rate: Tensor, n0: int, inner: int, start: Tensor) -> Tensor:
    """[n0, B, inner] multipliers from int32 keys k1, k2 and rates [B], counters from `start` (an int32
    scalar tensor: a tensor, so a compiled caller does not recompile per micro-batch offset) laid out as
    `uniform_member_axis1` lays them out: the bits of _hash_to_uniform, as one expression."""
    ctr = torch.arange(n0 * inner, dtype=torch.int32, device=k1.device).view(n0, 1, inner) + start
    return _multipliers_of_counters(ctr, k1, k2, rate)


def _multipliers_of_counters(ctr: Tensor, k1: Tensor, k2: Tensor, rate: Tensor) -> Tensor:
    """Inverted-dropout multipliers of int32 counters [rows, 1 or B, cols], members on axis 1: the bits of
    _hash_to_uniform, as one expression."""
    h = _mix32(_mix32(ctr ^ k1.view(1, -1, 1)) ^ k2.view(1, -1, 1))
    u = ((h >> 8) & 0xFFFFFF).to(torch.float32) * (1.0 / (1 << 24))
    return _inverted_dropout(u, rate.view(1, -1, 1))


def _dropout_multipliers_channels_last(k1: Tensor, k2: Tensor, rate: Tensor, rows: int, hw: int, c: int,
                                       start: Tensor) -> Tensor:
    """[rows, B, c] with rows = n0 * hw: `_dropout_multipliers(..., n0, c * hw, start)` in the memory order of
    a channels-last activation [n0, B*c, H, W] (unit (b, ch, p) of image i keeps counter
    start + i*c*hw + ch*hw + p; row i*hw + p). Three dimensions, as the data's view, so that a compiler
    fuses the hash with the loop over the data."""
    dev = k1.device
    row = torch.arange(rows, dtype=torch.int32, device=dev).view(rows, 1, 1)
    ctr = ((row // hw) * (c * hw) + row % hw + torch.arange(c, dtype=torch.int32, device=dev).view(1, 1, c) * hw) + start
    return _multipliers_of_counters(ctr, k1, k2, rate)


def dropout_multipliers_member_axis1(seeds: Tensor, stream: int, step: int, shape: tuple[int, ...],
                                     rate: Tensor, first_row: int = 0) -> Tensor:
    """[shape[0], B, *shape[1:]] inverted-dropout multipliers (1 / (1 - rate_b) or 0) of the numbers
    `uniform_member_axis1(seeds, stream, step, shape, first_row)` draws, member b at rate[b] (eager)."""
    u = uniform_member_axis1(seeds, stream, step, shape, first_row)
    return _inverted_dropout(u, rate.to(torch.float32).view(1, len(seeds), *([1] * (len(shape) - 1))))


def normal(seeds: Tensor, stream: int, step: int, shape: tuple[int, ...]) -> Tensor:
    """[B, *shape] standard normals (Box-Muller on two counter-based uniforms)."""
    u1 = uniform(seeds, stream, 2 * step, shape)
    u2 = uniform(seeds, stream, 2 * step + 1, shape)
    u1 = u1 + 0.5 / (1 << 24)  # in (0, 1): log is finite
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * torch.pi) * u2)


def randint(seeds: Tensor, stream: int, step: int, n: int, high: Tensor | int) -> Tensor:
    """[B, n] int64 in [0, high_b) (high per member or shared); bias below 2^-24 * high."""
    u = uniform(seeds, stream, step, (n,)).to(torch.float64)  # u <= 1 - 2^-24, so u * high < high
    high_t = torch.as_tensor(high, device=u.device).to(torch.float64)
    if high_t.dim() == 1:
        high_t = high_t[:, None]
    return (u * high_t).to(torch.int64)


def per_member_permutation(seeds: Tensor, stream: int, n: int) -> Tensor:
    """[B, n] one random permutation of range(n) per member (argsort of hashed keys)."""
    u = uniform(seeds, stream, 0, (n,))
    return torch.argsort(u, dim=1, stable=True)
