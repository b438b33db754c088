"""Small CNN zoos in the style of the Small CNN Zoo (Unterthiner et al. 2020), and architecture
families of the same recipe (one card group per depth/width).

Per run, hyper-parameters are sampled from the card's grid (optimizer, learning rate, weight
decay or Keras-style `l2reg`, dropout, weight initialisation scheme and scale, activation,
fraction of the training data); every run is checkpointed at the card's epochs, and each
checkpoint is one member (`run_id` links them). Recipe keys that hold for every run: conv
`padding` (in the card's arch kwargs), `weight_decay_on` (all | kernels), `adam_eps`,
`epoch_steps` (dataset | subset: see batched_training.train_batch), `micro_batch` (images per
forward/backward pass, default the whole batch: a memory bound, same step to float rounding) and `input_scaling`
(standardize: z-score, BT.601 luma for gray | signed_unit: [-1, 1], channel-mean gray, as the
published Small CNN Zoo).
Runs train many at once (batched_training), in shards of `members_per_shard` runs of one group
and one activation; finished shards are kept in the work folder, so a build resumes. Under
torchrun each rank trains its own shards (BuildContext.owns) and rank 0 assembles the zoo.
"""
from __future__ import annotations

import time
from typing import Any

import pandas as pd
import torch

from ..allocator import release_free_memory
from ..errors import ConfigError
from ..zoo_card import ZooCard
from . import BUILDERS, BuildContext, BuildResult, shards_across_ranks
from .batched_training import (ACTIVATIONS, OPTIMIZERS, W_INITS, CnnArch, ImageData, MemberHParams, TrainingRules,
                               train_batch, unflatten)
from .planning import assign_splits, device_name, progress, sample_runs
from .resumable import assemble, card_fingerprint, combine_reports, load_shards, open_store

HPARAM_COLUMNS = ("optimizer", "lr", "weight_decay", "dropout", "init_scale", "activation", "train_fraction", "seed")
OPTIONAL_COLUMNS = ("w_init", "init_std", "l2reg")  # members columns only when the card's grid samples them
DEFAULTS = {"optimizer": "adam", "activation": "relu", "lr": 1e-3, "weight_decay": 0.0, "dropout": 0.0,
            "init_scale": 1.0, "train_fraction": 1.0, "w_init": "scaled_he", "init_std": 0.05}
INPUT_SCALINGS = ("standardize", "signed_unit")


def cnn_arch(card: ZooCard, group: str) -> CnnArch:
    a = card.archs[group]
    if a["arch"] != "small_cnn":
        raise ConfigError(f"zoo {card.name}: builder small_cnn_zoo needs arch small_cnn, group {group} has {a['arch']!r}")
    kw = dict(a.get("kwargs", {}))
    extra = sorted(set(kw) - {"in_channels", "num_classes", "channels", "n_conv", "activation", "dropout", "padding",
                              "fc_hidden"})
    if extra:
        raise ConfigError(f"zoo {card.name}, group {group}: small_cnn kwargs {extra} are not supported by the builder")
    padding = kw.get("padding", 1)
    if padding not in (0, 1):
        raise ConfigError(f"zoo {card.name}, group {group}: padding must be 0 (published, 'valid') or 1, got {padding!r}")
    return CnnArch(kw.get("in_channels", 1), kw.get("num_classes", 10), kw.get("channels", 16), kw.get("n_conv", 3),
                   padding, int(kw.get("fc_hidden", 0)))


def training_rules(card: ZooCard) -> TrainingRules:
    r = card.recipe
    rules = TrainingRules(weight_decay_on=r.get("weight_decay_on", "all"), adam_eps=float(r.get("adam_eps", 1e-8)),
                          epoch=r.get("epoch_steps", "dataset"))
    for key, value, allowed in (("weight_decay_on", rules.weight_decay_on, ("all", "kernels")),
                                ("epoch_steps", rules.epoch, ("dataset", "subset")),
                                ("input_scaling", r.get("input_scaling", "standardize"), INPUT_SCALINGS)):
        if value not in allowed:
            raise ConfigError(f"zoo {card.name}: recipe.{key} must be one of {list(allowed)}, got {value!r}")
    return rules


def micro_batch(card: ZooCard) -> int | None:
    """recipe.micro_batch: images per forward/backward pass of a step (None: the whole batch)."""
    value = card.recipe.get("micro_batch")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"zoo {card.name}: recipe.micro_batch must be a positive integer (images per pass), got {value!r}")
    return value


def hparam_columns(card: ZooCard) -> tuple[str, ...]:
    return HPARAM_COLUMNS + tuple(c for c in OPTIONAL_COLUMNS if c in card.grid)


def load_image_data(card: ZooCard, device: torch.device) -> tuple[ImageData, dict[str, str]]:
    from ..data import load_split

    r = card.recipe
    gray = bool(r.get("grayscale", False))
    signed = r.get("input_scaling", "standardize") == "signed_unit"  # the published zoo: [-1, 1], gray = RGB mean
    splits = [load_split(card.dataset, split, device=device, normalize=not signed, grayscale=gray and not signed,
                         limit=r.get(limit)) for split, limit in (("train_full", "train_images"), ("test", "test_images"))]
    x_tr, x_te = ((s.x.mean(1, keepdim=True) if gray else s.x) * 2.0 - 1.0 if signed else s.x for s in splits)
    tr, te = splits
    return ImageData(x_tr, tr.y, x_te, te.y), {"train_source": tr.source, "test_source": te.source}


def plan(card: ZooCard) -> tuple[list[dict[str, Any]], list[tuple[str, str, list[int]]]]:
    """(runs, shards): runs[i] = hyper-parameters of run i; a shard = (group, activation, run indices)."""
    r = card.recipe
    n_runs = int(r.get("runs", 0))
    if n_runs < 1:
        raise ConfigError(f"zoo {card.name}: recipe.runs must be a positive integer")
    if "l2reg" in card.grid and "weight_decay" in card.grid:
        raise ConfigError(f"zoo {card.name}: the grid samples weight_decay or l2reg (Keras l2: weight_decay = 2 l2reg), "
                          "not both")
    rules = training_rules(card)
    micro_batch(card)
    grid = {**DEFAULTS, **card.grid}
    runs = sample_runs(grid, n_runs, int(card.seeds.get("grid", 0)), int(card.seeds.get("init", 0)))
    for hp in runs:
        if "l2reg" in card.grid:  # Keras kernel_regularizer l2(l): loss + l * sum(w^2), gradient 2 l w
            hp["weight_decay"] = 2.0 * hp["l2reg"]
        if hp["w_init"] not in W_INITS:
            raise ConfigError(f"zoo {card.name}: w_init {hp['w_init']!r} unknown (known: {', '.join(W_INITS)})")
        if hp["optimizer"] not in OPTIMIZERS:
            raise ConfigError(f"zoo {card.name}: optimizer {hp['optimizer']!r} unknown (known: {', '.join(OPTIMIZERS)})")
        if hp["activation"] not in ACTIVATIONS:
            raise ConfigError(f"zoo {card.name}: activation {hp['activation']!r} unknown (known: {', '.join(ACTIVATIONS)})")
    per_shard = int(r.get("members_per_shard", 256))
    # one shard trains in lockstep: one activation; with subset epochs also one train_fraction (one step count)
    by_fraction = rules.epoch == "subset"
    shards = []
    for group in card.archs:
        for act in sorted({hp["activation"] for hp in runs}):
            fractions = sorted({hp["train_fraction"] for hp in runs}) if by_fraction else [None]
            for frac in fractions:
                idx = [i for i, hp in enumerate(runs) if hp["activation"] == act
                       and (frac is None or hp["train_fraction"] == frac)]
                n_shards = -(-len(idx) // per_shard)  # equal shards of at most per_shard runs (no small tail)
                for k in range(n_shards):
                    shards.append((group, act, idx[k * len(idx) // n_shards:(k + 1) * len(idx) // n_shards]))
    return runs, shards


def _epochs_and_checkpoints(card: ZooCard) -> tuple[int, list[int]]:
    epochs = int(card.recipe.get("epochs", 1))
    ckpts = sorted({int(e) for e in card.recipe.get("checkpoints", [epochs])})
    if not ckpts or ckpts[0] < 0 or ckpts[-1] > epochs:
        raise ConfigError(f"zoo {card.name}: recipe.checkpoints must lie in 0..epochs ({epochs}), got {ckpts}")
    return epochs, ckpts


def train_shard(card: ZooCard, group: str, activation: str, run_idx: list[int], runs: list[dict[str, Any]],
                data: ImageData, on_step=None) -> tuple[pd.DataFrame, dict[str, torch.Tensor], dict[str, Any]]:
    arch = cnn_arch(card, group)
    epochs, ckpts = _epochs_and_checkpoints(card)
    r = card.recipe
    hp = MemberHParams(**{k: [runs[i][k] for i in run_idx] for k in
                          ("seed", "optimizer", "lr", "weight_decay", "dropout", "init_scale", "train_fraction",
                           "w_init", "init_std")})
    res = train_batch(arch, hp, activation, data, epochs=epochs, checkpoints=ckpts, batch_size=int(r.get("batch_size", 128)),
                      eval_train_images=int(r.get("eval_train_images", 2000)), conv_impl=r.get("conv_impl", "grouped"),
                      on_step=on_step, rules=training_rules(card), micro_batch=micro_batch(card))
    rows, flats = [], []
    for b, i in enumerate(run_idx):
        s = int(res.diverged_step[b])
        for e in ckpts:
            if s >= 0 and s < e * res.steps_per_epoch:
                continue  # the member's parameters stopped being finite before this checkpoint
            m = {k: float(v[b]) for k, v in res.metrics[e].items()}
            run_id = f"{group}_r{i:05d}"
            rows.append({"id": f"{run_id}_e{e:03d}", "run_id": run_id, "run_index": i, "epoch": e,
                         "step": e * res.steps_per_epoch, **{c: runs[i][c] for c in hparam_columns(card)},
                         **m, "gen_gap": m["train_acc"] - m["test_acc"], "diverged": s >= 0,
                         "diverged_epoch": (s // res.steps_per_epoch + 1) if s >= 0 else -1,
                         "n_conv": arch.n_conv, "channels": arch.channels, "n_params": arch.n_params,
                         "shard_row": len(flats)})
            flats.append(res.snapshots[e][b])
    flat = torch.stack(flats) if flats else torch.zeros(0, arch.n_params)
    stats = {"train_seconds": res.train_seconds, "runs": len(run_idx), "steps_per_epoch": res.steps_per_epoch,
             "diverged_runs": int((res.diverged_step >= 0).sum())}
    return pd.DataFrame(rows), {k: v.contiguous() for k, v in unflatten(arch, flat).items()}, stats


@BUILDERS.register("small_cnn_zoo")
@shards_across_ranks
def build_small_cnn_zoo(card: ZooCard, ctx: BuildContext) -> BuildResult:
    t_start = time.perf_counter()
    runs, shards = plan(card)
    epochs, _ = _epochs_and_checkpoints(card)
    store = open_store(ctx, card_fingerprint(card, {"device": ctx.device.type}))
    shard_ids = [f"{g}-{a}-{k:05d}" for k, (g, a, _) in enumerate(shards)]
    n_done = sum(store.has(sid) for sid in shard_ids)
    todo = [k for k, sid in enumerate(shard_ids) if ctx.owns(k) and not store.has(sid)]
    n_total = sum(len(s[2]) for s in shards)
    if n_done:
        ctx.log(f"{card.name}: resuming, {n_done} of {len(shards)} shards already built")
    trained: dict[str, Any] = {"train_seconds": 0.0, "runs": 0, "diverged_runs": 0}
    sources: dict[str, str] = {}
    if todo:
        data, sources = load_image_data(card, ctx.device)
        n_mine = sum(len(s[2]) for k, s in enumerate(shards) if ctx.owns(k))
        bar = progress(n_mine, f"build {card.name}", ctx.progress)
        bar.update(n_mine - sum(len(shards[k][2]) for k in todo))
        for k in todo:
            group, act, idx = shards[k]
            per_step = len(idx) / max(1, epochs * -(-data.x_train.shape[0] // int(card.recipe.get("batch_size", 128))))
            members, tensors, st = train_shard(card, group, act, idx, runs, data, on_step=lambda _s: bar.update(per_step))
            store.save(shard_ids[k], group, members, tensors)
            del members, tensors
            release_free_memory()  # the next shard's shapes differ: start it from a trimmed heap
            for key in trained:
                trained[key] += st[key]
            trained["steps_per_epoch"] = st["steps_per_epoch"]
        bar.close()
    reports = ctx.gather({**trained, "sources": sources})  # every rank has saved its shards
    if not ctx.is_main:
        return BuildResult(pd.DataFrame(), {})
    trained = combine_reports(reports, maximum=("train_seconds", "steps_per_epoch"))
    sources = trained.pop("sources")
    parts = load_shards(store, shard_ids, ctx.world_size)
    members, weights = assemble(parts, sort_by=["group", "run_index", "epoch"])
    split_cfg = card.splits or {}
    fractions = split_cfg.get("fractions", {"train": 0.7, "val": 0.1, "test": 0.2})
    by_run = assign_splits(range(len(runs)), fractions, int(card.seeds.get("split", 0)))
    members.insert(1, "split", [by_run[int(i)] for i in members["run_index"]])
    members = members[["id", "split", "group", "row"] + [c for c in members.columns if c not in ("id", "split", "group", "row")]]
    stats = {"device": device_name(ctx.device), "runs_total": n_total, "runs_trained_now": trained["runs"],
             "train_seconds": round(trained["train_seconds"], 3),
             "networks_per_s": round(trained["runs"] / trained["train_seconds"], 3) if trained["train_seconds"] else None,
             "diverged_runs_now": trained["diverged_runs"], "members": len(members),
             "wall_seconds": round(time.perf_counter() - t_start, 3), **sources}
    if trained.get("steps_per_epoch"):
        stats["steps_per_epoch"] = trained["steps_per_epoch"]
    ctx.log(f"{card.name}: {len(members)} members from {n_total} runs; trained {trained['runs']} runs in "
            f"{trained['train_seconds']:.1f}s" + (f" ({stats['networks_per_s']:.2f} networks/s on {stats['device']})"
                                                  if stats["networks_per_s"] else ""))
    return BuildResult(members.reset_index(drop=True), weights, stats)
