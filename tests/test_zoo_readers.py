"""Readers of published zoos, on small synthetic files written in exactly the published layouts:
the Small CNN Zoo (weights.npy, metrics.csv.gz, layout.csv), DWSNets' INR datasets (per-INR .pth
state dicts + splits json) and Schuerholt et al.'s Model Zoos (per-model Ray Tune folders)."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from wsbench.archs import build_arch
from wsbench.archs.siren import image_coords
from wsbench.errors import DataError, IntegrityError
from wsbench.zoo import load_zoo
from wsbench.zoo_readers import import_zoo
from wsbench.zoo_readers.model_zoos import ModelZooCNN


@pytest.fixture(autouse=True)
def _store(monkeypatch, tmp_path):
    monkeypatch.setenv("WSBENCH_ZOO_DIR", str(tmp_path / "store"))


# ------------------------------------------------------------------ Small CNN Zoo (Unterthiner et al.)

def _write_small_cnn_zoo(root, runs=3, steps=(0, 86), nan_row=None, seed=0):
    """Keras variables in layout order: per layer bias then kernel (conv [kh, kw, in, out], dense [in, out])."""
    g = torch.Generator().manual_seed(seed)
    shapes = [("conv2d", (16, 1, 3, 3)), ("conv2d_1", (16, 16, 3, 3)), ("conv2d_2", (16, 16, 3, 3)), ("dense", (10, 16))]
    layout, start = [], 0
    for name, shp in shapes:
        kshape = (shp[2], shp[3], shp[1], shp[0]) if len(shp) == 4 else (shp[1], shp[0])
        for var, s in (("bias", (shp[0],)), ("kernel", kshape)):
            n = math.prod(s)
            layout.append({"varname": f"sequential/{name}/{var}:0", "start_idx": start, "end_idx": start + n, "shape": str(s)})
            start += n
    rows, torch_weights, metrics = [], [], []
    for r in range(runs):
        for step in steps:
            sd = {name: torch.randn(shp, generator=g) * 0.1 for name, shp in shapes}
            bias = {name: torch.randn(shp[0], generator=g) * 0.1 for name, shp in shapes}
            flat = []
            for name, shp in shapes:
                k = sd[name].permute(2, 3, 1, 0) if len(shp) == 4 else sd[name].t()
                flat += [bias[name].reshape(-1), k.reshape(-1)]
            rows.append(torch.cat(flat).numpy())
            torch_weights.append((sd, bias))
            uid = f"{1000 + r}"
            metrics.append({"Unnamed: 0": f"/cns/xx/mnist/{uid}/permanent_ckpt-{step}", "config.activation": ["relu", "tanh"][r % 2],
                            "config.b_init": "zeros", "config.dataset": "mnist", "config.dnn_architecture": "cnn",
                            "config.dropout": 0.1 * r, "config.epochs": 86, "config.epochs_between_checkpoints": 20,
                            "config.init_std": 0.05, "config.l2reg": 1e-4, "config.learning_rate": 0.01 * (r + 1),
                            "config.num_layers": 3, "config.num_units": 16, "config.optimizer": "adam",
                            "config.random_seed": 42, "config.train_fraction": 0.5, "config.w_init": "he_normal",
                            "modeldir": f"/cns/xx/mnist/{uid}", "step": step, "test_accuracy": 0.5 + 0.01 * r,
                            "test_loss": 1.0, "train_accuracy": 0.6 + 0.01 * r, "train_loss": 0.9})
    w = np.stack(rows).astype(np.float32)
    if nan_row is not None:
        w[nan_row, 5] = np.nan
    np.save(root / "weights.npy", w)
    df = pd.DataFrame(metrics)
    df.rename(columns={"Unnamed: 0": ""}).to_csv(root / "metrics.csv.gz", index=False, compression="gzip")
    pd.DataFrame(layout).to_csv(root / "layout.csv", index=False)
    return torch_weights


def test_small_cnn_zoo_round_trip(tmp_path):
    src = tmp_path / "mnist"
    src.mkdir()
    originals = _write_small_cnn_zoo(src, runs=3, nan_row=3)  # row 3 = run 1, step 86
    zoo = import_zoo("small_cnn_zoo", src, "unterthiner_mnist_synthetic", out=tmp_path / "zoo")
    m = zoo.members
    assert len(m) == 5 and m["run_id"].nunique() == 3 and zoo.card.dataset == "mnist"
    assert m.set_index("id")["diverged"].to_dict()["r000001_e000"] and not m["diverged"][m["run_id"] == "r000000"].any()
    assert (m.groupby("run_id")["split"].nunique() == 1).all()
    assert {"lr", "weight_decay", "dropout", "activation", "train_fraction", "optimizer", "test_acc", "gen_gap", "epoch"} <= set(m.columns)
    assert zoo.card.archs["cnn"]["kwargs"]["channels"] == 16
    for _, row in m.iterrows():
        sd_torch, bias = originals[int(row["source_row"])]
        sd = zoo.state_dict(row["id"])
        for i, name in enumerate(["conv2d", "conv2d_1", "conv2d_2"]):
            assert torch.equal(sd[f"convs.{i}.weight"], sd_torch[name]) and torch.equal(sd[f"convs.{i}.bias"], bias[name])
        assert torch.equal(sd["fc.weight"], sd_torch["dense"]) and torch.equal(sd["fc.bias"], bias["dense"])
    # the transposed kernel computes what the Keras kernel computes (cross-correlation, 'valid' padding)
    k_tf = np.load(src / "weights.npy")[0, 16:160].reshape(3, 3, 1, 16)
    x = torch.randn(2, 1, 9, 9)
    patches = F.unfold(x, 3, stride=2).view(2, 1, 3, 3, -1)  # [N, in, kh, kw, L]
    keras = torch.einsum("nijkl,jkio->nol", patches, torch.from_numpy(k_tf)).view(2, 16, 4, 4)
    ours = F.conv2d(x, zoo.state_dict(m["id"].iloc[0])["convs.0.weight"], stride=2)
    torch.testing.assert_close(ours, keras, atol=1e-5, rtol=1e-5)


def test_small_cnn_zoo_limit_and_bad_files(tmp_path):
    src = tmp_path / "z"
    src.mkdir()
    _write_small_cnn_zoo(src, runs=4)
    assert import_zoo("small_cnn_zoo", src, "lim", out=tmp_path / "lim", limit=2).members["run_id"].nunique() == 2
    (src / "layout.csv").unlink()
    with pytest.raises(DataError, match="lacks layout.csv"):
        import_zoo("small_cnn_zoo", src, "bad", out=tmp_path / "bad")
    _write_small_cnn_zoo(src, runs=1)
    np.save(src / "weights.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(IntegrityError, match="refusing to unpickle"):
        import_zoo("small_cnn_zoo", src, "bad", out=tmp_path / "bad")


# ------------------------------------------------------------------ DWSNets INRs

class _DwsSine(torch.nn.Module):  # the layout of DWSNets' nn/inr.py: Siren layers (weight, bias) then a Linear
    def __init__(self, i, o):
        super().__init__()
        self.weight, self.bias = torch.nn.Parameter(torch.randn(o, i) * 0.3), torch.nn.Parameter(torch.randn(o) * 0.3)

    def forward(self, x):
        return torch.sin(30.0 * F.linear(x, self.weight, self.bias))


class _DwsINR(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.seq = torch.nn.Sequential(_DwsSine(2, 32), _DwsSine(32, 32), torch.nn.Linear(32, 1))

    def forward(self, x):
        return self.seq(x) + 0.5


def _dws_coords(n=28):  # DWSNets experiments/utils.make_coordinates: np.meshgrid 'xy', stacked (x, y)
    lin = np.linspace(-1, 1, n)
    xx, yy = np.meshgrid(lin, lin)
    return torch.from_numpy(np.stack([xx.flatten(), yy.flatten()]).T).float()


def _write_dwsnets(root, n_train=4, n_test=2, nan_index=None):
    torch.manual_seed(0)
    inrs, splits = {}, {"train": {"path": [], "label": []}, "test": {"path": [], "label": []}}
    for src, n, s in (("training", n_train, "train"), ("testing", n_test, "test")):
        for i in range(n):
            label, folder = (3 * i + 1) % 10, f"mnist_png_{src}_{(3 * i + 1) % 10}_{100 + i}"
            p = root / "mnist-inrs" / folder / "checkpoints" / "model_final.pth"
            p.parent.mkdir(parents=True)
            net = _DwsINR()
            sd = net.state_dict()
            if nan_index == (s, i):
                sd["seq.1.weight"][0, 0] = float("nan")
            torch.save(sd, p)
            inrs[folder] = net
            splits[s]["path"].append(f"/home/someone/dataset/mnist-inrs/{folder}/checkpoints/model_final.pth")
            splits[s]["label"].append(str(label))
    splits["val"] = {"path": [splits["train"]["path"].pop()], "label": [splits["train"]["label"].pop()]}
    (root / "mnist_splits.json").write_text(json.dumps(splits))
    return inrs


def test_dwsnets_inrs_import_and_render_the_same_images(tmp_path):
    inrs = _write_dwsnets(tmp_path, nan_index=("train", 0))
    zoo = import_zoo("dwsnets_inr", tmp_path / "mnist_splits.json", "dws_synthetic", out=tmp_path / "zoo")
    m = zoo.members.set_index("id")
    assert len(m) == 5 and m["split"].value_counts().to_dict() == {"train": 2, "test": 2, "val": 1}
    assert zoo.card.recipe["left_out_non_finite"] == 1 and "mnist_png_training_1_100" not in m.index
    assert m.loc["mnist_png_testing_4_101", "label"] == 4 and m.loc["mnist_png_testing_4_101", "image_index"] == 101
    siren = build_arch("siren", **zoo.card.archs["siren"]["kwargs"]).eval()
    for member_id in m.index:
        siren.load_state_dict(zoo.state_dict(member_id))
        with torch.no_grad():
            ours = siren(image_coords(28)).view(28, 28)
            theirs = inrs[member_id](_dws_coords()).view(28, 28)  # DWSNets' INRImageDataset rendering
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    folder_zoo = import_zoo("dwsnets_inr", tmp_path / "mnist-inrs", "dws_folder", out=tmp_path / "zoo2")
    assert len(folder_zoo.members) == 5 and set(folder_zoo.members["split"]) <= {"train", "val", "test"}


def test_dwsnets_refuses_pickled_objects(tmp_path):
    _write_dwsnets(tmp_path, n_train=2, n_test=1)
    victim = next((tmp_path / "mnist-inrs").glob("*testing*/checkpoints/model_final.pth"))
    torch.save({"seq.0.weight": torch.zeros(32, 2), "payload": pd.Timestamp("2020-01-01")}, victim)
    with pytest.raises(IntegrityError, match="weights_only=True"):
        import_zoo("dwsnets_inr", tmp_path / "mnist_splits.json", "evil", out=tmp_path / "evil")


# ------------------------------------------------------------------ Model Zoos (Schuerholt et al.)

def _write_model_zoo(root, n_models=3, epochs=(0, 5), dropout_model=None, nan_at=None):
    torch.manual_seed(0)
    sds = {}
    for mi in range(n_models):
        folder = root / f"NN_tune_trainable_{mi:05d}_{mi}_seed={mi},lr=0.001"
        folder.mkdir(parents=True)
        cfg = {"model::type": "CNN", "model::channels_in": 1, "model::nlin": ["tanh", "relu", "gelu"][mi % 3],
               "model::dropout": 0.1 if mi == dropout_model else 0.0, "model::init_type": "kaiming_uniform",
               "optim::optimizer": "adam", "optim::lr": 1e-3, "optim::wd": 1e-4, "seed": mi, "training::batchsize": 64,
               "dataset::name": "mnist"}
        (folder / "params.json").write_text(json.dumps(cfg))
        lines = [{"train_loss": -999 if e == 0 else 0.5, "train_acc": -999 if e == 0 else 0.8, "test_loss": 0.6,
                  "test_acc": 0.7 + 0.01 * e, "training_iteration": e, "config": cfg} for e in range(max(epochs) + 1)]
        (folder / "result.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        for e in epochs:
            net = ModelZooCNN("CNN", 1, nlin=cfg["model::nlin"], dropout=cfg["model::dropout"])
            sd = net.state_dict()
            if nan_at == (mi, e):
                sd["module_list.0.weight"][0, 0, 0, 0] = float("inf")
            (folder / f"checkpoint_{e:06d}").mkdir()
            torch.save(sd, folder / f"checkpoint_{e:06d}" / "checkpoints")
            sds[(mi, e)] = sd
    return sds


def test_model_zoos_round_trip(tmp_path):
    sds = _write_model_zoo(tmp_path / "src", dropout_model=2, nan_at=(1, 5))
    zoo = import_zoo("model_zoos", tmp_path / "src", "modelzoo_synthetic", out=tmp_path / "zoo")
    m = zoo.members.set_index("id")
    assert len(m) == 5 and zoo.groups == ["cnn_c1", "cnn_c1_dropout"] and zoo.card.dataset == "mnist"
    assert m.loc["m00001_e000", "diverged"] and not m.loc["m00000_e005", "diverged"]
    assert m.loc["m00000_e005", "test_acc"] == pytest.approx(0.75) and math.isnan(m.loc["m00000_e000", "train_acc"])
    assert m.loc["m00002_e000", "activation"] == "gelu" and m.loc["m00002_e000", "dropout"] == 0.1
    for (mi, e), sd in sds.items():
        if (mi, e) != (1, 5):
            got = zoo.state_dict(f"m{mi:05d}_e{e:03d}")
            assert all(torch.equal(got[k], sd[k]) for k in sd)
    # module indices are those of def_net.py: the dataset code reads layers 0, 3, 6, 9, 11 of the small CNN
    assert sorted({int(k.split(".")[1]) for k in zoo.spec("cnn_c1").keys}) == [0, 3, 6, 9, 11]
    assert sorted({int(k.split(".")[1]) for k in zoo.spec("cnn_c1_dropout").keys}) == [0, 4, 8, 11, 14]
    net = build_arch("modelzoo_cnn", **zoo.card.archs["cnn_c1"]["kwargs"]).eval()
    net.load_state_dict(zoo.state_dict("m00000_e005"))
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_import_zoo_command_line(tmp_path, capsys):
    from wsbench.cli import main

    _write_model_zoo(tmp_path / "src", n_models=2, epochs=(1,))
    out = tmp_path / "zoo"
    assert main(["import-zoo", "model_zoos", str(tmp_path / "src"), "mz", "--out", str(out)]) == 0
    assert "imported model_zoos" in capsys.readouterr().out
    assert main(["import-zoo", "model_zoos", str(tmp_path / "src"), "mz", "--out", str(out)]) == 2  # exists
    assert main(["import-zoo", "model_zooz", str(tmp_path / "src"), "mz2"]) == 2
    assert "did you mean 'model_zoos'" in capsys.readouterr().err
    assert main(["import-zoo", "dwsnets_inr", str(tmp_path / "nowhere"), "x"]) == 2


def test_dwsnets_limit_relative_paths_and_bad_entries(tmp_path, monkeypatch):
    _write_dwsnets(tmp_path, n_train=4, n_test=2)  # train 3, val 1, test 2
    splits = tmp_path / "mnist_splits.json"
    zoo = import_zoo("dwsnets_inr", splits, "dws_limit", out=tmp_path / "z1", limit=4)
    assert len(zoo.members) == 4 and zoo.members["split"].value_counts().to_dict() == {"train": 3, "val": 1}
    # relative paths resolve against the splits file's folder, whatever the current directory holds
    data = json.loads(splits.read_text())
    for entry in data.values():
        entry["path"] = [p.split("/dataset/")[1] for p in entry["path"]]
    splits.write_text(json.dumps(data))
    decoy = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "mnist-inrs", decoy / "mnist-inrs")
    for f in (decoy / "mnist-inrs").glob("*/checkpoints/model_final.pth"):
        torch.save({k: torch.zeros_like(v) for k, v in torch.load(f, weights_only=True).items()}, f)
    monkeypatch.chdir(decoy)
    zoo = import_zoo("dwsnets_inr", splits, "dws_rel", out=tmp_path / "z2")
    assert all(w.abs().sum() > 0 for w in zoo.weights(split="train").tensors.values())
    for bad, match in (({"label": "seven"}, "not a class index"), ({"path": None}, "expected a file path")):
        broken = json.loads(splits.read_text())
        for key, value in bad.items():
            broken["test"][key] = [value] + broken["test"][key][1:]
        (tmp_path / "bad.json").write_text(json.dumps(broken))
        with pytest.raises(DataError, match=match):
            import_zoo("dwsnets_inr", tmp_path / "bad.json", "dws_bad", out=tmp_path / "z3")
        assert not (tmp_path / "z3").exists()


def test_imported_and_built_sirens_share_one_spec(tmp_path):
    from wsbench.archs import spec_for_arch

    _write_dwsnets(tmp_path, n_train=2, n_test=1)
    zoo = import_zoo("dwsnets_inr", tmp_path / "mnist_splits.json", "dws_spec", out=tmp_path / "zoo")
    assert zoo.card.archs["siren"]["kwargs"] != {}  # spelt out on import
    from wsbench.zoo_store import open_zoo

    assert zoo.spec() == spec_for_arch("siren") == open_zoo("siren_mnist", variant="tiny").spec()
