"""Zoo builders: batched training equals training alone and torch.optim, divergence is contained,
tiny variants build and reload (on real MNIST / CIFAR-10 prefixes), an interrupted build resumes
without duplicating or losing members, SIREN fits reach a PSNR floor, build-zoo on the command line."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsbench.archs import build_arch
from wsbench.archs.siren import image_coords
from wsbench.errors import ConfigError
from wsbench.zoo import load_zoo
from wsbench.zoo_builders import build_zoo, counter_rng as rng, fused_dropout
from wsbench.zoo_builders import resnet_training, siren_inr, small_cnn  # noqa: F401  (registers the builders)
from wsbench.zoo_builders.batched_training import (CnnArch, ImageData, MemberHParams, forward, init_params,
                                                   loss_and_grad, train_batch, unflatten)
from wsbench.zoo_builders.planning import assign_splits, member_arch, sample_runs, split_counts

from data_paths import DATA_DIR  # noqa: E402
FIELDS = ("seed", "optimizer", "lr", "weight_decay", "dropout", "init_scale", "train_fraction")


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("WSBENCH_DATA_DIR", str(DATA_DIR))
    monkeypatch.setenv("WSBENCH_ZOO_DIR", str(tmp_path_factory.getbasetemp() / "zoo_store"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads on a busy 2-core machine are several times slower than 1
    yield
    torch.set_num_threads(threads)


def _hp(**kw) -> MemberHParams:
    return MemberHParams(**{k: list(v) for k, v in kw.items()})


def _one(hp: MemberHParams, b: int) -> MemberHParams:
    return MemberHParams(**{f: [getattr(hp, f)[b]] for f in FIELDS})


def _toy_data(n: int = 96, size: int = 12, seed: int = 0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)
    return ImageData(x, y, x[:40], y[:40])


def test_counter_rng_is_per_member_and_uniform():
    alone = rng.uniform(torch.tensor([5]), rng.STREAM_DROPOUT, 3, (4, 7))
    batch = rng.uniform(torch.tensor([1, 5, 9]), rng.STREAM_DROPOUT, 3, (4, 7))
    assert torch.equal(alone[0], batch[1]) and not torch.equal(batch[0], batch[1])
    axis1 = rng.uniform_member_axis1(torch.tensor([1, 5, 9]), rng.STREAM_DROPOUT, 3, (4, 7))
    assert torch.equal(axis1.transpose(0, 1), batch)
    big = rng.uniform(torch.arange(50), rng.STREAM_BATCH, 0, (4000,))
    assert abs(big.mean().item() - 0.5) < 0.005 and abs(big.std().item() - 12 ** -0.5) < 0.005
    assert abs(torch.corrcoef(torch.stack([big[:, :-1].flatten(), big[:, 1:].flatten()]))[0, 1].item()) < 0.01
    z = rng.normal(torch.arange(20), rng.STREAM_INIT, 0, (2000,))
    assert abs(z.mean().item()) < 0.02 and abs(z.std().item() - 1) < 0.02
    r = rng.randint(torch.arange(3), rng.STREAM_BATCH, 0, 500, torch.tensor([1, 7, 1000]))
    assert (r[0] == 0).all() and r[1].max() == 6 and r[2].min() >= 0 and r[2].max() < 1000


@pytest.mark.parametrize("conv_impl", ["grouped", "unfold"])
def test_batched_forward_matches_small_cnn(conv_impl):
    arch = CnnArch(1, 10, 8, 3)
    flat = init_params(arch, torch.arange(3), torch.tensor([0.5, 1.0, 2.0]))
    x = torch.randn(5, 1, 28, 28)
    for act in ("relu", "tanh", "gelu"):
        shared = forward(arch, flat, x, act, conv_impl=conv_impl)
        per_member = forward(arch, flat, x[:, None].expand(5, 3, 1, 28, 28), act, conv_impl=conv_impl)
        for b in range(3):
            m = build_arch("small_cnn", in_channels=1, channels=8, n_conv=3, activation=act).eval()
            m.load_state_dict({k: v[b] for k, v in unflatten(arch, flat).items()})
            ref = m(x)
            torch.testing.assert_close(shared[b], ref, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(per_member[b], ref, atol=1e-5, rtol=1e-5)


def test_batched_training_equals_torch_optim():
    """Per-member SGD / momentum / Adam with weight decay and data fractions give what torch.optim gives."""
    arch, data = CnnArch(1, 10, 8, 2), _toy_data()
    hp = _hp(seed=[3, 4, 5], optimizer=["sgd", "momentum", "adam"], lr=[0.1, 0.05, 0.01], weight_decay=[1e-3, 0.0, 1e-4],
             dropout=[0.0] * 3, init_scale=[1.0, 1.0, 0.5], train_fraction=[1.0, 0.5, 0.25])
    res = train_batch(arch, hp, "tanh", data, epochs=2, checkpoints=[0, 2], batch_size=16)
    n = len(data.y_train)
    for b in range(3):
        seeds = torch.tensor([hp.seed[b]])
        m = build_arch("small_cnn", in_channels=1, channels=8, n_conv=2, activation="tanh")
        m.load_state_dict({k: v[0] for k, v in unflatten(arch, res.snapshots[0][b:b + 1]).items()})
        if hp.optimizer[b] == "adam":
            opt = torch.optim.Adam(m.parameters(), lr=hp.lr[b], weight_decay=hp.weight_decay[b])
        else:
            opt = torch.optim.SGD(m.parameters(), lr=hp.lr[b], momentum=0.9 if hp.optimizer[b] == "momentum" else 0.0,
                                  weight_decay=hp.weight_decay[b])
        n_sub = torch.tensor([round(hp.train_fraction[b] * n)])
        subset = rng.per_member_permutation(seeds, rng.STREAM_SUBSET, n)
        for step in range(2 * res.steps_per_epoch):
            idx = subset.gather(1, rng.randint(seeds, rng.STREAM_BATCH, step, 16, n_sub))[0]
            loss = F.cross_entropy(m(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        ref = torch.cat([p.detach().reshape(-1) for p in m.state_dict().values()])
        torch.testing.assert_close(res.snapshots[2][b], ref, atol=1e-5, rtol=1e-5)


def test_member_trained_alone_equals_member_trained_in_a_batch():
    arch, data = CnnArch(1, 10, 8, 2), _toy_data()
    hp = _hp(seed=[7, 8, 9], optimizer=["sgd", "momentum", "adam"], lr=[0.1, 0.05, 0.01], weight_decay=[1e-3, 0, 1e-4],
             dropout=[0.2, 0.0, 0.5], init_scale=[1, 1, 0.5], train_fraction=[1, 0.5, 0.25])
    batch = train_batch(arch, hp, "relu", data, epochs=2, checkpoints=[1, 2], batch_size=16, eval_train_images=32)
    assert not torch.equal(batch.snapshots[2][0], batch.snapshots[1][0])  # it trained
    for b in range(3):
        alone = train_batch(arch, _one(hp, b), "relu", data, epochs=2, checkpoints=[1, 2], batch_size=16, eval_train_images=32)
        for e in (1, 2):
            torch.testing.assert_close(alone.snapshots[e][0], batch.snapshots[e][b], atol=1e-5, rtol=1e-5)
            for k, v in alone.metrics[e].items():
                assert abs(float(v[0]) - float(batch.metrics[e][k][b])) < 1e-4, (b, e, k)


def test_training_with_compiled_dropout_masks_equals_eager(monkeypatch):
    arch, data = CnnArch(1, 10, 8, 2), _toy_data()
    hp = _hp(seed=[7, 8], optimizer=["sgd", "adam"], lr=[0.1, 0.01], weight_decay=[1e-3, 0], dropout=[0.2, 0.6],
             init_scale=[1, 1], train_fraction=[1, 0.5])
    run = lambda: train_batch(arch, hp, "relu", data, epochs=1, checkpoints=[1], batch_size=16, eval_train_images=32)  # noqa: E731
    monkeypatch.setattr(fused_dropout, "COMPILE_MIN_ELEMENTS", 1 << 60)
    eager = run()
    monkeypatch.setattr(fused_dropout, "COMPILE_MIN_ELEMENTS", 0)
    compiled = run()
    assert fused_dropout.fused_available(), (fused_dropout._FORWARD[False].failure, fused_dropout._BACKWARD[False].failure)
    assert torch.equal(eager.snapshots[1], compiled.snapshots[1])  # the same masks, bit for bit


def test_long_runs_compile_the_dropout_of_smaller_activations(monkeypatch):
    """A run of LONG_RUN_STEPS steps or more pays for compiling activations down to LONG_RUN_MIN_ELEMENTS;
    the masks stay the eager ones, bit for bit (ReLU)."""
    assert fused_dropout.compile_min_elements(fused_dropout.LONG_RUN_STEPS - 1) == fused_dropout.COMPILE_MIN_ELEMENTS
    assert fused_dropout.compile_min_elements(fused_dropout.LONG_RUN_STEPS) == fused_dropout.LONG_RUN_MIN_ELEMENTS
    arch, data = CnnArch(1, 10, 8, 2), _toy_data()
    hp = _hp(seed=[7, 8], optimizer=["sgd", "adam"], lr=[0.1, 0.01], weight_decay=[1e-3, 0], dropout=[0.2, 0.6],
             init_scale=[1, 1], train_fraction=[1, 0.5])
    run = lambda: train_batch(arch, hp, "relu", data, epochs=2, checkpoints=[2], batch_size=16, eval_train_images=32)  # noqa: E731
    fused_calls = []
    fused = fused_dropout.activation_dropout
    monkeypatch.setattr(fused_dropout, "activation_dropout", lambda *a, **k: fused_calls.append(1) or fused(*a, **k))
    monkeypatch.setattr(fused_dropout, "COMPILE_MIN_ELEMENTS", 1 << 60)
    monkeypatch.setattr(fused_dropout, "LONG_RUN_MIN_ELEMENTS", 0)
    eager = run()  # 12 steps: a short run
    assert not fused_calls
    monkeypatch.setattr(fused_dropout, "LONG_RUN_STEPS", 12)
    long = run()
    assert len(fused_calls) == 12 * arch.n_conv and fused_dropout.fused_available()
    assert torch.equal(eager.snapshots[2], long.snapshots[2])


@pytest.mark.parametrize("compiled", [False, True])
def test_micro_batched_steps_equal_one_pass_steps(monkeypatch, compiled):
    """Slices of 5 images (16 = 5 + 5 + 5 + 1) train the members the one-pass step trains, dropout included."""
    monkeypatch.setattr(fused_dropout, "COMPILE_MIN_ELEMENTS", 0 if compiled else 1 << 60)
    arch, data = CnnArch(1, 10, 8, 2), _toy_data()
    hp = _hp(seed=[7, 8, 9], optimizer=["sgd", "adam", "rmsprop"], lr=[0.1, 0.01, 0.003], weight_decay=[1e-3, 0, 1e-4],
             dropout=[0.2, 0.6, 0.0], init_scale=[1, 1, 0.5], train_fraction=[1, 0.5, 0.25])
    run = lambda mb: train_batch(arch, hp, "tanh", data, epochs=2, checkpoints=[2], batch_size=16,  # noqa: E731
                                 eval_train_images=32, micro_batch=mb)
    whole, sliced = run(None), run(5)
    assert not torch.equal(whole.snapshots[2], init_params(arch, torch.tensor(hp.seed), torch.tensor([1, 1, 0.5])))
    torch.testing.assert_close(sliced.snapshots[2], whole.snapshots[2], atol=2e-6, rtol=1e-5)
    assert torch.equal(run(16).snapshots[2], whole.snapshots[2])  # a slice of the whole batch is the one-pass step
    if compiled:
        assert fused_dropout.fused_available()


def test_micro_batched_loss_and_gradient_equal_one_pass():
    arch, data = CnnArch(1, 10, 8, 3, padding=0, fc_hidden=6), _toy_data(size=16)
    seeds = torch.tensor([1, 2])
    flat = init_params(arch, seeds, torch.ones(2))
    idx = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(3))
    kw = dict(dropout=torch.tensor([0.3, 0.5]), seeds=seeds, step=4)
    loss, grad = loss_and_grad(arch, flat, "relu", data.x_train, data.y_train, idx, **kw)
    loss4, grad4 = loss_and_grad(arch, flat, "relu", data.x_train, data.y_train, idx, micro_batch=4, **kw)
    torch.testing.assert_close(loss4, loss, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad4, grad, atol=1e-6, rtol=1e-5)
    assert grad.abs().sum() > 0


def test_diverging_member_is_frozen_flagged_and_harmless():
    arch, data = CnnArch(1, 10, 8, 2), _toy_data()
    kw = dict(optimizer=["sgd", "adam"], weight_decay=[0, 0], dropout=[0, 0.1], init_scale=[1, 1], train_fraction=[1, 1])
    res = train_batch(arch, _hp(seed=[1, 2], lr=[1e12, 0.01], **kw), "relu", data, epochs=2, checkpoints=[0, 1, 2], batch_size=16)
    assert res.diverged_step[0] >= 0 and res.diverged_step[1] == -1
    assert all(torch.isfinite(s).all() for s in res.snapshots.values())
    sane = train_batch(arch, _hp(seed=[2], lr=[0.01], **{k: v[1:] for k, v in kw.items()}), "relu", data, epochs=2,
                       checkpoints=[2], batch_size=16)
    torch.testing.assert_close(res.snapshots[2][1], sane.snapshots[2][0], atol=1e-5, rtol=1e-5)


def test_hyperparameter_sampling_and_splits():
    grid = {"optimizer": {"choice": ["sgd", "adam"]}, "lr": {"log_uniform": {"sgd": [0.01, 0.1], "adam": [1e-4, 1e-3]}},
            "dropout": {"uniform": [0.0, 0.5]}, "train_fraction": 0.5}
    runs = sample_runs(grid, 40, grid_seed=3, seed_base=10)
    assert runs[:5] == sample_runs(grid, 5, grid_seed=3, seed_base=10)  # extending a zoo keeps its runs
    assert [r["seed"] for r in runs[:3]] == [10, 11, 12] and {r["optimizer"] for r in runs} == {"sgd", "adam"}
    for r in runs:
        lo, hi = (0.01, 0.1) if r["optimizer"] == "sgd" else (1e-4, 1e-3)
        assert lo <= r["lr"] <= hi and 0 <= r["dropout"] <= 0.5 and r["train_fraction"] == 0.5
    with pytest.raises(ConfigError, match="unknown grid keys"):
        sample_runs({"momentum": 0.9}, 2, 0)
    with pytest.raises(ConfigError, match="log_uniform"):
        sample_runs({"lr": {"log_uniform": [0, 1]}}, 2, 0)
    assert split_counts(8, {"train": 0.7, "val": 0.1, "test": 0.2}) == {"train": 5, "val": 1, "test": 2}
    s = assign_splits(range(100), {"train": 0.7, "val": 0.1, "test": 0.2}, seed=1)
    assert sorted(s.values()).count("train") == 70 and s == assign_splits(reversed(range(100)), {"train": 0.7, "val": 0.1, "test": 0.2}, 1)


@pytest.fixture(scope="module")
def tiny_cnn_zoo(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("WSBENCH_DATA_DIR", str(DATA_DIR))
    torch.set_num_threads(1)
    zoo = build_zoo("small_cnn_mnist", variant="tiny", out=tmp_path_factory.mktemp("cnn") / "zoo", progress=False)
    mp.undo()
    return zoo


def test_tiny_small_cnn_zoo_builds_reloads_and_its_metrics_are_true(tiny_cnn_zoo):
    from wsbench.data import load_split

    zoo = load_zoo(tiny_cnn_zoo.root)
    m = zoo.members
    need = {"train_acc", "test_acc", "train_loss", "test_loss", "gen_gap", "epoch", "run_id", "optimizer", "lr",
            "weight_decay", "dropout", "init_scale", "activation", "train_fraction", "seed", "diverged"}
    assert need <= set(m.columns) and len(m) == 16 and m["run_id"].nunique() == 8
    assert (m.groupby("run_id")["split"].nunique() == 1).all()  # checkpoints of a run never straddle splits
    assert set(m["split"]) == {"train", "val", "test"} and sorted(m["epoch"].unique()) == [0, 1]
    np.testing.assert_allclose(m["gen_gap"], m["train_acc"] - m["test_acc"])
    ws = zoo.weights(split="train")  # check_finite inside
    assert len(ws) == (m["split"] == "train").sum()
    test = load_split("mnist", "test", limit=256)
    row = m[m["epoch"] == 1].iloc[0]
    name, kwargs = member_arch(zoo.card, row)
    assert kwargs["activation"] == row["activation"] and kwargs["dropout"] == row["dropout"]
    net = build_arch(name, **kwargs).eval()
    net.load_state_dict(zoo.state_dict(row["id"]))
    with torch.no_grad():
        acc = (net(test.x).argmax(1) == test.y).float().mean().item()
    assert abs(acc - row["test_acc"]) < 1e-6


def test_interrupted_build_resumes_without_duplicates_or_losses(tiny_cnn_zoo, tmp_path, monkeypatch):
    real, calls, interrupt = small_cnn.train_shard, [], [True]

    def flaky(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 2 and interrupt and interrupt.pop():
            raise KeyboardInterrupt  # Ctrl-C while the second shard trains
        return real(*args, **kwargs)

    monkeypatch.setattr(small_cnn, "train_shard", flaky)
    out = tmp_path / "zoo"
    with pytest.raises(KeyboardInterrupt):
        build_zoo("small_cnn_mnist", variant="tiny", out=out, progress=False)
    assert not out.exists() and len(list((tmp_path / ".zoo.work" / "shards").glob("*.parquet"))) == 1
    n_shards = len(small_cnn.plan(tiny_cnn_zoo.card)[1])
    calls.clear()
    zoo = build_zoo("small_cnn_mnist", variant="tiny", out=out, progress=False)
    assert len(calls) == n_shards - 1  # the finished shard was not trained again
    ref = tiny_cnn_zoo.members
    assert list(zoo.members["id"]) == list(ref["id"]) and not zoo.members["id"].duplicated().any()
    for g in zoo.groups:
        a, b = zoo.weights(split="train", group=g), tiny_cnn_zoo.weights(split="train", group=g)
        assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert not (tmp_path / ".zoo.work").exists()


def test_families_share_hyperparameters_across_architectures(tmp_path):
    zoo = build_zoo("cnn_families_mnist", variant="tiny", out=tmp_path / "fam", progress=False)
    assert zoo.groups == ["d2w8", "d3w16", "d4w32"]
    m = zoo.members
    per = m[m["epoch"] == 0].pivot(index="run_index", columns="group", values="lr")
    assert (per.nunique(axis=1) == 1).all()
    assert m.groupby("run_index")["split"].nunique().max() == 1
    assert zoo.spec("d4w32").n_params == len(zoo.weights(m[m["group"] == "d4w32"]).flat()[0])


def test_siren_fits_match_alone_and_render_the_image():
    from wsbench.data import load_split

    imgs = load_split("mnist", "test", normalize=False, limit=3).x[:, 0]
    seeds = torch.tensor([11, 12, 13])
    params, mse = siren_inr.fit_sirens(imgs, seeds, steps=100, lr=3e-3)
    _, mse0 = siren_inr.fit_sirens(imgs, seeds, steps=0, lr=3e-3)
    assert (siren_inr.psnr(mse) > siren_inr.psnr(mse0) + 8).all()  # init ~4 dB, 100 steps ~18 dB
    alone, mse1 = siren_inr.fit_sirens(imgs[1:2], seeds[1:2], steps=100, lr=3e-3)
    torch.testing.assert_close(alone["layers.1.weight"][0], params["layers.1.weight"][1], atol=1e-5, rtol=1e-4)
    net = build_arch("siren").eval()
    net.load_state_dict({k: v[2] for k, v in params.items()})
    with torch.no_grad():
        img = net(image_coords(28)).view(28, 28)
    assert abs(((img - imgs[2]) ** 2).mean().item() - mse[2].item()) < 1e-6


def test_siren_recipe_fits_like_the_published_inrs():
    """The card's recipe (DWSNets init, Adam lr 1e-3, 1,000 steps) lands where the published MNIST
    INRs are, 20-30 dB (they average 24.3 dB), not at Sitzmann-init sharpness (~88 dB)."""
    from wsbench.data import load_split

    imgs = load_split("mnist", "train_full", normalize=False, limit=4).x[:, 0]
    _, mse = siren_inr.fit_sirens(imgs, torch.arange(4), steps=1000, lr=1e-3, stop_psnr=40)
    psnr = siren_inr.psnr(mse)
    assert ((psnr > 20) & (psnr < 30)).all(), psnr


def test_siren_inits_dwsnets_and_version_1():
    shapes = siren_inr.siren_shapes()
    seeds = torch.arange(2000)
    d = siren_inr.init_sirens(seeds, shapes, 30.0, "dwsnets")
    b0 = (6 / 2) ** 0.5 / 30
    assert 0.9 * b0 < d["layers.0.weight"].abs().max() <= b0  # is_first never set in DWSNets: no U(+-1/2)
    assert d["layers.1.weight"].abs().max() <= (6 / 32) ** 0.5 / 30
    assert not d["layers.0.bias"].any() and not d["layers.1.bias"].any()
    assert 0.9 / 32 ** 0.5 < d["layers.2.weight"].abs().max() <= 1 / 32 ** 0.5  # nn.Linear's default
    assert 0.9 / 32 ** 0.5 < d["layers.2.bias"].abs().max() <= 1 / 32 ** 0.5
    v1 = siren_inr.init_sirens(seeds, shapes, 30.0, "sitzmann")  # version 1 zoos: the same draws as then
    u = rng.uniform(seeds, rng.STREAM_INIT, 0, (32, 2))
    assert torch.equal(v1["layers.0.weight"], (2.0 * u - 1.0) * 0.5)
    assert torch.equal(v1["layers.0.bias"], (2.0 * rng.uniform(seeds, rng.STREAM_INIT, 1, (32,)) - 1.0) * (1 / math.sqrt(2)))
    with pytest.raises(ConfigError, match="SIREN init"):
        siren_inr.init_sirens(seeds, shapes, 30.0, "xavier")


def test_siren_fit_stops_at_the_psnr_target():
    from wsbench.data import load_split

    imgs = load_split("mnist", "test", normalize=False, limit=2).x[:, 0]
    seeds = torch.tensor([1, 2])
    start = siren_inr.init_sirens(seeds, siren_inr.siren_shapes(), 30.0)
    params, _ = siren_inr.fit_sirens(imgs, seeds, steps=5, lr=1e-3, stop_psnr=-100.0)  # reached at the start
    assert all(torch.equal(params[k], start[k]) for k in start)
    both, _ = siren_inr.fit_sirens(imgs, seeds, steps=60, lr=3e-3, stop_psnr=12.0)
    alone, _ = siren_inr.fit_sirens(imgs[:1], seeds[:1], steps=60, lr=3e-3, stop_psnr=12.0)
    torch.testing.assert_close(alone["layers.1.weight"][0], both["layers.1.weight"][0], atol=1e-5, rtol=1e-4)


def test_tiny_siren_zoo_has_dwsnets_splits_and_labels(tmp_path):
    from wsbench.data import load_split

    zoo = build_zoo("siren_mnist", variant="tiny", out=tmp_path / "inr", progress=False)
    m = zoo.members
    assert m["split"].value_counts().to_dict() == {"train": 10, "test": 4, "val": 2}
    assert (m[m["split"] == "test"]["source_split"] == "test").all()
    labels = load_split("mnist", "train_full", limit=12).y
    tr = m[m["source_split"] == "train"].sort_values("image_index")
    assert tr["label"].tolist() == labels.tolist() and (m["psnr"] > 14).all()  # tiny: 100 steps, ~18 dB


def test_tiny_trained_resnet_zoo(tmp_path):
    from wsbench.data import load_split

    zoo = build_zoo("cifar10_resnet_trained", variant="tiny", out=tmp_path / "rn", progress=False)
    row = zoo.members.iloc[0]
    assert len(zoo.members) == 1 and row["group"] == "resnet20" and row["steps"] == 2
    assert {"test_acc", "test_acc_exact", "test_source", "seed", "recipe"} <= set(zoo.members.columns)
    net = build_arch("resnet_cifar", depth=20).eval()
    net.load_state_dict(zoo.state_dict(row["id"]), strict=False)
    test = load_split("cifar10_exact", "test", limit=128)
    with torch.no_grad():
        acc = (net(test.x).argmax(1) == test.y).float().mean().item()
    assert abs(acc - row["test_acc_exact"]) < 1e-6


def test_build_zoo_command_line(tmp_path, capsys):
    from wsbench.cli import main

    out = tmp_path / "cli_zoo"
    assert main(["--quiet", "build-zoo", "cnn_families_mnist", "--variant", "tiny", "--out", str(out), "--device", "cpu"]) == 0
    assert "built cnn_families_mnist (tiny): 24 members" in capsys.readouterr().out
    assert main(["build-zoo", "cnn_families_mnist", "--variant", "tiny", "--out", str(out)]) == 0
    assert "already built" in capsys.readouterr().out
    assert main(["build-zoo", "small_cnn_mnistt", "--variant", "tiny"]) == 2
    assert "did you mean 'small_cnn_mnist'" in capsys.readouterr().err
    assert main(["build-zoo", "small_cnn_mnist", "--variant", "huge"]) == 2
    if not torch.cuda.is_available():
        assert main(["build-zoo", "small_cnn_mnist", "--variant", "tiny", "--device", "cuda", "--out", str(tmp_path / "x")]) == 2
        assert "no CUDA device" in capsys.readouterr().err


def test_summary_counts_and_checksums(tiny_cnn_zoo, tmp_path):
    import json

    from wsbench.manifest import sha256_file
    from wsbench.zoo_summary import write_summary

    js, md = write_summary(tiny_cnn_zoo, tmp_path)
    s = json.loads(js.read_text())
    assert s["counts"]["members"] == 16 and s["counts"]["runs"] == 8 and s["counts"]["by_epoch"] == {"0": 8, "1": 8}
    assert s["files"]["weights/cnn.safetensors"]["sha256"] == sha256_file(tiny_cnn_zoo.root / "weights/cnn.safetensors")
    assert math.isclose(s["metrics"]["test_acc"]["mean"], tiny_cnn_zoo.members["test_acc"].mean())
    assert "| test_acc |" in md.read_text() and "weights/cnn.safetensors" in md.read_text()


def test_committed_siren_parity_is_for_the_cards_current_recipe():
    """leaderboards/parity/siren_mnist_small.json is the zoo-vs-published-INRs check; it must be
    re-run (scripts/siren_parity.py) whenever the card's recipe or version changes."""
    import json
    from pathlib import Path

    from wsbench.registry import ZOOS

    root = Path(__file__).resolve().parents[1]
    parity = json.loads((root / "leaderboards" / "parity" / "siren_mnist_small.json").read_text())
    card = ZOOS.get("siren_mnist").resolve("small")
    assert parity["zoo_version"] == card.version and parity["variant"] == "small"
    assert parity["recipe"] == {k: card.recipe.get(k) for k in ("steps", "lr", "init", "stop_psnr")}
    assert parity["passes"] and 20 <= parity["psnr_db"]["mean"] <= 30
    assert all(abs(r["ratio"] - 1) <= 0.15 for r in parity["tensors"].values())


def test_siren_parity_script_on_a_tiny_zoo(tmp_path):
    from script_loader import load_script

    mod = load_script("siren_parity")
    zoo = build_zoo("siren_mnist", variant="tiny", out=tmp_path / "inr", progress=False)
    res = mod.compare(zoo)
    assert set(res["tensors"]) == set(mod.PUBLISHED_STD) and res["n_train_inrs"] == 10
    assert not res["passes"]  # the tiny variant is a smoke test (100 steps), not the recipe
    assert "DOES NOT PASS" in mod.markdown(res, "cmd")
