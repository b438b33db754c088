"""CIFAR-10 ResNets trained by the suite (`cifar10_resnet_trained`): ResNet20/56 (akamaster
architecture, option-A shortcuts) for several seeds and recipes, with standard augmentation
(4-pixel padded random crop and horizontal flip), each member's accuracy measured on the CIFAR-10
JPEG test set (`test_acc`) and on the lossless subset (`test_acc_exact`), as the pretrained
members of `cifar10_resnet`, which the full variant includes (`include_pretrained`).

ResNets are large enough to fill a GPU one at a time, so members train sequentially; every
finished member is a shard in the work folder (an interrupted build resumes at the next member).
Under torchrun each rank trains its own members (BuildContext.owns) and rank 0 assembles the zoo.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from ..archs import build_arch
from ..errors import ConfigError
from ..evaluation import accuracy
from ..zoo_card import ZooCard
from . import BUILDERS, BuildContext, BuildResult, shards_across_ranks
from .planning import device_name, progress
from .resumable import assemble, card_fingerprint, combine_reports, load_shards, open_store

RECIPE_KEYS = {"epochs", "lr", "momentum", "weight_decay", "batch_size", "schedule", "warmup_epochs"}


def _members(card: ZooCard) -> list[dict[str, Any]]:
    recipes = card.recipe.get("recipes", {})
    out = []
    for entry in card.recipe.get("members", []):
        group, name = entry.get("group"), entry.get("recipe")
        if group not in card.archs:
            raise ConfigError(f"zoo {card.name}: member group {group!r} is not in archs ({sorted(card.archs)})")
        if name not in recipes:
            raise ConfigError(f"zoo {card.name}: recipe {name!r} is not defined (recipes: {sorted(recipes)})")
        bad = sorted(set(recipes[name]) - RECIPE_KEYS)
        if bad:
            raise ConfigError(f"zoo {card.name}: recipe {name} has unknown keys {bad} (known: {sorted(RECIPE_KEYS)})")
        for seed in entry.get("seeds", [0]):
            out.append({"group": group, "recipe": name, "seed": int(seed), **recipes[name]})
    if not out:
        raise ConfigError(f"zoo {card.name}: recipe.members lists no networks to train")
    return out


def lr_at(step: int, total: int, warmup: int, base: float, schedule: str) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    if schedule == "cosine":
        return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    if schedule == "multistep":  # /10 at 50% and 75% of training (akamaster's 100/150 of 200)
        return base * (0.1 ** ((step >= total // 2) + (step >= 3 * total // 4)))
    if schedule == "constant":
        return base
    raise ConfigError(f"unknown lr schedule {schedule!r} (cosine, multistep, constant)")


def train_resnet(card: ZooCard, m: dict[str, Any], train, device: torch.device, on_step=None) -> tuple[torch.nn.Module, dict]:
    from ..data import random_crop_flip

    kwargs = card.archs[m["group"]].get("kwargs", {})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(m["seed"])
        model = build_arch(card.archs[m["group"]]["arch"], **kwargs)
    model = model.to(device).train()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=m.get("lr", 0.1), momentum=m.get("momentum", 0.9),
                          weight_decay=m.get("weight_decay", 1e-4))
    bs, epochs = int(m.get("batch_size", 128)), int(m["epochs"])
    n = len(train.y)
    steps_per_epoch = math.ceil(n / bs)
    total, warmup = epochs * steps_per_epoch, int(m.get("warmup_epochs", 0) * steps_per_epoch)
    g = torch.Generator().manual_seed(10_000 + m["seed"])  # data order and augmentation
    amp = device.type == "cuda" and card.recipe.get("amp", True)
    step, loss_sum, correct = 0, 0.0, 0
    for epoch in range(epochs):
        order = torch.randperm(n, generator=g).to(device)
        loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
        for i in range(steps_per_epoch):
            idx = order[i * bs:(i + 1) * bs]
            xb = random_crop_flip(train.x[idx], 4, generator=g)
            if device.type == "cuda":
                xb = xb.contiguous(memory_format=torch.channels_last)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, warmup, m.get("lr", 0.1), m.get("schedule", "cosine"))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(xb)
                loss = F.cross_entropy(logits, train.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(1) == train.y[idx]).sum()
            step += 1
            if on_step is not None:
                on_step(step)
    last = {"train_loss_last_epoch": float(loss_sum) / n, "train_acc_last_epoch": float(correct) / n,
            "steps": step, "steps_per_epoch": steps_per_epoch}
    if not math.isfinite(last["train_loss_last_epoch"]):
        raise ConfigError(f"zoo {card.name}: {m['group']} {m['recipe']} seed {m['seed']} diverged (non-finite loss); "
                          "lower the recipe's lr")
    return model.eval(), last


def _pretrained_parts(card: ZooCard, ctx: BuildContext) -> list:
    from .pretrained_resnet import build_pretrained_resnet

    src = card.recipe["include_pretrained"]
    pre_card = replace(card, archs={g: card.archs[g] for g in src["checkpoints"]},
                       recipe={"checkpoints": src["checkpoints"], "eval_limit": card.recipe.get("eval_limit")})
    res = build_pretrained_resnet(pre_card, ctx)
    parts = []
    for _, row in res.members.iterrows():
        df = row.to_frame().T.drop(columns=["split", "group", "row"]).assign(shard_row=0, source_kind="pretrained")
        parts.append((row["group"], df, res.weights[row["group"]]))
    return parts


@BUILDERS.register("resnet_training")
@shards_across_ranks
def build_resnet_training(card: ZooCard, ctx: BuildContext) -> BuildResult:
    from ..data import load_split

    t_start = time.perf_counter()
    members = _members(card)
    limit, eval_limit = card.recipe.get("train_images"), card.recipe.get("eval_limit")
    store = open_store(ctx, card_fingerprint(card, {"device": ctx.device.type}))
    ids = [f"{m['group']}_{m['recipe']}_s{m['seed']}" for m in members]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"zoo {card.name}: recipe.members lists a (group, recipe, seed) twice")
    todo = [k for k, i in enumerate(ids) if ctx.owns(k) and not store.has(i)]
    train_seconds = 0.0
    if todo:
        train = load_split(card.dataset, "train_full", device=ctx.device, limit=limit)
        tests = {"test_acc": load_split(card.dataset, "test", device=ctx.device, limit=eval_limit),
                 "test_acc_exact": load_split("cifar10_exact", "test", device=ctx.device, limit=eval_limit)}
        total_steps = sum(int(members[k]["epochs"]) * math.ceil(len(train.y) / int(members[k].get("batch_size", 128)))
                          for k in todo)
        bar = progress(total_steps, f"build {card.name}", ctx.progress, unit="step")
        for k in todo:
            m = members[k]
            t0 = time.perf_counter()
            model, last = train_resnet(card, m, train, ctx.device, on_step=lambda _s: bar.update(1))
            train_seconds += time.perf_counter() - t0
            metrics = {}
            for col, split in tests.items():
                metrics[col] = accuracy(model, split.x, split.y, device=ctx.device)
                metrics[col.replace("acc", "source")] = split.source
            sd = {k2: v.detach().float().cpu().unsqueeze(0) for k2, v in model.state_dict().items()
                  if not k2.endswith("num_batches_tracked")}
            kw = card.archs[m["group"]].get("kwargs", {})
            row = {"id": ids[k], "arch": card.archs[m["group"]]["arch"], "depth": kw.get("depth"), "source": "wsbench",
                   "source_kind": "trained", "seed": m["seed"], "recipe": m["recipe"], "epochs": int(m["epochs"]),
                   "lr": float(m.get("lr", 0.1)), "weight_decay": float(m.get("weight_decay", 1e-4)),
                   "batch_size": int(m.get("batch_size", 128)), "schedule": m.get("schedule", "cosine"),
                   "n_params": sum(p.numel() for p in model.parameters()), "n_train": len(train.y),
                   "n_test": len(tests["test_acc"].y), "n_test_exact": len(tests["test_acc_exact"].y),
                   "train_seconds": round(time.perf_counter() - t0, 3), **last, **metrics, "shard_row": 0}
            ctx.log(f"{ids[k]}: test_acc {100 * metrics['test_acc']:.2f}% (JPEG), "
                    f"{100 * metrics['test_acc_exact']:.2f}% (lossless subset) after {m['epochs']} epochs")
            store.save(ids[k], m["group"], pd.DataFrame([row]), sd)
        bar.close()
    totals = combine_reports(ctx.gather({"train_seconds": train_seconds, "trained": len(todo)}),
                             maximum=("train_seconds",))  # every rank has saved its members
    if not ctx.is_main:
        return BuildResult(pd.DataFrame(), {})
    train_seconds, n_trained = totals["train_seconds"], totals["trained"]
    parts = load_shards(store, ids, ctx.world_size)
    if card.recipe.get("include_pretrained"):
        parts += _pretrained_parts(card, ctx)
    out, weights = assemble(parts, sort_by=["group", "id"])
    out = out.infer_objects()
    out.insert(1, "split", "test")  # every member is one network to reconstruct, as in cifar10_resnet
    out = out[["id", "split", "group", "row"] + [c for c in out.columns if c not in ("id", "split", "group", "row")]]
    stats = {"device": device_name(ctx.device), "networks_total": len(out), "trained_now": n_trained,
             "train_seconds": round(train_seconds, 3),
             "networks_per_s": round(n_trained / train_seconds, 5) if train_seconds else None,
             "wall_seconds": round(time.perf_counter() - t_start, 3)}
    return BuildResult(out.reset_index(drop=True), weights, stats)
