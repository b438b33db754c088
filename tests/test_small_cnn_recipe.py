"""The published Small CNN Zoo recipe's parts in the batched builder (Unterthiner et al. 2020, whose
code is tf.keras): 'valid' padding, RMSprop, L2 on kernels only, Keras's weight initialisers, epochs
of one pass over a run's own subset, [-1, 1] inputs. Each is checked against a plain torch reference
of the same rule; the suite's v1 recipe is unchanged by them."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from wsbench.archs import build_arch
from wsbench.errors import ConfigError
from wsbench.zoo_builders import counter_rng as rng
from wsbench.zoo_builders.batched_training import (TRUNCATED_STD, CnnArch, ImageData, MemberHParams, TrainingRules,
                                                   forward, init_params, train_batch, unflatten)
from wsbench.zoo_builders.small_cnn import hparam_columns, plan
from wsbench.zoo_card import ZooCard


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _data(n: int = 96, size: int = 13, seed: int = 0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)
    return ImageData(x, y, x[:40], y[:40])


@pytest.mark.parametrize("conv_impl,fc_hidden", [("grouped", 0), ("unfold", 0), ("grouped", 12), ("unfold", 12)])
def test_valid_padding_matches_the_architecture(conv_impl, fc_hidden):
    arch = CnnArch(1, 10, 8, 3, padding=0, fc_hidden=fc_hidden)
    flat = init_params(arch, torch.arange(2), torch.ones(2))
    x = torch.randn(4, 1, 28, 28)
    out = forward(arch, flat, x, "relu", conv_impl=conv_impl)
    for b in range(2):
        m = build_arch("small_cnn", in_channels=1, channels=8, n_conv=3, padding=0, fc_hidden=fc_hidden).eval()
        m.load_state_dict({k: v[b] for k, v in unflatten(arch, flat).items()})
        torch.testing.assert_close(out[b], m(x), atol=1e-5, rtol=1e-5)
    assert F.conv2d(x, torch.zeros(1, 1, 3, 3), stride=2).shape[-1] == 13  # 28 -> 13 -> 6 -> 2, as published


@pytest.mark.parametrize("fc_hidden", [0, 12])
def test_rmsprop_kernel_l2_and_subset_epochs_equal_a_torch_reference(fc_hidden):
    """RMSprop (rho 0.9, eps 1e-7 = torch.optim.RMSprop(alpha=0.9, eps=1e-7)), weight decay on kernels only,
    each epoch one pass over the run's own subset in a fresh order, floor(n_sub / batch) steps; with and
    without the hidden linear layer of SNE's Arch2."""
    arch, data = CnnArch(1, 10, 8, 2, padding=0, fc_hidden=fc_hidden), _data()
    hp = MemberHParams(seed=[3, 4], optimizer=["rmsprop", "sgd"], lr=[1e-3, 0.05], weight_decay=[2e-3, 1e-2],
                       dropout=[0.0, 0.0], init_scale=[1.0, 1.0], train_fraction=[0.5, 0.5])
    rules = TrainingRules(weight_decay_on="kernels", epoch="subset")
    res = train_batch(arch, hp, "tanh", data, epochs=2, checkpoints=[0, 2], batch_size=16, rules=rules)
    n_sub = round(0.5 * len(data.y_train))
    assert res.steps_per_epoch == n_sub // 16 == 3
    for b in range(2):
        seeds = torch.tensor([hp.seed[b]])
        m = build_arch("small_cnn", in_channels=1, channels=8, n_conv=2, activation="tanh", padding=0,
                       fc_hidden=fc_hidden)
        m.load_state_dict({k: v[0] for k, v in unflatten(arch, res.snapshots[0][b:b + 1]).items()})
        kernels = [p for k, p in m.named_parameters() if k.endswith("weight")]
        biases = [p for k, p in m.named_parameters() if k.endswith("bias")]
        groups = [{"params": kernels, "weight_decay": hp.weight_decay[b]}, {"params": biases, "weight_decay": 0.0}]
        opt = (torch.optim.RMSprop(groups, lr=hp.lr[b], alpha=0.9, eps=1e-7) if hp.optimizer[b] == "rmsprop"
               else torch.optim.SGD(groups, lr=hp.lr[b]))
        subset = rng.per_member_permutation(seeds, rng.STREAM_SUBSET, len(data.y_train))
        for epoch in (1, 2):
            order = torch.argsort(rng.uniform(seeds, rng.STREAM_BATCH, (1 << 40) + epoch, (n_sub,)), dim=1, stable=True)
            for i in range(res.steps_per_epoch):
                idx = subset.gather(1, order[:, i * 16:(i + 1) * 16])[0]
                loss = F.cross_entropy(m(data.x_train[idx]), data.y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        ref = torch.cat([p.detach().reshape(-1) for p in m.state_dict().values()])
        torch.testing.assert_close(res.snapshots[2][b], ref, atol=1e-5, rtol=1e-4)


def test_subset_epochs_need_one_train_fraction_per_batch():
    hp = MemberHParams(seed=[1, 2], optimizer=["sgd"] * 2, lr=[0.1] * 2, weight_decay=[0.0] * 2, dropout=[0.0] * 2,
                       init_scale=[1.0] * 2, train_fraction=[0.5, 1.0])
    with pytest.raises(ValueError, match="share their train_fraction"):
        train_batch(CnnArch(1, 10, 4, 2), hp, "relu", _data(), epochs=1, checkpoints=[1], batch_size=16,
                    rules=TrainingRules(epoch="subset"))


def test_keras_initialisers():
    arch = CnnArch(1, 10, 16, 3, padding=0)
    schemes = ["he_normal", "glorot_normal", "orthogonal", "normal", "truncated_normal"]
    seeds = torch.arange(200)
    w_init = [schemes[i % 5] for i in range(200)]
    std = torch.full((200,), 0.3)
    p = unflatten(arch, init_params(arch, seeds, torch.ones(200), w_init, std))
    w = p["convs.1.weight"]  # [B, 16, 16, 3, 3]: fan_in = fan_out = 144
    pick = lambda name: w[[i for i in range(200) if w_init[i] == name]]  # noqa: E731
    he, glorot = pick("he_normal"), pick("glorot_normal")
    assert he.std().item() == pytest.approx(math.sqrt(2 / 144), rel=0.03)
    assert glorot.std().item() == pytest.approx(math.sqrt(2 / 288), rel=0.03)
    assert he.abs().max().item() <= 2 * math.sqrt(2 / 144) / TRUNCATED_STD + 1e-6  # truncated at 2 sigma
    assert pick("normal").std().item() == pytest.approx(0.3, rel=0.03)
    tn = pick("truncated_normal")
    assert tn.abs().max().item() <= 0.6 + 1e-6 and tn.std().item() == pytest.approx(0.3 * TRUNCATED_STD, rel=0.03)
    for kernel in pick("orthogonal"):  # Keras layout (3, 3, in, out) flattened to (144, 16): orthonormal columns
        k = kernel.permute(2, 3, 1, 0).reshape(144, 16)
        torch.testing.assert_close(k.T @ k, torch.eye(16), atol=1e-5, rtol=0)
    fc = p["fc.weight"][[i for i in range(200) if w_init[i] == "orthogonal"]]  # Keras (16, 10) = torch (10, 16)^T
    torch.testing.assert_close(fc @ fc.transpose(1, 2), torch.eye(10).expand(len(fc), 10, 10), atol=1e-5, rtol=0)
    assert all(torch.count_nonzero(p[f"convs.{i}.bias"]) == 0 for i in range(3))


def test_the_v1_initialisation_is_unchanged():
    arch, seeds, scale = CnnArch(1, 10, 8, 2), torch.arange(4), torch.tensor([0.5, 1.0, 1.5, 2.0])
    flat = init_params(arch, seeds, scale)
    torch.testing.assert_close(flat, init_params(arch, seeds, scale, ["scaled_he"] * 4), rtol=0, atol=0)
    z = rng.normal(seeds, rng.STREAM_INIT, 0, (8 * 9,))
    torch.testing.assert_close(unflatten(arch, flat)["convs.0.weight"].reshape(4, -1),
                               z * (scale.view(-1, 1) * math.sqrt(2 / 9)), rtol=0, atol=0)


def _card(**over) -> ZooCard:
    d = {"name": "t", "version": "1", "description": "", "kind": "cnn", "dataset": "mnist", "builder": "small_cnn_zoo",
         "archs": {"cnn": {"arch": "small_cnn", "kwargs": {"padding": 0}}}, "variants": {"tiny": {}},
         "recipe": {"runs": 40, "members_per_shard": 8, "epoch_steps": "subset", "weight_decay_on": "kernels"},
         "grid": {"optimizer": {"choice": ["sgd", "adam", "rmsprop"]}, "activation": {"choice": ["relu", "tanh"]},
                  "lr": {"log_uniform": [5e-4, 5e-2]}, "l2reg": {"log_uniform": [1e-8, 1e-2]},
                  "train_fraction": {"choice": [0.1, 0.25, 0.5, 1.0]},
                  "w_init": {"choice": ["he_normal", "orthogonal", "normal"]}, "init_std": {"log_uniform": [1e-3, 0.5]}}}
    for key, value in over.items():
        d[key] = {**d[key], **value} if isinstance(value, dict) else value
    return ZooCard.from_dict(d)


def test_plan_of_a_published_style_card():
    card = _card()
    runs, shards = plan(card)
    assert all(r["weight_decay"] == 2 * r["l2reg"] for r in runs)  # Keras l2(l): gradient 2 l w
    for _, act, idx in shards:  # subset epochs: a shard is one activation and one train_fraction
        assert len({runs[i]["activation"] for i in idx}) == 1 and len({runs[i]["train_fraction"] for i in idx}) == 1
    assert sorted(i for _, _, idx in shards for i in idx) == list(range(40))
    sizes: dict = {}
    for _, act, idx in shards:
        sizes.setdefault((act, runs[idx[0]]["train_fraction"]), []).append(len(idx))
    per_shard = int(card.recipe.get("members_per_shard", 256))
    assert all(max(s) - min(s) <= 1 and max(s) <= per_shard for s in sizes.values())  # equal shards, no small tail
    assert hparam_columns(card)[-3:] == ("w_init", "init_std", "l2reg")
    v1_style = ZooCard.from_dict({**card.__dict__, "grid": {"lr": {"log_uniform": [1e-3, 1e-2]}}})
    assert not set(hparam_columns(v1_style)) & {"w_init", "init_std", "l2reg"}  # v1 members tables keep their columns


@pytest.mark.parametrize("over,needle", [
    ({"grid": {"weight_decay": {"log_uniform": [1e-8, 1e-2]}}}, "not both"),
    ({"recipe": {"epoch_steps": "epoch"}}, "epoch_steps"),
    ({"recipe": {"input_scaling": "minmax"}}, "input_scaling"),
    ({"grid": {"w_init": {"choice": ["xavier"]}}}, "xavier"),
    ({"recipe": {"micro_batch": 0}}, "micro_batch"),
    ({"recipe": {"micro_batch": "half"}}, "micro_batch"),
])
def test_bad_recipe_values_are_named(over, needle):
    with pytest.raises(ConfigError, match=needle):
        plan(_card(**over))
