"""DWSNets' INR datasets (AvivNavon/DWSNets, experiments/mnist): one SIREN per image, each saved as a
state dict (`seq.0.weight`, `seq.0.bias`, ..., `seq.2.bias`) in
`<root>/mnist_png_<training|testing>_<label>_<index>/checkpoints/model_final.pth`, and a splits json
`{"train": {"path": [...], "label": [...]}, "val": {...}, "test": {...}}` (generate_data_splits.py).

PATH is the json (its paths may be absolute paths of another machine: they are looked up under the
json's folder by their trailing components) or the INR folder (a single *splits*.json inside is used;
without one, train/test come from the folder names and `val` is a seeded 1/12 of train, DWSNets'
5,000 of 60,000). Files are read with `torch.load(weights_only=True)`.

Coordinates: DWSNets evaluates its INRs at (x, y) = (column, row) (experiments/utils.make_coordinates,
np.meshgrid 'xy'); wsbench's SIREN takes (row, column) (archs.siren.image_coords). The two input
columns of the first layer are swapped on import, so `siren` with `image_coords` renders the same image.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..errors import ConfigError, DataError, IntegrityError
from .common import READERS, ReaderResult, imported_card, load_tensor_checkpoint

_FOLDER = re.compile(r"_(training|testing)_(\d+)_(\d+)$")


def _locate(p: object, base: Path, split: str) -> Path:
    """An INR file named in the splits json: an absolute path as it is, a relative one under the json's
    folder (never the current directory); else the path's trailing components under that folder
    (the json may list another machine's absolute paths)."""
    if not isinstance(p, str) or not p:
        raise DataError(f"dwsnets_inr: split {split} lists a path {p!r}; expected a file path")
    direct = Path(p) if Path(p).is_absolute() else base / p
    if direct.is_file():
        return direct
    parts = Path(p).parts
    for k in range(len(parts)):
        cand = base.joinpath(*parts[k:])
        if parts[k:] and cand.is_file():
            return cand
    raise DataError(f"dwsnets_inr: INR file {p} is neither at that path nor under {base}")


def _label(label: object, split: str, p: object) -> int:
    try:
        value = int(label)  # DWSNets writes labels as strings of digits
    except (TypeError, ValueError):
        value = -1
    if value < 0 or str(label).strip() not in (str(value), f"{value}.0"):
        raise DataError(f"dwsnets_inr: split {split}: label {label!r} of {p} is not a class index")
    return value


def _from_folder(root: Path) -> dict[str, dict[str, list]]:
    splits: dict[str, dict[str, list]] = {"train": {"path": [], "label": []}, "test": {"path": [], "label": []}}
    for p in sorted(root.glob("**/*.pth")):
        m = _FOLDER.search(p.parent.parent.name)
        if m is None:
            raise DataError(f"dwsnets_inr: cannot tell split and label of {p} (folder names like "
                            f"mnist_png_training_<label>_<index>/checkpoints/*.pth are expected)")
        s = "train" if m.group(1) == "training" else "test"
        splits[s]["path"].append(str(p))
        splits[s]["label"].append(m.group(2))
    n_val = round(len(splits["train"]["path"]) / 12)
    perm = np.random.default_rng(0).permutation(len(splits["train"]["path"]))
    val = set(perm[:n_val].tolist())
    splits["val"] = {k: [v for i, v in enumerate(splits["train"][k]) if i in val] for k in ("path", "label")}
    splits["train"] = {k: [v for i, v in enumerate(splits["train"][k]) if i not in val] for k in ("path", "label")}
    return splits


def _guess_dataset(path: Path) -> str:
    low = str(path.resolve()).lower()
    return "fashion_mnist" if ("fashion" in low or "fmnist" in low) else "mnist" if "mnist" in low else "unknown"


def convert(sd: dict[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    """DWSNets INR state dict -> wsbench `siren` state dict (layers.i.*, first-layer inputs swapped)."""
    w_keys = [k for k in sd if k.endswith("weight")]
    b_keys = [k for k in sd if k.endswith("bias")]
    if len(w_keys) != len(b_keys) or len(w_keys) < 2:
        raise IntegrityError(f"dwsnets_inr: {where} has weights {w_keys} and biases {b_keys}; expected an MLP")
    out = {}
    for i, (wk, bk) in enumerate(zip(w_keys, b_keys)):
        w, b = sd[wk].float(), sd[bk].float()
        if w.dim() != 2 or b.shape != (w.shape[0],):
            raise IntegrityError(f"dwsnets_inr: {where}: {wk} {tuple(w.shape)} / {bk} {tuple(b.shape)} are not a linear layer")
        if i == 0 and w.shape[1] == 2:
            w = w[:, [1, 0]]  # (x, y) inputs -> (y, x)
        out[f"layers.{i}.weight"], out[f"layers.{i}.bias"] = w.contiguous(), b.contiguous()
    return out


def read_dwsnets_inr(path: Path, name: str, *, limit: int | None = None) -> ReaderResult:
    if path.is_dir():
        jsons = sorted(path.glob("*splits*.json"))
        if len(jsons) > 1:
            raise ConfigError(f"dwsnets_inr: {path} holds several split files {[j.name for j in jsons]}; pass one as PATH")
        splits, base = (json.loads(jsons[0].read_text()), path) if jsons else (_from_folder(path), path)
    else:
        try:
            splits, base = json.loads(path.read_text()), path.parent
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"dwsnets_inr: {path} is not a splits json ({e})") from None
    if not isinstance(splits, dict) or not all(isinstance(splits.get(s), dict) for s in splits):
        raise DataError(f"dwsnets_inr: {path}: expected {{split: {{'path': [...], 'label': [...]}}}}")
    rows, sds, dropped, shapes = [], [], 0, None
    left = limit  # --limit: the first N networks of the file, all splits together (train, val, test)
    for split in ("train", "val", "test"):
        entry = splits.get(split, {"path": [], "label": []})
        paths, labels = entry.get("path", []), entry.get("label", [])
        if not isinstance(paths, list) or not isinstance(labels, list) or len(paths) != len(labels):
            raise DataError(f"dwsnets_inr: split {split} needs lists 'path' and 'label' of one length")
        pairs = list(zip(paths, labels))
        if left is not None:
            pairs, left = pairs[:left], max(left - len(pairs), 0)
        for p, label in pairs:
            label = _label(label, split, p)
            f = _locate(p, base, split)
            sd = convert(load_tensor_checkpoint(f, "dwsnets_inr", unwrap="state_dict"), f)
            sh = {k: tuple(v.shape) for k, v in sd.items()}
            if shapes is None:
                shapes = sh
            elif sh != shapes:
                raise IntegrityError(f"dwsnets_inr: {f} has shapes {sh}, the first INR {shapes}")
            if not all(torch.isfinite(v).all() for v in sd.values()):
                dropped += 1
                continue
            folder = f.parent.parent.name
            m = _FOLDER.search(folder)
            rows.append({"id": folder if m else f"{split}_{len(rows):06d}", "split": split, "label": label,
                         "source_split": ("train" if m.group(1) == "training" else "test") if m else split,
                         "image_index": int(m.group(3)) if m else -1, "psnr": float("nan"),
                         "path": str(f.relative_to(base)) if f.is_relative_to(base) else str(f)})
            sds.append(sd)
    if not rows:
        raise DataError(f"dwsnets_inr: no INR with finite weights found from {path}")
    df = pd.DataFrame(rows)
    if df["id"].duplicated().any():
        df["id"] = [f"{s}_{i:06d}" for i, s in enumerate(df["split"])]
    df["group"], df["row"] = "siren", np.arange(len(df))
    n_layers = len(shapes) // 2
    hidden = {shapes[f"layers.{i}.weight"][0] for i in range(n_layers - 1)}
    if len(hidden) != 1:
        raise IntegrityError(f"dwsnets_inr: hidden widths differ ({sorted(hidden)}); siren needs equal widths")
    kwargs = {"in_dim": shapes["layers.0.weight"][1], "hidden": hidden.pop(), "n_hidden": n_layers - 1,
              "out_dim": shapes[f"layers.{n_layers - 1}.weight"][0]}
    tensors = {k: torch.stack([sd[k] for sd in sds]) for k in shapes}
    card = imported_card(
        name, "dwsnets_inr", kind="inr", dataset=_guess_dataset(path),
        archs={"siren": {"arch": "siren", "kwargs": kwargs}}, source=path,
        description=f"DWSNets INR dataset imported from {path}: {len(df)} SIRENs (label = the image's class); "
                    f"first-layer inputs swapped from DWSNets' (x, y) to wsbench's (row, column) coordinates.",
        recipe={"left_out_non_finite": dropped, "psnr": "not stored in the published files (NaN)"},
        splits={"from": "the published splits json" if not path.is_dir() or any(path.glob("*splits*.json"))
                else "folder names; val = seeded 1/12 of train"},
        citation="Navon et al., \"Equivariant Architectures for Learning in Deep Weight Spaces\", ICML 2023")
    return card, df, {"siren": tensors}


READERS.add("dwsnets_inr", read_dwsnets_inr)
