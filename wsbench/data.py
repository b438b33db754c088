"""Image datasets (CIFAR-10, its lossless subset, MNIST, Fashion-MNIST) as tensors on a device.

`load_split("cifar10", "test")` reads `$WSBENCH_DATA_DIR/cifar10-jpeg/test.parquet` when that
mirror exists, else the Hub dataset `uoft-cs/cifar10`; decoded pixels are cached (see
data_sources.py). `ImageSplit.source` names the file or Hub id: the mirror's CIFAR-10 is lossy
JPEG (about 10 points lower accuracy than the lossless original), so records must say which one
a number came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .archs.resnet_cifar import CIFAR_MEAN, CIFAR_STD
from .errors import ConfigError, DataError, UnknownNameError
from .registry import closest
from . import data_sources

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_CLASSES = ("T - shirt / top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")  # the Hub dataset's ClassLabel names
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL "L" and tf.image.rgb_to_grayscale

# Grayscale CIFAR-10 statistics: luma (LUMA_WEIGHTS on floats in [0,1], no rounding) of all
# 50,000 training images of the cifar10-jpeg mirror, mean and std over all pixels, in float64
# (0.480774 / 0.238850; tests/test_data.py::test_grayscale_stats_match_data recomputes them).
# The 5,438 lossless training images of cifar10-exact-subset give 0.4833 / 0.2401.
CIFAR10_GRAY_MEAN, CIFAR10_GRAY_STD = 0.4808, 0.2388


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    channels: int
    size: int  # height = width
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    mirror_dir: str  # folder under WSBENCH_DATA_DIR holding {train,test}.parquet
    hub_id: str | None  # Hugging Face dataset used when there is no mirror
    splits: tuple[str, ...]
    image_column: str = "img"
    default_val_size: int = 5000
    gray_mean: float = 0.0  # single-channel stats used with grayscale=True
    gray_std: float = 1.0

    @property
    def source_splits(self) -> tuple[str, ...]:
        return tuple(s for s in ("train", "test") if s in self.splits)


_CIFAR = dict(num_classes=10, channels=3, size=32, mean=CIFAR_MEAN, std=CIFAR_STD, class_names=CIFAR10_CLASSES,
              image_column="img", gray_mean=CIFAR10_GRAY_MEAN, gray_std=CIFAR10_GRAY_STD)
_GRAY28 = dict(num_classes=10, channels=1, size=28, image_column="image")
DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", mirror_dir="cifar10-jpeg", hub_id="uoft-cs/cifar10",
                           splits=("train", "val", "train_full", "test"), **_CIFAR),
    "cifar10_exact": DatasetInfo("cifar10_exact", mirror_dir="cifar10-exact-subset", hub_id=None,
                                 splits=("train", "test"), default_val_size=0, **_CIFAR),
    "mnist": DatasetInfo("mnist", mean=(0.1307,), std=(0.3081,), class_names=tuple(str(i) for i in range(10)),
                         mirror_dir="mnist", hub_id="ylecun/mnist", splits=("train", "val", "train_full", "test"),
                         gray_mean=0.1307, gray_std=0.3081, **_GRAY28),
    "fashion_mnist": DatasetInfo("fashion_mnist", mean=(0.2860,), std=(0.3530,), class_names=FASHION_MNIST_CLASSES,
                                 mirror_dir="fashion-mnist", hub_id="zalando-datasets/fashion_mnist",
                                 splits=("train", "val", "train_full", "test"), gray_mean=0.2860, gray_std=0.3530,
                                 **_GRAY28),
}


@dataclass
class ImageSplit:
    x: Tensor  # (N, C, H, W) float32
    y: Tensor  # (N,) int64
    dataset: str
    split: str
    source: str  # parquet path or Hub id the pixels came from
    normalized: bool
    grayscale: bool = False
    index: Tensor | None = field(default=None, repr=False)  # (N,) position of each image in the original split

    def to(self, device: torch.device | str) -> ImageSplit:
        return replace(self, x=self.x.to(device), y=self.y.to(device),
                       index=None if self.index is None else self.index.to(device))

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def info(self) -> DatasetInfo:
        return DATASETS[self.dataset]


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        hint = closest(name, list(DATASETS))
        raise UnknownNameError(f"unknown dataset {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                               + f" (known: {', '.join(DATASETS)})")
    return DATASETS[name]


def load_split(dataset: str, split: str = "test", *, device: torch.device | str = "cpu", normalize: bool = True,
               grayscale: bool = False, limit: int | None = None, val_size: int | None = None,
               seed: int = 0) -> ImageSplit:
    """One split as float32 tensors on `device`.

    Splits: "test", "train_full" (all training images), "val" (`val_size` training images drawn with
    `torch.randperm` seeded by `seed`, in original order) and "train" (the rest, in original order).
    `limit` keeps the first `limit` images of the split. `normalize=False` gives values in [0, 1];
    `grayscale=True` turns RGB into one BT.601 luma channel (normalised with the grayscale stats).
    """
    info = dataset_info(dataset)
    if split not in info.splits:
        hint = closest(split, list(info.splits))
        raise UnknownNameError(f"dataset {dataset!r} has no split {split!r}"
                               + (f"; did you mean {hint[0]!r}?" if hint else "")
                               + f" (available: {', '.join(info.splits)})")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"limit must be a non-negative integer or None, got {limit!r}")
    raw = _read_source(info, "test" if split == "test" else "train")
    rows = _split_rows(info, split, len(raw.labels), val_size, seed)
    sel = slice(limit) if rows is None else rows[:limit]  # a prefix slice keeps the memory map unread
    pixels, labels, index = raw.pixels[sel], raw.labels[sel], raw.index[sel]
    x = _to_float(torch.from_numpy(pixels), info, torch.device(device), normalize, grayscale)
    return ImageSplit(x=x, y=torch.from_numpy(np.array(labels, dtype=np.int64)).to(device), dataset=dataset,
                      split=split, source=raw.source, normalized=normalize, grayscale=grayscale and info.channels == 3,
                      index=torch.from_numpy(np.array(index, dtype=np.int64)).to(device))


def _read_source(info: DatasetInfo, source_split: str) -> data_sources.RawSplit:
    root = data_sources.data_dir()
    path = root / info.mirror_dir / f"{source_split}.parquet" if root is not None else None
    args = (info.image_column, info.channels, info.size, info.num_classes)
    if path is not None and path.is_file():
        return data_sources.read_parquet_split(path, *args)
    where = f"{path} does not exist (WSBENCH_DATA_DIR={root})" if path is not None else "WSBENCH_DATA_DIR is not set"
    fix = f"set WSBENCH_DATA_DIR to a mirror folder holding {info.mirror_dir}/{source_split}.parquet"
    if info.hub_id is None:
        raise DataError(f"dataset {info.name!r} ({source_split}) is only available from a local mirror: {where}; "
                        f"fix: {fix}")
    try:
        return data_sources.read_hub_split(info.hub_id, source_split, *args)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - network, offline mode, missing repo: all mean "not available"
        msg = " ".join(str(e).split())
        msg = msg if len(msg) <= 300 else msg[:300] + "..."
        raise DataError(f"dataset {info.name!r} ({source_split}) is not available: {where}, and the Hugging Face "
                        f"Hub dataset {info.hub_id!r} could not be loaded ({type(e).__name__}: {msg}); "
                        f"fix: {fix}, or go online") from e


def _split_rows(info: DatasetInfo, split: str, n: int, val_size: int | None, seed: int) -> np.ndarray | None:
    """Row numbers of `split` in its source file (None: all rows, in order)."""
    if split in ("test", "train_full") or (split == "train" and "val" not in info.splits):
        return None
    size = info.default_val_size if val_size is None else val_size
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < n:
        raise ConfigError(f"val_size must be an integer in 0..{n - 1} for {info.name}, got {val_size!r}")
    gen = torch.Generator().manual_seed(seed)
    in_val = np.zeros(n, dtype=bool)
    in_val[torch.randperm(n, generator=gen)[:size].numpy()] = True
    return np.flatnonzero(in_val if split == "val" else ~in_val)


def _to_float(pixels: Tensor, info: DatasetInfo, device: torch.device, normalize: bool, grayscale: bool) -> Tensor:
    """uint8 (N,C,H,W) -> float32 on `device`; the uint8 copy moves (4x less to transfer)."""
    x = pixels.to(device).to(torch.float32).div_(255.0)
    if grayscale and info.channels == 3:
        w = torch.tensor(LUMA_WEIGHTS, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        x = (x * w).sum(1, keepdim=True)
    if not normalize:
        return x
    if grayscale or info.channels == 1:
        mean, std = (info.gray_mean,), (info.gray_std,)
    else:
        mean, std = info.mean, info.std
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def random_crop_flip(x: Tensor, pad: int = 4, generator: torch.Generator | None = None, *,
                     fill: float | Sequence[float] = 0.0) -> Tensor:
    """Random `pad`-pixel-padded crop back to (H, W) plus a horizontal flip with probability 1/2,
    drawn independently per image, for a whole (N, C, H, W) batch at once on its device.

    Padding is `fill` (a scalar or one value per channel). On normalised images 0 is the mean
    colour; torchvision's RandomCrop(32, 4) before Normalize pads black, i.e. fill = -mean/std.
    With a generator, the draws are made on the generator's device, so a seeded CPU generator gives
    the same crops for CPU and GPU batches.
    """
    if x.dim() != 4:
        raise ValueError(f"random_crop_flip expects (N, C, H, W), got shape {tuple(x.shape)}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    n, c, h, w = x.shape
    rng_device = generator.device if generator is not None else x.device
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=rng_device).to(x.device)
    flips = torch.rand(n, generator=generator, device=rng_device).lt(0.5).to(x.device)
    if pad > 0:
        fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1)
        if fill_t.numel() not in (1, c):
            raise ValueError(f"fill must be a scalar or {c} values, got {fill_t.numel()}")
        padded = fill_t.view(1, -1, 1, 1).expand(n, c, h + 2 * pad, w + 2 * pad).contiguous()
        padded[:, :, pad:pad + h, pad:pad + w] = x
    else:
        padded = x
    width = w + 2 * pad
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (N, H) rows of `padded` to take
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (N, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    flat = (rows[:, :, None] * width + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, -1).gather(2, flat).view(n, c, h, w)  # one gather for crop and flip
