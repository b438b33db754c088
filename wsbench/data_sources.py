"""Where images come from: a local parquet mirror or the Hugging Face Hub, decoded once and cached.

A split is read as raw (encoded) image bytes plus labels, decoded with PIL into a uint8
(N, C, H, W) array, and cached as `.npy` in `WSBENCH_CACHE_DIR` (default `~/.cache/wsbench`),
keyed by the source file's resolved path, size and mtime (or by the Hub dataset's fingerprint).
Cached arrays are memory-mapped; a cache file whose shape, dtype or labels do not match is rebuilt.
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import DataError
from .resources import cache_dir

CACHE_FORMAT = 3  # bump when the cached layout changes; old files are then ignored and replaced


@dataclass
class RawSplit:
    """Decoded pixels of one source split (before validation carving, limits, normalisation)."""

    pixels: np.ndarray  # uint8 (N, C, H, W), possibly a read-only-backed memory map
    labels: np.ndarray  # int64 (N,)
    index: np.ndarray  # int64 (N,): position in the original split (the `index` column when present)
    source: str  # parquet path or Hub id


def data_dir() -> Path | None:
    d = os.environ.get("WSBENCH_DATA_DIR")
    return Path(d).expanduser() if d else None


# ---------------------------------------------------------------------------- decoding


def _decode_pil(blob: bytes, channels: int) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as im:
        mode = "RGB" if channels == 3 else "L"
        arr = np.asarray(im if im.mode == mode else im.convert(mode))
    return arr.transpose(2, 0, 1) if arr.ndim == 3 else arr[None]


_JPEG_MAGIC = b"\xff\xd8\xff"


@functools.lru_cache(maxsize=1)
def _jpeg_decoder() -> Any:
    """torchvision's libjpeg-turbo JPEG decoder op, or None (then PIL decodes everything).

    About 2x faster than PIL here and pixel-identical to it on all 60,000 mirror JPEGs; checked
    against PIL on a probe image before use. Called as the registered op because the public
    wrapper (deprecated since torchvision 0.29) warns on every call. Not used for PNG: torchvision
    0.29's PNG decoder crashes the process on some corrupt files instead of raising.
    """
    try:
        import torch
        import torchvision.io  # noqa: F401 - registers torch.ops.image
        from PIL import Image

        op = torch.ops.image.decode_jpeg
        probe = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
        buf = io.BytesIO()
        Image.fromarray(probe).save(buf, format="JPEG")
        ours = op(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8), 0, False).numpy()
        if not np.array_equal(ours, _decode_pil(buf.getvalue(), 3)):
            return None
        return lambda blob: op(torch.frombuffer(bytearray(blob), dtype=torch.uint8), 0, False).numpy()
    except Exception:  # noqa: BLE001 - extension missing, op renamed or removed: use PIL
        return None


def decode_images(blobs: list[bytes], channels: int, size: int, *, workers: int | None = None) -> np.ndarray:
    """Encoded PNG/JPEG bytes -> uint8 (N, C, H, W). Raises ValueError naming the first bad row."""
    n = len(blobs)
    out = np.empty((n, channels, size, size), dtype=np.uint8)
    fast = _jpeg_decoder() if any(b[:3] == _JPEG_MAGIC for b in blobs if b) else None

    def work(lo: int, hi: int) -> None:
        for k in range(lo, hi):
            arr = None
            if fast is not None and blobs[k][:3] == _JPEG_MAGIC:
                try:
                    arr = fast(blobs[k])
                except RuntimeError:
                    arr = None
            if arr is None or arr.shape[0] != channels:  # other format or mode: PIL converts
                try:
                    arr = _decode_pil(blobs[k], channels)
                except Exception as e:  # noqa: BLE001 - PIL raises OSError, ValueError, DecompressionBombError...
                    raise ValueError(f"row {k}: {type(e).__name__}: {e}") from e
            if arr.shape != (channels, size, size):
                raise ValueError(f"row {k}: image of shape {arr.shape}, expected {(channels, size, size)}")
            out[k] = arr

    workers = max(1, workers or min(8, os.cpu_count() or 1))
    step = max(1, -(-n // (workers * 4)))
    with ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(work, lo, min(n, lo + step)) for lo in range(0, n, step)]:
            f.result()
    return out


# ---------------------------------------------------------------------------- tables


def _check_table_schema(schema: pa.Schema, where: str, image_column: str) -> None:
    expected = f"'{image_column}' (struct{{bytes: binary, path: string}}) and 'label' (integer)"
    img = schema.field(image_column) if image_column in schema.names else None
    ok_img = (img is not None and pa.types.is_struct(img.type)
              and img.type.get_field_index("bytes") >= 0
              and (pa.types.is_binary(img.type.field("bytes").type)
                   or pa.types.is_large_binary(img.type.field("bytes").type)))
    ok_label = "label" in schema.names and pa.types.is_integer(schema.field("label").type)
    if not (ok_img and ok_label):
        found = ", ".join(f"{f.name}: {f.type}" for f in schema)
        raise DataError(f"{where}: wrong schema: expected columns {expected}; found {found}")


def _table_to_raw(table: pa.Table, where: str, image_column: str, channels: int, size: int,
                  num_classes: int) -> RawSplit:
    _check_table_schema(table.schema, where, image_column)
    blobs = table.column(image_column).combine_chunks().field("bytes").to_pylist()
    if any(b is None for b in blobs):
        raise DataError(f"{where}: {sum(b is None for b in blobs)} rows have no image bytes")
    labels = table.column("label").to_numpy(zero_copy_only=False).astype(np.int64)
    _check_labels(labels, where, num_classes)
    index = (table.column("index").to_numpy(zero_copy_only=False).astype(np.int64)
             if "index" in table.schema.names else np.arange(len(labels), dtype=np.int64))
    try:
        pixels = decode_images(blobs, channels, size)
    except ValueError as e:
        raise DataError(f"{where}: an image could not be decoded: {e}") from e
    return RawSplit(pixels, labels, index, where)


def _check_labels(labels: np.ndarray, where: str, num_classes: int) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{where}: labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}")


def read_parquet_split(path: Path, image_column: str, channels: int, size: int, num_classes: int) -> RawSplit:
    """Decode a mirror file (cached)."""
    try:
        meta = pq.ParquetFile(path)
        schema, num_rows = meta.schema_arrow, meta.metadata.num_rows
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: not a readable parquet file ({e})") from e
    _check_table_schema(schema, str(path), image_column)
    st, resolved = path.stat(), str(path.resolve())
    key = f"{resolved}|{st.st_size}|{st.st_mtime_ns}"
    stem = f"{path.parent.name}-{path.stem}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}"
    shape = (num_rows, channels, size, size)

    def build() -> RawSplit:
        try:
            table = pq.read_table(path, columns=[c for c in (image_column, "label", "index") if c in schema.names])
        except (OSError, pa.ArrowException) as e:
            raise DataError(f"{path}: could not be read ({e})") from e
        return _table_to_raw(table, str(path), image_column, channels, size, num_classes)

    return _cached(stem, key, shape, num_classes, lambda: portable_source(path), build)


def portable_source(path: Path) -> str:
    """What a record says of a mirror file: its path inside WSBENCH_DATA_DIR (not this machine's
    absolute path) and the first 16 hex digits of its sha256, e.g.
    "cifar10-jpeg/test.parquet sha256:0123456789abcdef"."""
    root = data_dir()
    resolved = path.resolve()
    try:
        name = resolved.relative_to(root.resolve()).as_posix() if root is not None else path.name
    except ValueError:
        name = path.name
    h = hashlib.sha256()
    with open(resolved, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return f"{name} sha256:{h.hexdigest()[:16]}"


def read_hub_split(hub_id: str, split: str, image_column: str, channels: int, size: int,
                   num_classes: int) -> RawSplit:
    """Download (or reuse the `datasets` cache of) a Hub dataset split and decode it (cached).
    Errors propagate unchanged; the caller words the message."""
    import datasets

    ds = datasets.load_dataset(hub_id, split=split)
    if image_column in ds.column_names:
        ds = ds.cast_column(image_column, datasets.Image(decode=False))
    fingerprint = getattr(ds, "_fingerprint", None) or f"{hub_id}-{split}-{ds.num_rows}"
    shape = (ds.num_rows, channels, size, size)
    where = f"{hub_id} ({split})"

    def build() -> RawSplit:
        table = ds.with_format("arrow")[:]
        return _table_to_raw(table, where, image_column, channels, size, num_classes)

    return _cached(f"hub-{hub_id.replace('/', '--')}-{split}", f"hub|{hub_id}|{split}|{fingerprint}",
                   shape, num_classes, lambda: hub_id, build)


# ---------------------------------------------------------------------------- cache


def _cached(stem: str, key: str, shape: tuple[int, ...], num_classes: int, describe: Any, build: Any) -> RawSplit:
    """The decoded split from the cache, else `build()` and cache it. `describe()` names the source in
    records (computed on a miss only, e.g. a file checksum, and kept in the cache)."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{key}".encode()).hexdigest()[:16]
    root = cache_dir()
    px_path, meta_path = root / f"{stem}-{digest}.pixels.npy", root / f"{stem}-{digest}.labels.npz"
    hit = _load_cache(px_path, meta_path, shape, num_classes)
    if hit is not None:
        return hit
    raw = build()
    raw.source = source = describe()
    if raw.pixels.shape != shape:
        raise DataError(f"{source}: decoded {raw.pixels.shape[0]} images, expected {shape[0]}")
    try:
        root.mkdir(parents=True, exist_ok=True)
        checksum = np.array(_pixels_sha256(raw.pixels))
        _atomic_save(meta_path, lambda f: np.savez(f, labels=raw.labels, index=raw.index, source=np.array(source),
                                                   pixels_sha256=checksum))
        _atomic_save(px_path, lambda f: np.save(f, raw.pixels))
        for old in root.glob(f"{stem}-*"):  # earlier versions of the same source (older mtime or size)
            if old not in (px_path, meta_path) and not old.name.endswith(".tmp"):
                old.unlink(missing_ok=True)
    except OSError as e:
        warnings.warn(f"wsbench: could not write the image cache in {root} ({e}); "
                      "set WSBENCH_CACHE_DIR to a writable folder to avoid decoding again", stacklevel=3)
    return raw


def _load_cache(px_path: Path, meta_path: Path, shape: tuple[int, ...], num_classes: int) -> RawSplit | None:
    """The cached split, or None when absent or not exactly what it should be."""
    if not (px_path.exists() and meta_path.exists()):
        return None
    try:
        pixels = np.load(px_path, mmap_mode="c", allow_pickle=False)
        with np.load(meta_path, allow_pickle=False) as meta:
            labels, index, source = meta["labels"], meta["index"], str(meta["source"])
            checksum = str(meta["pixels_sha256"])
    except (OSError, ValueError, KeyError, EOFError):
        return None
    n = shape[0]
    if (pixels.shape != shape or pixels.dtype != np.uint8 or labels.shape != (n,) or labels.dtype != np.int64
            or index.shape != (n,) or index.dtype != np.int64):
        return None
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        return None
    if _pixels_sha256(pixels) != checksum:  # a damaged cache would silently score every network at chance
        warnings.warn(f"wsbench: the image cache {px_path} does not match its checksum; decoding again", stacklevel=4)
        return None
    return RawSplit(pixels, labels, index, source)


def _pixels_sha256(pixels: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(pixels)).cast("B")).hexdigest()


def _atomic_save(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
