"""Per-step randomness: which kernels get gradient, which images (or noise) go through.

Every step's random draws come from generators seeded by (seed, iteration, stream), so a run is
reproducible and a resumed run continues exactly without saving generator states; the draws
stay on the run's device (no host synchronisation).

Kernel batches (official `random_weighted_batch`): with probability `weighted_fraction` (0.2)
draw `weights_batch` kernels WITH replacement, p ~ ||original kernel||_2 (a kernel drawn m times
gets m x gradient); otherwise `weights_batch` distinct kernels uniformly. "uniform" always takes
the second branch. The coin is tossed on the host (no device sync).
"""
from __future__ import annotations

import random

import torch
from torch import Tensor

KERNEL_SAMPLINGS = ("mixed", "uniform")
NOISES = ("gaussian", "uniform")

_STREAMS = {"coin": 1, "kernels": 2, "images": 3, "augment": 4, "noise": 5, "epoch": 6}


def step_seed(seed: int, iteration: int, stream: str) -> int:
    return ((seed * 1_000_003 + iteration) * 16 + _STREAMS[stream]) % (1 << 62)


class StepRandom:
    """Generators on `device`, re-seeded per (iteration, stream)."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.seed = seed
        self.device = device
        self.gen = torch.Generator(device=device)
        self.cpu_gen = torch.Generator()

    def device_gen(self, iteration: int, stream: str) -> torch.Generator:
        self.gen.manual_seed(step_seed(self.seed, iteration, stream))
        return self.gen

    def host_gen(self, iteration: int, stream: str) -> torch.Generator:
        self.cpu_gen.manual_seed(step_seed(self.seed, iteration, stream))
        return self.cpu_gen

    def coin(self, iteration: int) -> float:
        return random.Random(step_seed(self.seed, iteration, "coin")).random()


class KernelSampler:
    def __init__(self, n_kernels: int, batch: int, mode: str, weighted_fraction: float, norms: Tensor) -> None:
        self.n = n_kernels
        self.batch = min(batch, n_kernels)
        self.mode = mode
        self.weighted_fraction = weighted_fraction if mode == "mixed" else 0.0
        self.probs = norms / norms.sum() if norms.sum() > 0 else torch.ones_like(norms) / len(norms)

    def sample(self, rnd: StepRandom, iteration: int) -> Tensor:
        return self.sample_branch(rnd, iteration)[0]

    def sample_branch(self, rnd: StepRandom, iteration: int) -> tuple[Tensor, bool]:
        """(kernel indices, whether they are the norm-weighted draws with replacement)."""
        g = rnd.device_gen(iteration, "kernels")
        if self.weighted_fraction > 0 and rnd.coin(iteration) < self.weighted_fraction:
            return torch.multinomial(self.probs, self.batch, replacement=True, generator=g), True
        if self.batch == self.n:
            return torch.arange(self.n, device=self.probs.device), False
        return torch.randperm(self.n, generator=g, device=self.probs.device)[:self.batch], False

    def total_weights(self, idx: Tensor, weighted: bool) -> Tensor:
        """Per drawn kernel, the weight that makes sum(w_i x_i) an unbiased estimate of the sum of x
        over all kernels: n_kernels / batch for distinct uniform draws, 1 / (batch p_i) for draws
        with replacement from p."""
        if weighted:
            return 1.0 / (self.batch * self.probs.index_select(0, idx))
        return torch.full(idx.shape, self.n / idx.numel(), device=idx.device)


class ImageBatches:
    """Epochs of shuffled mini-batches (the last one of an epoch smaller, as a DataLoader), with
    CIFAR augmentation (pad 4, random 32x32 crop, horizontal flip) done on the device."""

    def __init__(self, x: Tensor, batch: int, augment: bool, pad_value: Tensor | None) -> None:
        self.x = x
        self.n = x.shape[0]
        self.batch = min(batch, self.n)
        self.per_epoch = -(-self.n // self.batch)
        self.augment = augment
        self.pad_value = pad_value
        self._epoch = -1
        self._perm: Tensor | None = None

    def get(self, rnd: StepRandom, iteration: int) -> Tensor:
        epoch, pos = divmod(iteration, self.per_epoch)
        if epoch != self._epoch:
            g = rnd.device_gen(epoch, "epoch")
            self._perm = torch.randperm(self.n, generator=g, device=self.x.device)
            self._epoch = epoch
        assert self._perm is not None
        idx = self._perm[pos * self.batch:(pos + 1) * self.batch]
        xb = self.x.index_select(0, idx)
        if self.augment:
            xb = random_crop_flip(xb, 4, rnd.device_gen(iteration, "augment"), self.pad_value)
        return xb


def random_crop_flip(x: Tensor, pad: int, generator: torch.Generator, pad_value: Tensor | None = None) -> Tensor:
    """Per image: pad by `pad` (with `pad_value` per channel, i.e. black after normalisation),
    take a random crop of the original size, flip horizontally with probability 1/2.

    Returns a channels-last tensor (the gather writes (B, H, W, C))."""
    b, c, h, w = x.shape
    dev = x.device
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    if pad_value is not None:
        border = torch.ones(1, 1, h + 2 * pad, w + 2 * pad, device=dev, dtype=x.dtype)
        border[:, :, pad:pad + h, pad:pad + w] = 0
        xp = xp + border * pad_value.view(1, c, 1, 1)
    off = torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device=dev)
    flip = torch.randint(0, 2, (b,), generator=generator, device=dev).bool()
    cols = torch.arange(w, device=dev)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + off[1][:, None]  # (B, W)
    rows = torch.arange(h, device=dev) + off[0][:, None]  # (B, H)
    bi = torch.arange(b, device=dev)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def noise_batch(shape: tuple[int, ...], kind: str, generator: torch.Generator, device: torch.device) -> Tensor:
    """Data-free inputs: N(0,1) (paper) or Uniform[-2, 2) (official HEAD)."""
    if kind == "gaussian":
        return torch.randn(shape, generator=generator, device=device)
    return torch.rand(shape, generator=generator, device=device) * 4.0 - 2.0
