"""The training loop every encoder task shares.

Data: per architecture group, a WeightSpace (raw weights, on the device) and targets. Input
normalisation (per entry, per layer or none) is fitted on the train split only. AdamW on batches
of one group at a time (groups interleaved at random); the encoder's optional hooks run on each
training batch: `augment(ws, generator)` after normalisation and `auxiliary_loss(ws, out,
generator)` added to the task loss. The validation split picks the best epoch; the caller touches
the test split once, with `TrainedEncoder.predict`. Training throughput (networks/s) is measured
over the optimisation steps only and logged.

Under torchrun (wsbench.distributed) the encoder is wrapped in DistributedDataParallel: every rank
draws the same shuffled list of batches (the seed's generator) and takes every world-th of them
(padded so that all ranks take as many steps), gradients are averaged, and rank 0's validation
scores pick the best epoch on every rank, so all ranks keep the same weights. Augmentation draws
from a generator per rank. One optimiser step then sees world-size batches.

Task options (the `task:` mapping of a preset): see TRAIN_DEFAULTS. A preset may nest options for
one task under its name (`task: {epochs: 50, inr_classification: {inr_augment: true}}`).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import distributed
from ..errors import ConfigError, DataError
from ..flat_adamw import adamw
from ..methods.base import Encoder, RunContext
from ..metrics import accuracy, kendall_tau
from ..options import AT_LEAST_ONE, NON_NEGATIVE, Range, parse_options
from ..weights import NetworkSpec, WeightSpace
from ..zoo import Zoo
from .base import Task

ENCODER_TASKS = ("property_prediction", "inr_classification", "cross_dataset", "cross_architecture")
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 20, "batch_size": 64, "lr": 1e-3, "weight_decay": 5e-4, "amsgrad": False, "grad_clip": 0.0,
    "normalize": "auto",  # auto | symmetric | entry | layer | none (fitted on the train split; see WeightNormalizer)
    "eval_every": 1, "eval_batch_size": 256,
    "select_by": "auto",  # auto (accuracy / mse) | mse | tau | accuracy | last
    "loss": "auto",  # auto: cross-entropy (classes) / mse on the standardised target | bce: sigmoid output, targets in [0, 1]
    "val_fraction": 0.1,  # carved from train (seed 0) when the zoo has no val split
    "max_train": 0, "max_eval": 0,  # 0 = every member; >0 = the first n (quick runs)
}
NORMALIZE = ("auto", "symmetric", "entry", "layer", "none")
LOSSES = ("auto", "mse", "bce")
TRAIN_CHOICES = {"normalize": NORMALIZE, "select_by": ("auto", "mse", "tau", "accuracy", "last"), "loss": LOSSES}
TRAIN_RANGES = {**dict.fromkeys(("epochs", "batch_size", "eval_every", "eval_batch_size"), AT_LEAST_ONE),
                **dict.fromkeys(("max_train", "max_eval", "lr", "weight_decay", "grad_clip"), NON_NEGATIVE),
                "val_fraction": Range(0, 1, lo_open=True, hi_open=True)}


def resolve_normalize(mode: str, method_cls: type) -> str:
    """`auto`: symmetric for an encoder that declares neuron-permutation invariance (per-entry
    statistics would break it), per tensor (`layer`) otherwise."""
    if mode != "auto":
        return mode
    return "symmetric" if method_cls.invariant else "layer"


class EncoderTask(Task):
    """A task that trains an encoder: its options are the training options (TRAIN_DEFAULTS) plus its
    own `extra_defaults`."""

    capability = "encoder"
    extra_defaults: ClassVar[dict[str, Any]] = {}

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        return {**TRAIN_DEFAULTS, **cls.extra_defaults}


def task_options(task: str, config: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """TRAIN_DEFAULTS + `extra` (task defaults) overridden by `config`, with the sub-mapping of
    this task merged in; ConfigError naming unknown keys and bad values."""
    if "members" in config:
        raise ConfigError(f"--member picks networks to reconstruct; task {task!r} trains and evaluates an encoder on "
                          f"the zoo's splits (shrink it with --set task.max_train=N / task.max_eval=N)")
    flat = {k: v for k, v in config.items() if k not in ENCODER_TASKS}
    own = config.get(task) or {}
    if not isinstance(own, Mapping):
        raise ConfigError(f"task option {task!r} must be a mapping of options for that task")
    flat.update(own)
    return parse_options(f"task {task!r}", flat, {**TRAIN_DEFAULTS, **extra}, choices=TRAIN_CHOICES,
                         ranges=TRAIN_RANGES, untyped=tuple(extra))


# ----------------------------------------------------------------------------- data


@dataclass
class GroupData:
    """One architecture group of one split: raw weights and targets."""

    group: str
    ws: WeightSpace
    y: Tensor  # float [n] (regression) or int64 [n] (classification)
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ws)


def target_values(df: pd.DataFrame, target: str, zoo_name: str) -> pd.Series:
    """A members column; `gen_gap` falls back to train_acc - test_acc when the zoo has no such column."""
    if target in df.columns:
        col = df[target]
    elif target == "gen_gap" and {"train_acc", "test_acc"} <= set(df.columns):
        col = df["train_acc"] - df["test_acc"]
    else:
        numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and c != "row"]
        raise DataError(f"zoo {zoo_name} has no target column {target!r} (numeric columns: {numeric})")
    if col.isna().any():
        raise DataError(f"zoo {zoo_name}: target {target!r} is missing for {int(col.isna().sum())} members")
    return col


def check_checkpoint(value: Any, task: str) -> str | int:
    """The `checkpoint` option: "all", "final" or an epoch number (a non-negative int)."""
    if value in ("all", "final") or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise ConfigError(f"task {task!r}: option 'checkpoint' must be 'all', 'final' or an epoch number >= 0, "
                      f"got {value!r}")


def select_checkpoints(members: pd.DataFrame, checkpoint: str | int, zoo_name: str) -> pd.DataFrame:
    """The members at one checkpoint of their run: "final" (each run's last epoch, as the published
    Small CNN Zoo benchmarks score: NFN keeps step 86 only), an epoch number, or "all"."""
    if checkpoint == "all":
        return members
    if "epoch" not in members.columns:
        raise DataError(f"zoo {zoo_name} has no 'epoch' column: option checkpoint={checkpoint!r} needs checkpoints "
                        f"(use checkpoint=all)")
    if checkpoint == "final":
        run = members["run_id"] if "run_id" in members.columns else members["id"]
        return members[members["epoch"] == members.groupby(run)["epoch"].transform("max")]
    chosen = members[members["epoch"] == checkpoint]
    if chosen.empty:
        raise DataError(f"zoo {zoo_name} has no members at epoch {checkpoint} (epochs: "
                        f"{sorted(members['epoch'].unique().tolist())})")
    return chosen


def split_frames(zoo: Zoo, groups: Sequence[str], val_fraction: float,
                 checkpoint: str | int = "all") -> dict[str, pd.DataFrame]:
    """train/val/test member frames of the given groups at `checkpoint` (see select_checkpoints);
    val carved from train (seed 0) if absent."""
    df = select_checkpoints(zoo.members[zoo.members["group"].isin(groups)], checkpoint, zoo.name)
    splits = {s: df[df["split"] == s] for s in ("train", "val", "test")}
    if splits["val"].empty and not splits["train"].empty:
        n_val = max(1, int(round(val_fraction * len(splits["train"]))))
        order = torch.randperm(len(splits["train"]), generator=torch.Generator().manual_seed(0)).numpy()
        tr = splits["train"].iloc[order]
        splits["val"], splits["train"] = tr.iloc[:n_val].sort_index(), tr.iloc[n_val:].sort_index()
    return splits


def group_data(zoo: Zoo, frame: pd.DataFrame, target: str, *, classification: bool, device: torch.device,
               limit: int = 0) -> list[GroupData]:
    out = []
    for group in sorted(frame["group"].unique()):
        df = frame[frame["group"] == group]
        df = df.iloc[:limit] if limit else df
        y = torch.as_tensor(target_values(df, target, zoo.name).to_numpy(copy=True))
        y = y.long() if classification else y.float()
        out.append(GroupData(group, zoo.weights(df).to(device), y.to(device), df["id"].astype(str).tolist()))
    return out


# ----------------------------------------------------------------------------- normalisation


class WeightNormalizer:
    """(w - mean) / std, statistics from one split:

    - `entry` (DWSNets): a mean and std for every tensor entry. Not permutation-symmetric: after it,
      an encoder invariant on raw weights is no longer invariant (DWSNet changed 22 of 200 predicted
      classes under one random neuron permutation each).
    - `symmetric`: the per-entry statistics averaged over each permutable axis (every neuron of a
      layer shares them): as close to `entry` as the symmetry allows, and it commutes with it.
    - `layer`: one mean and std per tensor. `none`: unchanged."""

    def __init__(self, mode: str, mean: dict[str, Tensor], std: dict[str, Tensor]) -> None:
        self.mode, self.mean, self.std = mode, mean, std

    @classmethod
    def fit(cls, ws: WeightSpace, mode: str) -> "WeightNormalizer":
        mean, std = {}, {}
        if mode not in NORMALIZE or mode == "auto":
            raise ConfigError(f"weight normalisation {mode!r}: expected one of {list(NORMALIZE[1:])}")
        if mode != "none":
            for k, t in ws.tensors.items():
                if mode in ("entry", "symmetric"):
                    m, s = t.mean(0), t.std(0, unbiased=False)
                    if mode == "symmetric":
                        axes = [i for i, g in enumerate(ws.spec.param(k).groups) if g is not None]
                        if axes:
                            m, s = m.mean(dim=axes, keepdim=True), s.mean(dim=axes, keepdim=True)
                else:
                    m, s = t.mean(), t.std(unbiased=False)
                mean[k], std[k] = m, torch.where(s > 1e-8, s, torch.ones_like(s))
        return cls(mode, mean, std)

    def __call__(self, ws: WeightSpace) -> WeightSpace:
        if self.mode == "none":
            return ws
        return WeightSpace(ws.spec, {k: (t - self.mean[k]) / self.std[k] for k, t in ws.tensors.items()})


# ----------------------------------------------------------------------------- training


@dataclass
class TrainedEncoder:
    model: Encoder
    normalizers: dict[NetworkSpec, WeightNormalizer]
    classification: bool
    loss: str = "mse"  # regression: "mse" on the standardised target, or "bce" (sigmoid output in target units)
    target_mean: float = 0.0
    target_std: float = 1.0
    best_epoch: int = 0
    best_val: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    train_networks_per_s: float = 0.0
    train_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def normalizer(self, ws: WeightSpace) -> WeightNormalizer:
        """The train-split normaliser of this spec; for a spec never trained on (cross-architecture),
        per-layer statistics of the given (unlabelled) networks, and a note saying so."""
        if ws.spec not in self.normalizers:
            mode = "none" if all(n.mode == "none" for n in self.normalizers.values()) else "layer"
            self.normalizers[ws.spec] = WeightNormalizer.fit(ws, mode)
            self.notes.append(f"{ws.spec.describe()}: unseen in training; {mode} normalisation from its own weights")
        return self.normalizers[ws.spec]

    @torch.no_grad()
    def predict(self, data: Sequence[GroupData], batch_size: int = 256) -> Tensor:
        """Predictions for every network (groups in order): logits [N, C] or values [N] (target units)."""
        self.model.eval()
        outs = []
        for g in data:
            norm = self.normalizer(g.ws)
            for i in range(0, len(g), batch_size):
                outs.append(self.model(norm(g.ws[i:i + batch_size])).float().cpu())
        out = torch.cat(outs)
        if self.classification:
            return out
        return torch.sigmoid(out[:, 0]) if self.loss == "bce" else out[:, 0] * self.target_std + self.target_mean

    def regression_loss(self, out: Tensor, y: Tensor) -> Tensor:
        if self.loss == "bce":  # the NFN predict_gen trainer's sigmoid + BCELoss, in its stable form
            return F.binary_cross_entropy_with_logits(out[:, 0], y)
        return F.mse_loss(out[:, 0], (y - self.target_mean) / self.target_std)


def validation_scores(trained: TrainedEncoder, val: Sequence[GroupData], batch_size: int) -> dict[str, float]:
    pred = trained.predict(val, batch_size)
    y = torch.cat([g.y.cpu() for g in val])
    if trained.classification:
        return {"accuracy": accuracy(y, pred), "loss": float(F.cross_entropy(pred, y))}
    return {"mse": float(((pred - y) ** 2).mean()), "tau": kendall_tau(y, pred) if len(y) > 1 else float("nan")}


def _better(new: dict[str, float], best: dict[str, float] | None, key: str) -> bool:
    if best is None or key == "last":
        return True
    if new[key] != new[key]:  # NaN never wins
        return False
    if key == "mse":
        return new[key] < best[key]
    return new[key] >= best[key] or best[key] != best[key]  # ties: the later epoch (official DWSNets)


class _TrainStep(nn.Module):
    """Forward pass plus the encoder's auxiliary loss, as one module for DistributedDataParallel."""

    def __init__(self, model: Encoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, ws: WeightSpace, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        out = self.model(ws)
        return out, self.model.auxiliary_loss(ws, out, generator)


def _rank_batches(batches: list, rank: int, world: int) -> list:
    """Every world-th batch from `rank`, the list padded cyclically so that all ranks get as many."""
    if world == 1 or not batches:
        return batches
    padded = batches + [batches[i % len(batches)] for i in range((-len(batches)) % world)]
    return padded[rank::world]


def train_encoder(method_cls: type[Encoder], method_config: Mapping[str, Any], train: Sequence[GroupData],
                  val: Sequence[GroupData], opts: Mapping[str, Any], ctx: RunContext, *, classification: bool,
                  out_dim: int, batch_augment: Callable[[WeightSpace, torch.Generator], WeightSpace] | None = None,
                  label: str = "") -> TrainedEncoder:
    """Fit an encoder on `train`, keep the weights of the best validation epoch."""
    if not any(len(g) > 1 for g in train):
        raise DataError(f"{method_cls.name}: the train split needs a group of >= 2 networks")
    if not val or not sum(len(g) for g in val):
        raise DataError(f"{method_cls.name}: the validation split is empty")
    loss_name = opts.get("loss", "auto")  # checked before any model is built
    if classification and loss_name != "auto":
        raise ConfigError(f"loss {loss_name!r} is for regression targets; a classification task trains with "
                          "cross-entropy (loss=auto)")
    if loss_name == "bce":
        y_all = torch.cat([g.y.float() for g in (*train, *val)])
        if float(y_all.min()) < 0 or float(y_all.max()) > 1:
            raise DataError(f"loss 'bce' needs targets in [0, 1] (an accuracy); they range over "
                            f"[{float(y_all.min()):.4g}, {float(y_all.max()):.4g}]: use loss=mse")
    specs = list(dict.fromkeys(g.ws.spec for g in train))
    cfg = {k: v for k, v in method_config.items() if k != "groups"}
    torch.manual_seed(ctx.seed)
    model = method_cls(specs[0] if len(specs) == 1 else specs, out_dim, **cfg).to(ctx.device)
    mode = resolve_normalize(opts["normalize"], method_cls)
    normalizers = {s: WeightNormalizer.fit(WeightSpace.cat([g.ws for g in train if g.ws.spec == s]), mode)
                   for s in specs}
    trained = TrainedEncoder(model, normalizers, classification, loss="bce" if loss_name == "bce" else "mse")
    if not classification:
        y = torch.cat([g.y for g in train]).float()
        trained.target_mean, trained.target_std = float(y.mean()), float(y.std()) if len(y) > 1 else 1.0
        trained.target_std = trained.target_std if trained.target_std > 1e-12 else 1.0
    opt = adamw(list(model.parameters()), lr=opts["lr"], weight_decay=opts["weight_decay"], amsgrad=opts["amsgrad"])
    gen = ctx.generator(offset=17)
    rank, world = distributed.rank(), distributed.world()
    agen, ddp = gen, None  # augmentation generator; the DDP-wrapped training step
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        agen = ctx.generator(offset=1000 + rank)
        torch.manual_seed(ctx.seed * 1_000_003 + 2000 + rank)  # dropout etc. differ per rank
        ddp = DistributedDataParallel(_TrainStep(model), device_ids=None, find_unused_parameters=len(specs) > 1)
    select = opts["select_by"] if opts["select_by"] != "auto" else ("accuracy" if classification else "mse")
    if select != "last" and (select == "accuracy") != classification:
        raise ConfigError(f"select_by {select!r} does not fit a {'classification' if classification else 'regression'} task")
    best_state, best, n_seen = None, None, 0
    from tqdm.auto import tqdm

    bar = tqdm(range(1, opts["epochs"] + 1), desc=label or method_cls.name, disable=not ctx.progress, leave=False)
    for epoch in bar:
        model.train()
        batches = [(gi, idx[i:i + opts["batch_size"]]) for gi, g in enumerate(train)
                   for idx in [torch.randperm(len(g), generator=gen)] for i in range(0, len(g), opts["batch_size"])]
        batches = [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist() if len(batches[i][1]) > 1]
        batches = _rank_batches(batches, rank, world)
        t0, loss_sum = time.perf_counter(), torch.zeros((), device=ctx.device)
        for gi, idx in batches:
            g = train[gi]
            ws, y = g.ws[idx.to(ctx.device)], g.y[idx.to(ctx.device)]
            if batch_augment is not None:
                ws = batch_augment(ws, agen)
            ws = normalizers[g.ws.spec](ws)
            ws = model.augment(ws, agen)
            if ddp is not None:
                out, extra = ddp(ws, agen)
            else:
                out = model(ws)
                extra = model.auxiliary_loss(ws, out, gen)
            loss = F.cross_entropy(out, y) if classification else trained.regression_loss(out, y)
            total = loss if extra is None else loss + extra
            opt.zero_grad(set_to_none=True)
            total.backward()
            if opts["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), opts["grad_clip"])
            opt.step()
            loss_sum += loss.detach() * len(idx)
            n_seen += len(idx)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        trained.train_s += time.perf_counter() - t0
        epoch_sum, epoch_n = float(loss_sum), sum(len(b[1]) for b in batches)
        if world > 1:
            epoch_sum, epoch_n = distributed.all_reduce_values([epoch_sum, epoch_n])
        record = {"epoch": epoch, "train_loss": epoch_sum / max(1, epoch_n)}
        if epoch % opts["eval_every"] == 0 or epoch == opts["epochs"]:
            # rank 0 scores, every rank takes its decision (all ranks hold the same weights)
            scores = validation_scores(trained, val, opts["eval_batch_size"]) if rank == 0 else None
            scores = distributed.broadcast_object(scores) if world > 1 else scores
            record.update({f"val_{k}": v for k, v in scores.items()})
            if _better(scores, best, select):
                best, trained.best_epoch = scores, epoch
                best_state = copy.deepcopy(model.state_dict())
            bar.set_postfix(loss=f"{record['train_loss']:.4f}", **{f"val_{select}": f"{scores.get(select, 0):.4f}"})
        trained.history.append(record)
    assert best_state is not None  # the last epoch is always evaluated
    model.load_state_dict(best_state)
    trained.best_val = dict(best or {})
    if world > 1:  # networks of all ranks over the slowest rank's training time
        n_seen = int(distributed.all_reduce_values([n_seen])[0])
        trained.train_s = distributed.all_reduce_values([trained.train_s], op="max")[0]
    trained.train_networks_per_s = n_seen / max(trained.train_s, 1e-9)
    ctx.log(f"[{method_cls.name}] {label}: {opts['epochs']} epochs on {distributed.describe(str(ctx.device))}, "
            f"{trained.train_networks_per_s:.0f} networks/s training throughput, best val epoch {trained.best_epoch}")
    return trained
