"""The Small CNN Zoo (Unterthiner et al. 2020, google-research/dnn_predict_accuracy), one dataset folder:

    weights.npy      float32 [n_checkpoints, 4970]: every checkpoint's variables flattened and concatenated
    metrics.csv.gz   one row per checkpoint: config.* hyper-parameters, step (the epoch), modeldir,
                     train/test accuracy and loss (first column: the checkpoint's path, may be unnamed)
    layout.csv       varname, start_idx, end_idx, shape: where each Keras variable lies in a weights row

Keras kernels are [kh, kw, in, out] (conv) and [in, out] (dense); they are transposed to PyTorch's
[out, in, kh, kw] / [out, in]. The networks used Keras 'valid' padding (no padding); wsbench's
`small_cnn` pads by 1, so the card says whether running a member reproduces the published accuracy.
"""
from __future__ import annotations

import ast
import inspect
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..errors import DataError, IntegrityError
from ..zoo_card import assign_splits
from .common import READERS, ReaderResult, imported_card

FILES = ("weights.npy", "metrics.csv.gz", "layout.csv")
HPARAMS = {"config.optimizer": "optimizer", "config.learning_rate": "lr", "config.l2reg": "weight_decay",
           "config.dropout": "dropout", "config.init_std": "init_scale", "config.w_init": "init",
           "config.b_init": "b_init", "config.activation": "activation", "config.train_fraction": "train_fraction",
           "config.random_seed": "seed", "config.dataset": "dataset"}
METRICS = {"train_accuracy": "train_acc", "test_accuracy": "test_acc", "train_loss": "train_loss", "test_loss": "test_loss"}
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
DATASETS = {"mnist": "mnist", "fashion_mnist": "fashion_mnist", "cifar10": "cifar10", "svhn_cropped": "svhn"}


def _layers(layout: pd.DataFrame, width: int, where: Path) -> list[dict]:
    need = {"varname", "start_idx", "end_idx", "shape"}
    if not need <= set(layout.columns):
        raise IntegrityError(f"{where}: layout.csv needs columns {sorted(need)}, has {list(layout.columns)}")
    layers: dict[str, dict] = {}
    for _, r in layout.sort_values("start_idx").iterrows():
        try:
            shape = tuple(int(s) for s in ast.literal_eval(str(r["shape"])))
        except (ValueError, SyntaxError, TypeError):
            raise IntegrityError(f"{where}: layout.csv shape {r['shape']!r} of {r['varname']} is not a tuple") from None
        start, end, var = int(r["start_idx"]), int(r["end_idx"]), str(r["varname"])
        if end - start != math.prod(shape) or not 0 <= start < end <= width:
            raise IntegrityError(f"{where}: layout.csv entry {var} [{start}:{end}] does not fit shape {shape} / width {width}")
        layer, _, leaf = var.rpartition("/")
        kind = "kernel" if leaf.startswith("kernel") else "bias" if leaf.startswith("bias") else None
        if kind is None:
            raise IntegrityError(f"{where}: layout.csv variable {var!r} is neither a kernel nor a bias")
        layers.setdefault(layer, {"name": layer, "first": start})[kind] = (start, end, shape)
    out = sorted(layers.values(), key=lambda d: d["first"])
    covered = sum(e - s for lay in out for (s, e, _) in (lay.get("kernel", (0, 0, ())), lay.get("bias", (0, 0, ()))))
    if covered != width or any("kernel" not in lay or "bias" not in lay for lay in out):
        raise IntegrityError(f"{where}: layout.csv does not cover the {width} weights with kernel+bias pairs")
    return out


def read_small_cnn_zoo(path: Path, name: str, *, limit: int | None = None) -> ReaderResult:
    if path.is_file():
        path = path.parent
    for f in FILES:
        if not (path / f).exists():
            raise DataError(f"small_cnn_zoo: {path} lacks {f} (expected {', '.join(FILES)})")
    try:
        w = np.load(path / "weights.npy", mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise IntegrityError(f"{path / 'weights.npy'}: not a plain numeric .npy array ({e}); refusing to unpickle") from None
    if w.ndim != 2 or w.dtype.kind != "f":
        raise IntegrityError(f"{path / 'weights.npy'}: expected a 2-D float array, got {w.dtype} {w.shape}")
    layers = _layers(pd.read_csv(path / "layout.csv"), w.shape[1], path / "layout.csv")
    convs = [lay for lay in layers if len(lay["kernel"][2]) == 4]
    dense = [lay for lay in layers if len(lay["kernel"][2]) == 2]
    if len(dense) != 1 or len(convs) + 1 != len(layers) or layers[-1] is not dense[0]:
        raise IntegrityError(f"{path}: expected conv layers followed by one dense layer, got {[l['name'] for l in layers]}")
    in_ch, channels = convs[0]["kernel"][2][2], convs[0]["kernel"][2][3]
    if any(c["kernel"][2][:2] != (3, 3) or c["kernel"][2][3] != channels for c in convs):
        raise IntegrityError(f"{path}: small_cnn needs 3x3 convs of equal width, got {[c['kernel'][2] for c in convs]}")
    metrics = pd.read_csv(path / "metrics.csv.gz")
    if len(metrics) != w.shape[0]:
        raise IntegrityError(f"{path}: metrics.csv.gz has {len(metrics)} rows, weights.npy {w.shape[0]}")
    first = metrics.columns[0]
    ckpt = metrics[first].astype(str) if first.startswith("Unnamed") or first in ("", "ckpt", "checkpoint") else None
    if "modeldir" in metrics.columns:
        run_key = metrics["modeldir"].astype(str)
    elif ckpt is not None:
        run_key = ckpt.str.rsplit("/", n=1).str[0]
    else:
        run_key = pd.Series([str(i) for i in range(len(metrics))])
    run_index = pd.factorize(run_key)[0]
    keep = np.flatnonzero(run_index < limit) if limit else np.arange(len(metrics))
    finite = np.ones(len(metrics), dtype=bool)
    for i in range(0, len(keep), 4096):
        rows = keep[i:i + 4096]
        finite[rows] = np.isfinite(np.asarray(w[rows], dtype=np.float32)).all(1)
    diverged_runs = set(run_index[keep][~finite[keep]].tolist())
    n_considered = len(keep)
    keep = keep[finite[keep]]
    sel = np.asarray(w[keep], dtype=np.float32)
    tensors = {}
    for i, lay in enumerate(layers):
        (ks, ke, kshape), (bs, be, _) = lay["kernel"], lay["bias"]
        k = torch.from_numpy(np.ascontiguousarray(sel[:, ks:ke])).view(len(keep), *kshape)
        key = f"convs.{i}" if i < len(convs) else "fc"
        tensors[f"{key}.weight"] = (k.permute(0, 4, 3, 1, 2) if k.dim() == 5 else k.permute(0, 2, 1)).contiguous()
        tensors[f"{key}.bias"] = torch.from_numpy(np.ascontiguousarray(sel[:, bs:be]))
    m = metrics.iloc[keep].reset_index(drop=True)
    df = pd.DataFrame({"run_index": run_index[keep], "source_row": keep})
    df["run_id"] = [f"r{i:06d}" for i in df["run_index"]]
    df["epoch"] = m["step"].astype(int).to_numpy() if "step" in m else 0
    df["id"] = df["run_id"] + "_e" + df["epoch"].astype(str).str.zfill(3)
    dup = df["id"].duplicated(keep=False)
    df.loc[dup, "id"] = df.loc[dup, "id"] + "_" + df.loc[dup, "source_row"].astype(str)
    for src, dst in {**HPARAMS, **METRICS}.items():
        if src in m:
            df[dst] = m[src].to_numpy()
    if "train_acc" in df and "test_acc" in df:
        df["gen_gap"] = df["train_acc"] - df["test_acc"]
    if "modeldir" in m:
        df["modeldir"] = m["modeldir"].astype(str).to_numpy()
    df["diverged"] = df["run_index"].isin(diverged_runs)
    by_run = assign_splits(df["run_index"].unique(), SPLIT_FRACTIONS, seed=0)
    df["split"] = [by_run[int(i)] for i in df["run_index"]]
    df["group"], df["row"] = "cnn", np.arange(len(df))
    kwargs = {"in_channels": in_ch, "num_classes": dense[0]["kernel"][2][1], "channels": channels, "n_conv": len(convs)}
    from ..archs.small_cnn import small_cnn

    faithful = "padding" in inspect.signature(small_cnn).parameters
    if faithful:
        kwargs["padding"] = 0
    dataset = DATASETS.get(str(df["dataset"].iloc[0]), str(df["dataset"].iloc[0])) if "dataset" in df and len(df) else "unknown"
    note = ("" if faithful else " Caveat: the original networks use Keras 'valid' padding, wsbench's small_cnn pads "
            "by 1, so running these weights with small_cnn does not reproduce the published accuracies.")
    card = imported_card(
        name, "small_cnn_zoo", kind="cnn", dataset=dataset, archs={"cnn": {"arch": "small_cnn", "kwargs": kwargs}},
        source=path, description=f"Small CNN Zoo (Unterthiner et al. 2020) imported from {path}: {len(df)} checkpoints "
        f"of {df['run_index'].nunique()} runs; Keras kernels transposed to PyTorch layout.{note}",
        recipe={"member_arch_kwargs": {"activation": "activation", "dropout": "dropout"}, "keras_padding": "valid",
                "left_out_non_finite": n_considered - len(df)},
        license="CC-BY 4.0 (Small CNN Zoo dataset)", splits={"by": "run_id", "fractions": SPLIT_FRACTIONS, "seed": 0},
        citation="Unterthiner et al., \"Predicting Neural Network Accuracy from Weights\", arXiv 2002.11448")
    return card, df, {"cnn": tensors}


READERS.add("small_cnn_zoo", read_small_cnn_zoo)
