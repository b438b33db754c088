"""Model Zoos (Schuerholt et al., NeurIPS 2022 Datasets and Benchmarks; ModelZoos/ModelZooDataset):
a zoo folder holds one Ray Tune trial folder per model,

    <model>/params.json                       the config: model::type, model::nlin, optim::lr, seed, ...
    <model>/result.json                       JSON lines, one per epoch: training_iteration, train/test acc and loss
    <model>/checkpoint_000010/checkpoints     torch.save(model.state_dict()), keys module_list.<i>.weight/bias

Checkpoints are read with `torch.load(weights_only=True)` (never unrestricted pickle). The networks are
the zoos' small CNNs (def_net.py CNN, CNN2, CNN3: three conv blocks and two linear layers in one
`module_list`), registered here as the architecture `modelzoo_cnn`, whose state-dict keys match the
checkpoints. A checkpoint's metrics are the result.json line whose training_iteration equals its epoch.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..errors import DataError, IntegrityError
from ..archs.symmetry import declare_symmetry, plain_chain_groups
from ..registry import ARCHS
from ..zoo_card import assign_splits
from .common import READERS, ReaderResult, imported_card, load_tensor_checkpoint

# (out channels, kernel, max-pool after) per conv block, and whether every block has a Dropout module
# regardless of the rate (CNN3 adds them unconditionally in the original code)
LAYOUTS = {"CNN": ([(8, 5, True), (6, 5, True), (4, 2, False)], False),
           "CNN2": ([(6, 5, True), (9, 5, True), (6, 2, False)], False),
           "CNN3": ([(16, 3, True), (32, 3, True), (15, 3, True)], True)}
NONLIN = {"leakyrelu": nn.LeakyReLU, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "silu": nn.SiLU,
          "gelu": nn.GELU}
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
_CKPT = re.compile(r"^checkpoint_(\d+)$")


class ModelZooCNN(nn.Module):
    def __init__(self, model_type: str = "CNN", channels_in: int = 1, fc_in: int = 36, hidden: int = 20,
                 num_classes: int = 10, nlin: str = "leakyrelu", dropout: float = 0.0) -> None:
        super().__init__()
        if model_type not in LAYOUTS:
            raise ValueError(f"model_type must be one of {sorted(LAYOUTS)}, got {model_type!r}")
        if nlin not in NONLIN:
            raise ValueError(f"nlin must be one of {sorted(NONLIN)}, got {nlin!r}")
        blocks, always_dropout = LAYOUTS[model_type]
        mods: list[nn.Module] = []
        c = channels_in
        for j, (out, k, pool) in enumerate(blocks):
            mods.append(nn.Conv2d(c, out, k))
            if pool:
                mods.append(nn.MaxPool2d(2, 2))
            mods.append(NONLIN[nlin]())
            if always_dropout or (dropout > 0 and j < len(blocks) - 1):
                mods.append(nn.Dropout(dropout))
            c = out
        mods += [nn.Flatten(), nn.Linear(fc_in, hidden), NONLIN[nlin]()]
        if always_dropout or dropout > 0:
            mods.append(nn.Dropout(dropout))
        mods.append(nn.Linear(hidden, num_classes))
        self.module_list = nn.ModuleList(mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.module_list:
            x = m(x)
        return x


def _example_images(model: nn.Module, n: int) -> torch.Tensor:
    channels = model.module_list[0].in_channels  # MNIST-like 1 x 28 x 28, CIFAR-like 3 x 32 x 32
    size = 28 if channels == 1 else 32
    return torch.randn(n, channels, size, size)


@declare_symmetry(plain_chain_groups, _example_images)  # conv-pool-act chain: derived, flatten breaks the tie
def modelzoo_cnn(**kwargs: Any) -> ModelZooCNN:
    return ModelZooCNN(**kwargs)


if "modelzoo_cnn" not in ARCHS._entries:  # noqa: SLF001 (no registry look-up: it would import builtins)
    ARCHS.add("modelzoo_cnn", modelzoo_cnn)


def _read_results(folder: Path) -> dict[int, dict[str, Any]]:
    f = folder / "result.json"
    out: dict[int, dict[str, Any]] = {}
    if not f.exists():
        return out
    for n, line in enumerate(f.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"model_zoos: {f} line {n + 1} is not JSON ({e})") from None
        out[int(r.get("training_iteration", n))] = r
    return out


def _config(folder: Path, results: dict[int, dict[str, Any]]) -> dict[str, Any]:
    f = folder / "params.json"
    if f.exists():
        try:
            return json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"model_zoos: {f} is not JSON ({e})") from None
    for r in results.values():
        if isinstance(r.get("config"), dict):
            return r["config"]
    raise DataError(f"model_zoos: {folder} has neither params.json nor a config in result.json")


def _metric(r: dict[str, Any] | None, key: str) -> float:
    v = (r or {}).get(key)
    return float("nan") if v is None or v == -999 else float(v)


def read_model_zoos(path: Path, name: str, *, limit: int | None = None) -> ReaderResult:
    folders = sorted(p for p in path.iterdir() if p.is_dir() and ((p / "params.json").exists() or (p / "result.json").exists()))
    if not folders:
        raise DataError(f"model_zoos: {path} has no model folders (with params.json or result.json)")
    rows, groups, tensors, dropped = [], {}, {}, 0
    for mi, folder in enumerate(folders[:limit]):
        results = _read_results(folder)
        cfg = _config(folder, results)
        mtype = cfg.get("model::type", "CNN")
        if mtype not in LAYOUTS:
            raise DataError(f"model_zoos: {folder}: model::type {mtype!r} is not supported (supported: {sorted(LAYOUTS)})")
        ckpts = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT.match(p.name)))
        diverged = False
        for epoch, ck in ckpts:
            f = ck / "checkpoints"
            if not f.exists():
                continue
            sd = load_tensor_checkpoint(f, "model_zoos")
            if not all(torch.isfinite(v).all() for v in sd.values()):
                dropped, diverged = dropped + 1, True
                continue
            dropout = float(cfg.get("model::dropout", 0.0) or 0.0)
            kw = {"model_type": mtype, "channels_in": int(cfg.get("model::channels_in", sd["module_list.0.weight"].shape[1])),
                  "dropout": dropout if (dropout > 0 or LAYOUTS[mtype][1]) else 0.0}
            fc = [k for k in sd if k.endswith("weight") and sd[k].dim() == 2]
            if len(fc) != 2:
                raise IntegrityError(f"model_zoos: {f} has {len(fc)} linear layers, expected 2")
            kw.update(fc_in=sd[fc[0]].shape[1], hidden=sd[fc[0]].shape[0], num_classes=sd[fc[1]].shape[0])
            group = f"{mtype.lower()}_c{kw['channels_in']}" + ("_dropout" if kw["dropout"] > 0 and not LAYOUTS[mtype][1] else "")
            ref = ModelZooCNN(**kw).state_dict()
            if {k: tuple(v.shape) for k, v in ref.items()} != {k: tuple(v.shape) for k, v in sd.items()}:
                raise IntegrityError(f"model_zoos: {f} does not match {mtype} (keys/shapes {sorted(sd)} vs {sorted(ref)})")
            groups.setdefault(group, {"arch": "modelzoo_cnn", "kwargs": {**kw, "nlin": cfg.get("model::nlin", "leakyrelu")}})
            tensors.setdefault(group, []).append({k: v.float() for k, v in sd.items()})
            r = results.get(epoch)
            rows.append({"id": f"m{mi:05d}_e{epoch:03d}", "group": group, "row": len(tensors[group]) - 1,
                         "run_id": f"m{mi:05d}", "run_index": mi, "model_dir": folder.name, "epoch": epoch,
                         "train_acc": _metric(r, "train_acc"), "test_acc": _metric(r, "test_acc"),
                         "train_loss": _metric(r, "train_loss"), "test_loss": _metric(r, "test_loss"),
                         "optimizer": cfg.get("optim::optimizer"), "lr": cfg.get("optim::lr"),
                         "weight_decay": cfg.get("optim::wd"), "dropout": dropout,
                         "activation": cfg.get("model::nlin", "leakyrelu"), "init": cfg.get("model::init_type"),
                         "seed": cfg.get("seed"), "batch_size": cfg.get("training::batchsize"),
                         "config_json": json.dumps(cfg, sort_keys=True, default=str)})
        if diverged:
            for row in rows:
                if row["run_index"] == mi:
                    row["diverged"] = True
    if not rows:
        raise DataError(f"model_zoos: no checkpoint with finite weights under {path}")
    df = pd.DataFrame(rows)
    df["diverged"] = df.get("diverged", pd.Series(False, index=df.index)).fillna(False).astype(bool)
    df["gen_gap"] = df["train_acc"] - df["test_acc"]
    by_run = assign_splits(df["run_index"].unique(), SPLIT_FRACTIONS, seed=0)
    df["split"] = [by_run[int(i)] for i in df["run_index"]]
    weights = {g: {k: torch.stack([sd[k] for sd in sds]) for k in sds[0]} for g, sds in tensors.items()}
    card = imported_card(
        name, "model_zoos", kind="cnn", dataset=str(json.loads(df["config_json"].iloc[0]).get("dataset::name", "unknown")),
        archs=groups, source=path,
        description=f"Model Zoos (Schuerholt et al. 2022) imported from {path}: {len(df)} checkpoints of "
                    f"{df['run_index'].nunique()} models, architecture modelzoo_cnn (def_net.py's {sorted(set(g['kwargs']['model_type'] for g in groups.values()))}).",
        recipe={"member_arch_kwargs": {"activation": "nlin", "dropout": "dropout"}, "left_out_non_finite": dropped},
        splits={"by": "run_id", "fractions": SPLIT_FRACTIONS, "seed": 0}, license="CC-BY 4.0 (Model Zoos dataset)",
        citation="Schuerholt et al., \"Model Zoos: A Dataset of Diverse Populations of Neural Network Models\", NeurIPS 2022")
    return card, df, weights


READERS.add("model_zoos", read_model_zoos)
