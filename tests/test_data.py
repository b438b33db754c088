"""wsbench.data: tiny parquet mirrors written here, the real mirror when present, augmentation."""
from __future__ import annotations

import hashlib

import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

import wsbench.data_sources as sources
from wsbench.archs.resnet_cifar import CIFAR_MEAN, CIFAR_STD
from wsbench.data import (CIFAR10_GRAY_MEAN, CIFAR10_GRAY_STD, DATASETS, LUMA_WEIGHTS, ImageSplit, dataset_info,
                          load_split, random_crop_flip)
from wsbench.errors import ConfigError, DataError, UnknownNameError

from data_paths import DATA_DIR as REAL  # noqa: E402
needs_real = pytest.mark.skipif(not (REAL / "mnist" / "test.parquet").is_file(), reason=f"no data mirror at {REAL}")


def _encode(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def write_hf_parquet(path: Path, pixels: np.ndarray, labels: list[int], column: str = "img",
                     class_names: tuple[str, ...] = tuple(DATASETS["cifar10"].class_names)) -> None:
    """pixels: uint8 (N, H, W, 3) or (N, H, W); written like the Hub's parquet files."""
    blobs = [_encode(p) for p in pixels]
    img = pa.StructArray.from_arrays([pa.array(blobs, pa.binary()), pa.array([f"{i}.png" for i in range(len(blobs))])],
                                     names=["bytes", "path"])
    features = {column: {"_type": "Image"}, "label": {"names": list(class_names), "_type": "ClassLabel"}}
    table = pa.table({column: img, "label": pa.array(labels, pa.int64())})
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("WSBENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def mirror(tmp_path, monkeypatch, cache) -> dict:
    """cifar10 (12 train, 5 test RGB images) and mnist (6 test images) in tmp_path/mirror."""
    rng = np.random.default_rng(0)
    px = {s: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for s, n in [("train", 12), ("test", 5)]}
    ys = {"train": [i % 10 for i in range(12)], "test": [3, 8, 8, 0, 6]}
    root = tmp_path / "mirror"
    for s in px:
        write_hf_parquet(root / "cifar10-jpeg" / f"{s}.parquet", px[s], ys[s])
    mn = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    write_hf_parquet(root / "mnist" / "test.parquet", mn, [7, 2, 1, 0, 4, 1], column="image",
                     class_names=tuple(str(i) for i in range(10)))
    monkeypatch.setenv("WSBENCH_DATA_DIR", str(root))
    return {"root": root, "cifar": px, "y": ys, "mnist": mn}


def _chw(px: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(px).permute(0, 3, 1, 2).float() / 255


# ----------------------------------------------------------------------------- tiny mirror


def test_tiny_mirror_shapes_labels_and_normalisation(mirror):
    raw = load_split("cifar10", "test", normalize=False)
    assert isinstance(raw, ImageSplit) and len(raw) == 5 and raw.x.shape == (5, 3, 32, 32)
    assert raw.x.dtype == torch.float32 and raw.y.dtype == torch.int64 and not raw.normalized
    assert raw.y.tolist() == mirror["y"]["test"]
    assert torch.equal(raw.x, _chw(mirror["cifar"]["test"]))  # PNG is lossless
    digest = hashlib.sha256((mirror["root"] / "cifar10-jpeg" / "test.parquet").read_bytes()).hexdigest()[:16]
    assert raw.source == f"cifar10-jpeg/test.parquet sha256:{digest}"  # no machine path in records
    assert load_split("cifar10", "test").source == raw.source  # the same from the cache
    norm = load_split("cifar10", "test")
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    assert norm.normalized and torch.allclose(norm.x, (raw.x - mean) / std, atol=1e-6)

    mn = load_split("mnist", "test")
    assert mn.x.shape == (6, 1, 28, 28) and mn.y.tolist() == [7, 2, 1, 0, 4, 1]
    expected = (torch.from_numpy(mirror["mnist"]).float()[:, None] / 255 - 0.1307) / 0.3081
    assert torch.allclose(mn.x, expected, atol=1e-6)


def test_grayscale_is_bt601_luma_with_gray_stats(mirror):
    g = load_split("cifar10", "test", grayscale=True, normalize=False)
    rgb = _chw(mirror["cifar"]["test"])
    luma = (rgb * torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)).sum(1, keepdim=True)
    assert g.x.shape == (5, 1, 32, 32) and g.grayscale and torch.allclose(g.x, luma, atol=1e-6)
    gn = load_split("cifar10", "test", grayscale=True)
    assert torch.allclose(gn.x, (luma - CIFAR10_GRAY_MEAN) / CIFAR10_GRAY_STD, atol=1e-5)
    assert torch.equal(load_split("mnist", "test", grayscale=True).x, load_split("mnist", "test").x)


def test_val_and_train_partition_train_full_deterministically(mirror):
    full = load_split("cifar10", "train_full", normalize=False)
    val = load_split("cifar10", "val", val_size=4, seed=3, normalize=False)
    train = load_split("cifar10", "train", val_size=4, seed=3, normalize=False)
    assert (len(full), len(val), len(train)) == (12, 4, 8)
    vi, ti = set(val.index.tolist()), set(train.index.tolist())
    assert not vi & ti and vi | ti == set(range(12))
    assert torch.equal(full.x[val.index], val.x) and torch.equal(full.y[train.index], train.y)
    assert train.index.tolist() == sorted(ti)  # original order kept
    again = load_split("cifar10", "val", val_size=4, seed=3, normalize=False)
    assert torch.equal(again.x, val.x) and torch.equal(again.index, val.index)
    expected = torch.randperm(12, generator=torch.Generator().manual_seed(3))[:4].sort().values
    assert val.index.tolist() == expected.tolist()  # documented recipe: randperm seeded with `seed`
    others = {tuple(load_split("cifar10", "val", val_size=4, seed=s).index.tolist()) for s in range(5)}
    assert len(others) > 1


def test_limit_and_bad_values(mirror):
    assert load_split("cifar10", "test", limit=2).y.tolist() == [3, 8]
    assert len(load_split("cifar10", "test", limit=100)) == 5 and len(load_split("cifar10", "test", limit=0)) == 0
    assert len(load_split("cifar10", "train", val_size=4, limit=3)) == 3
    with pytest.raises(ConfigError, match="val_size"):
        load_split("cifar10", "val", val_size=12)  # default 5,000 is too many for 12 images as well
    with pytest.raises(ConfigError, match="limit"):
        load_split("cifar10", "test", limit=-1)


def test_to_device_and_len(mirror):
    s = load_split("mnist", "test")
    moved = s.to("cpu")
    assert len(moved) == 6 and moved.dataset == "mnist" and moved.split == "test" and torch.equal(moved.x, s.x)


def test_names_are_checked_with_suggestions():
    with pytest.raises(UnknownNameError, match="did you mean 'cifar10'"):
        dataset_info("cifar1")
    with pytest.raises(UnknownNameError, match="did you mean 'fashion_mnist'"):
        load_split("fashion-mnist")
    with pytest.raises(UnknownNameError, match=r"no split 'val'.*available: train, test"):
        load_split("cifar10_exact", "val")
    info = dataset_info("cifar10")
    assert info.mirror_dir == "cifar10-jpeg" and info.hub_id == "uoft-cs/cifar10" and info.num_classes == 10
    assert DATASETS["cifar10_exact"].hub_id is None and DATASETS["fashion_mnist"].mirror_dir == "fashion-mnist"


# ----------------------------------------------------------------------------- cache


def test_cache_is_used_then_rebuilt_when_corrupt_or_stale(mirror, cache, monkeypatch):
    first = load_split("cifar10", "test", normalize=False)
    files = sorted(cache.glob("cifar10-jpeg-test-*"))
    assert [f.name.split(".", 1)[1] for f in files] == ["labels.npz", "pixels.npy"]

    def no_decoding(*a, **k):
        raise AssertionError("decoded although the cache is valid")

    with monkeypatch.context() as m:
        m.setattr(sources, "decode_images", no_decoding)
        assert torch.equal(load_split("cifar10", "test", normalize=False).x, first.x)
    px = next(f for f in files if f.name.endswith(".pixels.npy"))
    px.write_bytes(px.read_bytes()[:1000])  # truncated: must not be trusted
    assert torch.equal(load_split("cifar10", "test", normalize=False).x, first.x)
    np.save(px, np.zeros((5, 3, 32, 16), np.uint8))  # readable but the wrong shape
    assert torch.equal(load_split("cifar10", "test", normalize=False).x, first.x)
    flipped = np.load(px)  # right shape and dtype, damaged content (one pixel): scored at chance before
    flipped[0, 0, 0, 0] ^= 0xFF
    np.save(px, flipped)
    with pytest.warns(UserWarning, match="does not match its checksum"):
        assert torch.equal(load_split("cifar10", "test", normalize=False).x, first.x)

    src = mirror["root"] / "cifar10-jpeg" / "test.parquet"  # the source changes: new key, old files removed
    write_hf_parquet(src, mirror["cifar"]["test"][:3], [1, 2, 3])
    os.utime(src, ns=(1, 1))
    assert load_split("cifar10", "test").y.tolist() == [1, 2, 3]
    assert len(list(cache.glob("cifar10-jpeg-test-*"))) == 2


def test_unwritable_cache_still_loads(mirror, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("WSBENCH_CACHE_DIR", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="could not write the image cache"):
        assert load_split("cifar10", "test").y.tolist() == [3, 8, 8, 0, 6]


# ----------------------------------------------------------------------------- bad files, missing data


def test_wrong_schema_and_unreadable_files(mirror):
    path = mirror["root"] / "cifar10-jpeg" / "test.parquet"
    pq.write_table(pa.table({"pixels": [b"x"], "label": [1]}), path)
    with pytest.raises(DataError, match="wrong schema") as err:
        load_split("cifar10", "test")
    assert str(path) in str(err.value) and "'img'" in str(err.value) and "'label'" in str(err.value)
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="not a readable parquet file"):
        load_split("cifar10", "test")
    write_hf_parquet(path, mirror["cifar"]["test"][:2, :16], [0, 1])  # 16x32 images
    with pytest.raises(DataError, match=r"could not be decoded.*row 0"):
        load_split("cifar10", "test")


def test_no_mirror_and_offline_names_both(tmp_path, monkeypatch, cache):
    import datasets
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("WSBENCH_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    for mod, attr in [(datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE"),
                      (hub_constants, "HF_HUB_OFFLINE")]:
        if hasattr(mod, attr):
            monkeypatch.setattr(mod, attr, True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf_hub"))
    with pytest.raises(DataError) as err:
        load_split("mnist", "test")
    msg = str(err.value)
    assert "WSBENCH_DATA_DIR" in msg and "ylecun/mnist" in msg and str(tmp_path / "empty") in msg
    with pytest.raises(DataError, match=r"only available from a local mirror.*cifar10-exact-subset/test\.parquet"):
        load_split("cifar10_exact", "test")
    monkeypatch.delenv("WSBENCH_DATA_DIR")
    with pytest.raises(DataError, match="WSBENCH_DATA_DIR is not set.*ylecun/mnist"):
        load_split("mnist", "test")


def test_hub_fallback_decodes_the_hub_dataset(tmp_path, monkeypatch, cache):
    import datasets

    rng = np.random.default_rng(1)
    px = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    write_hf_parquet(tmp_path / "hub.parquet", px, [5, 6, 7, 8], column="image",
                     class_names=tuple(str(i) for i in range(10)))
    calls = []

    def fake_load_dataset(hub_id, split):
        calls.append((hub_id, split))
        return datasets.Dataset.from_parquet(str(tmp_path / "hub.parquet"), cache_dir=str(tmp_path / "hf"))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setenv("WSBENCH_DATA_DIR", str(tmp_path / "empty"))
    s = load_split("fashion_mnist", "test", normalize=False)
    assert calls == [("zalando-datasets/fashion_mnist", "test")] and s.source == "zalando-datasets/fashion_mnist"
    assert s.y.tolist() == [5, 6, 7, 8] and torch.equal(s.x, torch.from_numpy(px).float()[:, None] / 255)


def test_jpeg_fast_path_matches_pil():
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    blobs = [_encode(i, "JPEG") for i in imgs] + [_encode(imgs[0]), _encode(imgs[1][..., 0], "JPEG")]
    ours = sources.decode_images(blobs, 3, 32, workers=2)
    pil = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")).transpose(2, 0, 1) for b in blobs])
    assert np.array_equal(ours, pil)  # incl. a PNG and a grayscale JPEG (PIL converts those)


# ----------------------------------------------------------------------------- real mirror


@pytest.fixture
def real(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("WSBENCH_DATA_DIR", str(REAL))
    monkeypatch.setenv("WSBENCH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "image_cache"))


@needs_real
def test_real_mnist_test_set(real):
    s = load_split("mnist", "test")
    assert s.x.shape == (10000, 1, 28, 28)
    assert torch.bincount(s.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(load_split("mnist", "test", normalize=False).x.mean().item() - 0.1325) < 1e-3


@needs_real
def test_real_cifar10_exact_matches_cifar10_rows(real):
    exact = load_split("cifar10_exact", "test", normalize=False)
    assert len(exact) == 1017 and exact.y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert exact.index.tolist() == list(range(1017)) and exact.source.startswith("cifar10-exact-subset/test.parquet sha256:")
    jpeg = load_split("cifar10", "test", normalize=False)
    assert len(jpeg) == 10000 and torch.equal(jpeg.y[exact.index], exact.y)
    mad = (jpeg.x[exact.index] - exact.x).abs().mean().item() * 255
    assert 4 < mad < 8  # the README's 5.8: same images, JPEG-compressed


@needs_real
@pytest.mark.slow
def test_grayscale_stats_match_data(real):
    g = load_split("cifar10", "train_full", grayscale=True, normalize=False).x.double()
    assert abs(g.mean().item() - CIFAR10_GRAY_MEAN) < 1e-4 and abs(g.std().item() - CIFAR10_GRAY_STD) < 1e-4


# ----------------------------------------------------------------------------- augmentation


def _reference_crops(img: torch.Tensor, pad: int, fill: float) -> list[torch.Tensor]:
    """Every crop/flip torchvision-style augmentation can produce for one (C, H, W) image."""
    c, h, w = img.shape
    padded = torch.full((c, h + 2 * pad, w + 2 * pad), fill)
    padded[:, pad:pad + h, pad:pad + w] = img
    crops = [padded[:, i:i + h, j:j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]
    return crops + [cr.flip(-1) for cr in crops]


def test_random_crop_flip_hand_made_example():
    img = torch.arange(2 * 4 * 5, dtype=torch.float32).view(2, 4, 5)  # distinct values: crops are identifiable
    out = random_crop_flip(img.expand(400, -1, -1, -1), pad=1, generator=torch.Generator().manual_seed(0), fill=-1.0)
    cands = _reference_crops(img, 1, -1.0)
    hits = [next(k for k, c in enumerate(cands) if torch.equal(o, c)) for o in out]  # StopIteration if not a crop
    assert out.shape == (400, 2, 4, 5) and len(set(hits)) == len(cands) == 18  # all 9 offsets x 2 flips seen
    flipped = sum(h >= 9 for h in hits)
    assert 140 < flipped < 260
    one = random_crop_flip(img[None], pad=0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(one[0], img) or torch.equal(one[0], img.flip(-1))


def test_random_crop_flip_is_deterministic_and_keeps_shape():
    x = torch.randn(16, 3, 32, 32)
    a = random_crop_flip(x, generator=torch.Generator().manual_seed(5))
    b = random_crop_flip(x, generator=torch.Generator().manual_seed(5))
    c = random_crop_flip(x, generator=torch.Generator().manual_seed(6))
    assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(a, b) and not torch.equal(a, c)
    u8 = random_crop_flip((x * 40 + 128).clamp(0, 255).to(torch.uint8), fill=(1, 2, 3))
    assert u8.dtype == torch.uint8 and u8.shape == x.shape
    with pytest.raises(ValueError, match="fill"):
        random_crop_flip(x, fill=(1.0, 2.0))
    with pytest.raises(ValueError, match="pad"):
        random_crop_flip(x, pad=-1)


@pytest.mark.gpu
def test_gpu_load_and_augment_match_cpu(mirror):
    cpu = load_split("cifar10", "test")
    gpu = load_split("cifar10", "test", device="cuda")
    assert gpu.x.is_cuda and torch.allclose(gpu.x.cpu(), cpu.x, atol=1e-6)
    a = random_crop_flip(cpu.x, generator=torch.Generator().manual_seed(0))
    b = random_crop_flip(gpu.x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b.cpu())
