"""Zoo format: round trip, integrity checks, and clear errors for bad zoo folders."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from wsbench.errors import DataError, IntegrityError
from wsbench.zoo import load_zoo, write_zoo
from zoo_helpers import make_mlp_zoo, mlp_card


def test_round_trip(tmp_path):
    root = make_mlp_zoo(tmp_path / "z")
    zoo = load_zoo(root)
    assert zoo.name == "toy_mlp" and len(zoo.members) == 6
    ws = zoo.weights(split="train")
    assert len(ws) == 3 and ws.weights[0].shape == (3, 8, 2)
    sd = zoo.state_dict("m4")
    torch.testing.assert_close(sd["layers.0.weight"], zoo.weights(split="test").tensors["layers.0.weight"][0])
    assert set(json.loads((root / "manifest.json").read_text())["files"]) >= {"zoo.yaml", "members.parquet",
                                                                               "weights/mlp.safetensors"}


def test_datasets_reads_members_table(tmp_path):
    from datasets import load_dataset

    root = make_mlp_zoo(tmp_path / "z")
    ds = load_dataset("parquet", data_files=str(root / "members.parquet"))["train"]
    assert ds.num_rows == 6 and "test_acc" in ds.column_names


def test_tampered_weight_file_is_refused(tmp_path):
    root = make_mlp_zoo(tmp_path / "z")
    f = root / "weights" / "mlp.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="mlp.safetensors"):
        load_zoo(root)


def test_truncated_weight_file_is_refused(tmp_path):
    root = make_mlp_zoo(tmp_path / "z")
    f = root / "weights" / "mlp.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(IntegrityError):
        load_zoo(root)
    with pytest.raises(IntegrityError):
        load_zoo(root, verify=False)


def _rewrite(root, fn):
    """Edit a zoo file in place, then refresh the manifest (so only the content check can fail)."""
    fn(root)
    from wsbench.manifest import write_manifest

    write_manifest(root)


@pytest.mark.parametrize("case,match", [
    ("no_card", "no zoo.yaml"),
    ("unknown_version", "format_version"),
    ("missing_columns", "lacks columns"),
    ("duplicate_ids", "duplicate member ids"),
    ("wrong_shape", "shape"),
    ("wrong_dtype", "dtype"),
    ("row_out_of_range", "rows outside"),
    ("unknown_split_member", "unknown members"),
    ("empty", "no members"),
])
def test_bad_zoo_folders(tmp_path, case, match):
    root = make_mlp_zoo(tmp_path / "z")
    wfile = root / "weights" / "mlp.safetensors"

    def edit(r):
        if case == "no_card":
            (r / "zoo.yaml").unlink()
        elif case == "unknown_version":
            d = yaml.safe_load((r / "zoo.yaml").read_text())
            d["format_version"] = 99
            (r / "zoo.yaml").write_text(yaml.safe_dump(d))
        elif case in ("missing_columns", "duplicate_ids", "row_out_of_range", "empty"):
            df = pd.read_parquet(r / "members.parquet")
            if case == "missing_columns":
                df = df.drop(columns=["row"])
            elif case == "duplicate_ids":
                df.loc[1, "id"] = "m0"
            elif case == "row_out_of_range":
                df.loc[0, "row"] = 99
            else:
                df = df.iloc[:0]
            df.to_parquet(r / "members.parquet")
        elif case == "unknown_split_member":
            d = yaml.safe_load((r / "zoo.yaml").read_text())
            d["split_ids"] = {"test": ["m4", "nobody"]}
            (r / "zoo.yaml").write_text(yaml.safe_dump(d))
        else:
            t = load_file(str(wfile))
            key = "layers.0.weight"
            t[key] = torch.zeros(6, 8, 5) if case == "wrong_shape" else t[key].double()
            save_file(t, str(wfile))

    _rewrite(root, edit)
    with pytest.raises(DataError, match=match):
        load_zoo(root)


def test_nan_weights_are_refused_on_use(tmp_path):
    card = mlp_card()
    w = {"mlp": {"layers.0.weight": torch.full((2, 8, 2), float("nan")), "layers.0.bias": torch.zeros(2, 8),
                 "layers.1.weight": torch.zeros(2, 8, 8), "layers.1.bias": torch.zeros(2, 8),
                 "layers.2.weight": torch.zeros(2, 3, 8), "layers.2.bias": torch.zeros(2, 3)}}
    members = pd.DataFrame({"id": ["a", "b"], "split": ["train", "test"], "group": "mlp", "row": [0, 1]})
    zoo = write_zoo(tmp_path / "z", card, members, w)
    with pytest.raises(IntegrityError, match="NaN"):
        zoo.weights(split="train")
    with pytest.raises(DataError, match="empty"):
        zoo.split("val")


def test_write_is_atomic_and_refuses_overwrite(tmp_path):
    root = make_mlp_zoo(tmp_path / "z")
    before = (root / "manifest.json").read_bytes()
    with pytest.raises(DataError, match="holds a zoo already"):
        make_mlp_zoo(root)
    assert (root / "manifest.json").read_bytes() == before
    bad = pd.DataFrame({"id": ["a"], "split": ["x"], "group": ["nogroup"], "row": [0]})
    with pytest.raises(DataError):
        write_zoo(tmp_path / "y", mlp_card(), bad, {})
    assert not (tmp_path / "y").exists() and not list(tmp_path.glob(".y.staging*"))
