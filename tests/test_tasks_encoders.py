"""Encoder tasks end to end on tiny zoos written in the test (no data, CPU, seconds): property
prediction, INR classification, cross-dataset and cross-architecture transfer, the shared training
loop (normalisation, model selection, hooks) and the metrics."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

import wsbench.methods.dwsnet  # noqa: F401  (registration; until wsbench/builtins.py imports these)
import wsbench.methods.graph  # noqa: F401
import wsbench.methods.mlp  # noqa: F401
import wsbench.methods.nfn  # noqa: F401
import wsbench.methods.sne  # noqa: F401
import wsbench.methods.stat_features  # noqa: F401
import wsbench.tasks.inr_classification  # noqa: F401
import wsbench.tasks.property_prediction  # noqa: F401
import wsbench.tasks.transfer  # noqa: F401
from wsbench.archs import build_arch
from wsbench.errors import ConfigError, DataError
from wsbench.methods.base import RunContext
from wsbench.metrics import accuracy, kendall_tau, mse, r2_score
from wsbench.registry import METHODS, TASKS
from wsbench.tasks.encoder_training import WeightNormalizer, task_options
from wsbench.tasks.inr_classification import inr_augment
from wsbench.archs import spec_for_arch
from wsbench.weights import WeightSpace, batched_forward
from wsbench.zoo import load_zoo, write_zoo
from wsbench.zoo_card import ZooCard

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


CNN_FAMILIES = {"c2x4": {"channels": 4, "n_conv": 2, "num_classes": 3},
                "c3x3": {"channels": 3, "n_conv": 3, "num_classes": 3}}
QUICK = {"epochs": 12, "batch_size": 16, "lr": 3e-3}


def ctx() -> RunContext:
    return RunContext(device=torch.device("cpu"), seed=0, progress=False, log=lambda m: None)


def _card(name: str, kind: str, archs: dict) -> ZooCard:
    return ZooCard.from_dict({"name": name, "version": "0.1", "description": "test zoo", "kind": kind,
                              "dataset": "mnist", "archs": archs, "builder": "none",
                              "variants": {"tiny": {}}, "default_variant": "tiny"})


def make_cnn_zoo(root: Path, name: str = "cnn_a", families: dict = CNN_FAMILIES, n: int = 48, seed: int = 0,
                 paired_checkpoints: bool = False, acc_offset: float = 0.0) -> Path:
    """Small CNNs scaled by s ~ U(0.5, 2); test_acc = s / 2 + noise (learnable from any layer).
    paired_checkpoints: members 2k and 2k+1 are epochs 0 and 5 of run k (run_id, epoch columns)."""
    g = torch.Generator().manual_seed(seed)
    rows, weights = [], {}
    for group, kw in families.items():
        sds = []
        for i in range(n):
            torch.manual_seed(seed * 1000 + i + 7 * len(group))
            s = 0.5 + 1.5 * float(torch.rand((), generator=g))
            sds.append({k: v * s for k, v in build_arch("small_cnn", **kw).state_dict().items()})
            split = "train" if i < n * 0.6 else ("val" if i < n * 0.8 else "test")
            acc = s / 2 + 0.02 * float(torch.randn((), generator=g)) + acc_offset
            rows.append({"id": f"{group}_{i}", "split": split, "group": group, "row": i, "test_acc": acc,
                         "train_acc": acc + 0.1 * s})
            if paired_checkpoints:
                rows[-1].update(run_id=f"{group}_run{i // 2}", epoch=5 * (i % 2))
        weights[group] = {k: torch.stack([sd[k] for sd in sds]) for k in sds[0]}
    card = _card(name, "cnn", {gname: {"arch": "small_cnn", "kwargs": kw} for gname, kw in families.items()})
    write_zoo(root, card, pd.DataFrame(rows), weights)
    return root


def make_inr_zoo(root: Path, n: int = 60) -> Path:
    """Tiny SIRENs whose class is the scale of their weights (3 classes)."""
    kw = {"hidden": 8}
    sds, rows = [], []
    for i in range(n):
        torch.manual_seed(i)
        label = i % 3
        sd = {k: v * (1 + label) for k, v in build_arch("siren", **kw).state_dict().items()}
        sds.append(sd)
        rows.append({"id": f"inr{i}", "split": ["train", "train", "train", "val", "test"][i % 5], "group": "siren",
                     "row": i, "label": label})
    card = _card("inr_toy", "inr", {"siren": {"arch": "siren", "kwargs": kw}})
    write_zoo(root, card, pd.DataFrame(rows), {"siren": {k: torch.stack([sd[k] for sd in sds]) for k in sds[0]}})
    return root


# ----------------------------------------------------------------------------- metrics


def test_metrics_match_hand_computed_values():
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)  # 5 concordant, 1 discordant
    # ties: x ties one pair, y ties another; tau-b = 4 / sqrt(5 * 5)
    assert kendall_tau([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    x = torch.rand(300)
    assert kendall_tau(x, x, block=7) == pytest.approx(1.0)  # blocks agree with one pass
    assert r2_score([1, 2, 3], [1, 2, 4]) == pytest.approx(1 - 1 / 2)
    assert r2_score([1, 2, 3], [2, 2, 2]) == pytest.approx(0.0)
    assert mse([1, 2, 3], [1, 2, 5]) == pytest.approx(4 / 3)
    assert accuracy([0, 1, 1], torch.tensor([[2.0, 1.0], [0.0, 1.0], [3.0, 0.0]])) == pytest.approx(2 / 3)


def test_kendall_tau_matches_brute_force_with_ties():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 5, (40,), generator=g).tolist(), torch.randint(0, 4, (40,), generator=g).tolist()
    s = tx = ty = 0
    for i in range(40):
        for j in range(i + 1, 40):
            dx, dy = (x[i] > x[j]) - (x[i] < x[j]), (y[i] > y[j]) - (y[i] < y[j])
            s, tx, ty = s + dx * dy, tx + (dx == 0), ty + (dy == 0)
    n0 = 40 * 39 / 2
    assert kendall_tau(x, y) == pytest.approx(s / math.sqrt((n0 - tx) * (n0 - ty)))


# ----------------------------------------------------------------------------- training pieces


def test_normalizer_entry_and_layer():
    spec = spec_for_arch("mlp", widths=[2, 4, 1])
    ws = WeightSpace(spec, {k: torch.randn(50, *p.shape) * 3 + 1 for k, p in ((p.key, p) for p in spec.params)})
    for mode in ("entry", "layer"):
        out = WeightNormalizer.fit(ws, mode)(ws)
        t = out.tensors["layers.0.weight"]
        if mode == "entry":
            assert torch.allclose(t.mean(0), torch.zeros(4, 2), atol=1e-5)
        else:
            assert abs(float(t.mean())) < 1e-5 and abs(float(t.std(unbiased=False)) - 1) < 1e-4
    assert WeightNormalizer.fit(ws, "none")(ws) is ws


def test_task_options_validate_and_nest():
    o = task_options("inr_classification", {"epochs": 3, "inr_classification": {"inr_augment": True},
                                            "property_prediction": {"target": "x"}}, {"inr_augment": False})
    assert o["epochs"] == 3 and o["inr_augment"] is True
    with pytest.raises(ConfigError, match="unknown option"):
        task_options("property_prediction", {"epoch": 3}, {})
    with pytest.raises(ConfigError, match="normalize"):
        task_options("property_prediction", {"normalize": "batch"}, {})
    with pytest.raises(ConfigError, match="batch_size"):
        task_options("property_prediction", {"batch_size": 0}, {})


def test_inr_augment_is_an_exact_transformation_of_the_image():
    """Rotating/zooming/translating in weight space = evaluating the INR at transformed coordinates."""
    spec = spec_for_arch("siren", hidden=8)
    model = build_arch("siren", hidden=8).eval()
    ws = WeightSpace.from_state_dicts(spec, [model.state_dict()])
    g = torch.Generator().manual_seed(3)
    aug = inr_augment(ws, g, dropout=0.0)
    g = torch.Generator().manual_seed(3)
    a = (torch.rand(1, generator=g) * 2 - 1) * math.radians(45)
    s = 1 + (torch.rand(1, 1, 1, generator=g) * 2 - 1) * 0.2
    t = (torch.rand(1, 2, generator=g) * 2 - 1) * 0.25
    rot = torch.tensor([[a.cos(), -a.sin()], [a.sin(), a.cos()]])
    coords = torch.rand(20, 2) * 2 - 1
    moved = ((coords + t) @ rot.T) * s[0, 0]  # W0 (s R (x + t)) reproduces W0' x + b0'
    y_aug = batched_forward(model, aug, coords)[0]
    y_ref = model(moved)
    assert torch.allclose(y_aug, y_ref, atol=1e-4)


# ----------------------------------------------------------------------------- tasks


def test_property_prediction_learns_and_reports(tmp_path):
    zoo = load_zoo(make_cnn_zoo(tmp_path / "cnn", families={"c2x4": CNN_FAMILIES["c2x4"]}))
    task = TASKS.get("property_prediction")(**QUICK, select_by="tau")
    method = METHODS.get("statnn")
    assert task.applicable(method, zoo) == (True, "")
    results = task.run(method, {"hidden_dim": 16}, zoo, ctx())
    (r,) = results
    assert set(r.metrics) == {"tau", "r2", "mse"} and task.directions(r.metrics) == {"tau": True, "r2": True, "mse": False}
    assert r.metrics["tau"] > 0.5 and r.n_eval == 9 and r.n_train == 29
    assert r.extra["train_networks_per_s"] > 0 and r.extra["best_epoch"][0] >= 1


def test_property_prediction_per_group_models_for_non_agnostic(tmp_path):
    zoo = load_zoo(make_cnn_zoo(tmp_path / "cnn", n=20))
    task = TASKS.get("property_prediction")(epochs=2, batch_size=8, target=["test_acc", "gen_gap"])
    results = task.run(METHODS.get("mlp"), {"hidden_dim": 8, "n_hidden": 1}, zoo, ctx())
    assert [r.extra["target"] for r in results] == ["test_acc", "gen_gap"]  # gen_gap = train_acc - test_acc
    r = results[0]
    assert set(r.extra["per_group"]) == {"c2x4", "c3x3"} and len(r.extra["best_epoch"]) == 2
    assert r.n_eval == 8 and all(math.isfinite(v) for v in r.metrics.values())


def test_inr_classification_accuracy_in_percent(tmp_path):
    zoo = load_zoo(make_inr_zoo(tmp_path / "inr"))
    task = TASKS.get("inr_classification")(epochs=8, batch_size=12, lr=3e-3, inr_augment=False)
    method = METHODS.get("statnn")
    assert task.applicable(method, zoo)[0]
    assert not task.applicable(METHODS.get("mlp"), load_zoo(make_cnn_zoo(tmp_path / "c", n=10)))[0]
    (r,) = task.run(method, {"hidden_dim": 16}, zoo, ctx())
    assert r.extra["n_classes"] == 3 and r.n_eval == 12
    assert r.metrics["accuracy"] > 50  # chance is 33%


def test_inr_classification_with_augmentation_runs(tmp_path):
    zoo = load_zoo(make_inr_zoo(tmp_path / "inr", n=20))
    task = TASKS.get("inr_classification")(epochs=1, batch_size=8, inr_augment=True, normalize="entry")
    (r,) = task.run(METHODS.get("dwsnet"), {"hidden_dim": 4, "n_hidden": 1}, zoo, ctx())
    assert 0 <= r.metrics["accuracy"] <= 100 and r.extra["inr_augment"] is True


def test_cross_dataset_transfer(tmp_path):
    a = load_zoo(make_cnn_zoo(tmp_path / "a", name="cnn_a", families={"c2x4": CNN_FAMILIES["c2x4"]}, seed=0))
    b_path = make_cnn_zoo(tmp_path / "b", name="cnn_b", families={"c2x4": CNN_FAMILIES["c2x4"]}, seed=1)
    task = TASKS.get("cross_dataset")(eval_zoo=[str(b_path)], **QUICK)
    method = METHODS.get("statnn")
    assert task.applicable(method, a) == (True, "")
    (r,) = task.run(method, {"hidden_dim": 16}, a, ctx())
    assert r.extra["eval_zoo"] == "cnn_b" and r.extra["train_zoo"] == "cnn_a" and r.member == "cnn_b"
    assert r.metrics["tau"] > 0.4 and r.extra["in_distribution"]["tau"] > 0.4
    # the run zoo among the evaluation zoos: the matrix's diagonal, the same score as in_distribution
    own, other = TASKS.get("cross_dataset")(eval_zoo=["cnn_a", str(b_path)], **QUICK).run(method, {"hidden_dim": 16}, a, ctx())
    assert (own.member, other.member) == ("cnn_a", "cnn_b")
    assert own.metrics == own.extra["in_distribution"] and other.metrics["tau"] > 0.4
    with pytest.raises(ConfigError, match="eval_zoo"):
        TASKS.get("cross_dataset")().applicable(method, a)


def test_cross_architecture_transfer_and_not_applicable(tmp_path):
    zoo = load_zoo(make_cnn_zoo(tmp_path / "fam"))
    task = TASKS.get("cross_architecture")(train_groups=["c2x4"], epochs=2, batch_size=8)
    assert task.applicable(METHODS.get("dwsnet"), zoo) == (True, "")  # it can do the task...
    ok, why = task.reads_every_network(METHODS.get("dwsnet"), zoo)  # ...but not read the held-out family
    assert not ok and "not architecture-agnostic" in why
    assert task.reads_every_network(METHODS.get("neural_graph"), zoo) == (True, "")
    (r,) = task.run(METHODS.get("neural_graph"), {"hidden_dim": 8, "n_layers": 1}, zoo, ctx())
    assert r.extra["eval_groups"] == ["c3x3"] and r.n_eval == 9
    assert any("unseen in training" in n for n in r.extra["notes"])
    assert all(math.isfinite(v) for v in r.metrics.values())


def test_bad_target_is_a_clear_error(tmp_path):
    zoo = load_zoo(make_cnn_zoo(tmp_path / "cnn", families={"c2x4": CNN_FAMILIES["c2x4"]}, n=10))
    with pytest.raises(DataError, match="no target column 'val_loss'"):
        TASKS.get("property_prediction")(target="val_loss", epochs=1).run(METHODS.get("mlp"), {}, zoo, ctx())
    with pytest.raises(ConfigError, match="groups"):
        TASKS.get("property_prediction")(groups=["nope"]).applicable(METHODS.get("mlp"), zoo)


def test_every_encoder_preset_is_valid():
    """baselines/<encoder>/*.yaml: method keys build the encoder, task keys pass every encoder task."""
    from wsbench.runner import RESERVED, load_preset, preset_names
    from wsbench.tasks.encoder_training import ENCODER_TASKS

    spec = spec_for_arch("siren")
    checked = 0
    for name in METHODS.names():
        cls = METHODS.get(name)
        if cls.capability != "encoder":
            continue
        presets = preset_names(name)
        assert "quick" in presets and ({"paper", "default"} & set(presets)), f"{name}: presets {presets}"
        for preset in presets:
            data = load_preset(name, preset)
            assert isinstance(data.get("description"), str) and data["description"].strip()
            cls(spec, 10, **{k: v for k, v in data.items() if k not in RESERVED})
            for task in ENCODER_TASKS:
                extra = {k: v for k, v in TASKS.get(task).extra_defaults.items()}
                task_options(task, data.get("task") or {}, extra)
            checked += 1
    assert checked >= 16


def test_checkpoint_option_selects_members_of_each_run():
    from wsbench.tasks.encoder_training import check_checkpoint, select_checkpoints
    members = pd.DataFrame({"id": [f"r{r}_e{e}" for r in range(3) for e in (0, 1, 3)],
                            "run_id": [f"r{r}" for r in range(3) for _ in range(3)],
                            "epoch": [e for _ in range(3) for e in (0, 1, 3)]})
    assert select_checkpoints(members, "all", "z") is members
    assert select_checkpoints(members, "final", "z")["id"].tolist() == ["r0_e3", "r1_e3", "r2_e3"]
    assert select_checkpoints(members, 1, "z")["id"].tolist() == ["r0_e1", "r1_e1", "r2_e1"]
    ragged = members[members["id"] != "r2_e3"]  # a run whose last checkpoint is missing keeps its own last
    assert select_checkpoints(ragged, "final", "z")["id"].tolist() == ["r0_e3", "r1_e3", "r2_e1"]
    with pytest.raises(DataError, match="no members at epoch 2"):
        select_checkpoints(members, 2, "z")
    with pytest.raises(DataError, match="no 'epoch' column"):
        select_checkpoints(members.drop(columns="epoch"), "final", "z")
    for bad in ("last", -1, True, 1.5):
        with pytest.raises(ConfigError, match="option 'checkpoint'"):
            check_checkpoint(bad, "property_prediction")


def test_property_prediction_on_final_checkpoints(tmp_path):
    zoo = load_zoo(make_cnn_zoo(tmp_path / "cnn", families={"c2x4": CNN_FAMILIES["c2x4"]}, n=20,
                                paired_checkpoints=True))
    task = TASKS.get("property_prediction")(epochs=1, batch_size=8, checkpoint="final")
    (r,) = task.run(METHODS.get("statnn"), {"hidden_dim": 8}, zoo, ctx())
    assert r.n_eval == 2 and r.extra["checkpoint"] == "final"  # 4 test members, 2 runs -> 2 final checkpoints
    with pytest.raises(ConfigError, match="option 'checkpoint'"):
        TASKS.get("property_prediction")(checkpoint="last")


def test_bce_loss_predicts_in_unit_interval_and_checks_targets(tmp_path):
    zoo = load_zoo(make_cnn_zoo(tmp_path / "cnn", families={"c2x4": CNN_FAMILIES["c2x4"]}, acc_offset=-0.06))
    task = TASKS.get("property_prediction")(**QUICK, loss="bce", select_by="tau")  # test_acc in about [0.19, 0.9]
    (r,) = task.run(METHODS.get("statnn"), {"hidden_dim": 16}, zoo, ctx())
    assert r.metrics["tau"] > 0.5 and r.metrics["mse"] < 0.03
    over = load_zoo(make_cnn_zoo(tmp_path / "over", families={"c2x4": CNN_FAMILIES["c2x4"]}, n=10, acc_offset=1.0))
    with pytest.raises(DataError, match=r"loss 'bce' needs targets in \[0, 1\]"):
        TASKS.get("property_prediction")(epochs=1, loss="bce").run(METHODS.get("statnn"), {"hidden_dim": 8}, over, ctx())
    with pytest.raises(ConfigError, match="cross-entropy"):
        TASKS.get("inr_classification")(epochs=1, loss="bce").run(METHODS.get("statnn"), {"hidden_dim": 8},
                                                                   load_zoo(make_inr_zoo(tmp_path / "inr", n=10)), ctx())
    with pytest.raises(ConfigError, match="loss"):
        TASKS.get("property_prediction")(loss="huber")


def test_small_cnn_zoo_presets_run_the_tables_schedule(tmp_path):
    """Every encoder's small_cnn_zoo preset (the Small CNN Zoo table) builds on a small CNN and trains
    with its own task options (one epoch here): the loss and selection the table's records name."""
    from wsbench.runner import RESERVED, load_preset, preset_names

    zoo = load_zoo(make_cnn_zoo(tmp_path / "cnn", families={"c2x4": CNN_FAMILIES["c2x4"]}, n=20, acc_offset=-0.2))
    ran = []
    for name in METHODS.names():
        if METHODS.get(name).capability != "encoder" or "small_cnn_zoo" not in preset_names(name):
            continue
        data = load_preset(name, "small_cnn_zoo")
        options = {**data["task"], "epochs": 1}
        assert options["select_by"] == "tau" and options["loss"] in ("bce", "mse")
        task = TASKS.get("property_prediction")(**options)
        (r,) = task.run(METHODS.get(name), {k: v for k, v in data.items() if k not in RESERVED}, zoo, ctx())
        assert r.metrics and all(math.isfinite(v) for v in r.metrics.values()), (name, r.metrics)
        ran.append(name)
    assert {"statnn", "nfn_hnp", "nfn_np", "mlp", "mlp_align", "neural_graph", "dwsnet", "sne"} <= set(ran)
