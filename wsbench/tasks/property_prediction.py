"""Property prediction: predict a CNN's test accuracy (or generalisation gap, or any numeric member
column) from its weights. Train on the train split, pick the epoch on val, score the test split
once: Kendall tau-b, R^2 and MSE, one result per target.

Zoos with several architecture groups: an architecture-agnostic encoder is one model over all
groups; any other encoder gets one model per architecture (each trained on its own group), and
the scores are over the pooled test predictions, with per-group scores in `extra`.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

import torch

from ..errors import ConfigError, DataError, NotApplicableError
from ..methods.base import Encoder, Method, RunContext
from ..metrics import regression_scores
from ..registry import TASKS
from ..weights import NetworkSpec
from ..zoo import Zoo
from .base import Metric, TaskResult
from .encoder_training import (EncoderTask, GroupData, TrainedEncoder, check_checkpoint, group_data, resolve_normalize,
                               split_frames, task_options, train_encoder)

Models = list[tuple[NetworkSpec | None, TrainedEncoder]]  # (spec, model); None = reads every spec

# what regression_scores returns, for every task that predicts a number (property prediction, transfer)
REGRESSION_METRICS: dict[str, Metric] = {"tau": Metric(True, True, "Kendall tau-b of predicted vs true"),
                                         "r2": Metric(True, True, "coefficient of determination"),
                                         "mse": Metric(False, False, "mean squared error")}


def as_list(value: Any, key: str, task: str) -> list[str]:
    items = [value] if isinstance(value, str) else list(value or [])
    if not all(isinstance(v, str) for v in items):
        raise ConfigError(f"task {task!r}: option {key!r} must be a name or a list of names, got {value!r}")
    return items


def check_groups(zoo: Zoo, groups: Sequence[str], key: str) -> list[str]:
    unknown = sorted(set(groups) - set(zoo.groups))
    if unknown:
        raise ConfigError(f"option {key!r}: zoo {zoo.name} has no groups {unknown} (groups: {zoo.groups})")
    return list(groups)


def supports_groups(method_cls: type[Method], zoo: Zoo, groups: Sequence[str]) -> tuple[bool, str]:
    for g in groups:
        spec = zoo.spec(g)
        ok, why = method_cls.supports(spec)  # type: ignore[attr-defined]
        if not ok:
            return False, f"method {method_cls.name!r} cannot read group {g} of {zoo.name} ({spec.describe()}): {why}"
    return True, ""


def fit_models(method_cls: type[Encoder], method_config: Mapping[str, Any], train: Sequence[GroupData],
               val: Sequence[GroupData], opts: Mapping[str, Any], ctx: RunContext, *, classification: bool = False,
               out_dim: int = 1, label: str = "", **kw: Any) -> Models:
    """One model over all groups (architecture-agnostic encoders) or one per architecture."""
    if method_cls.architecture_agnostic or len({g.ws.spec for g in train}) == 1:
        cfg = _group_config(method_config, train[0].group) if len(train) == 1 else dict(method_config)
        return [(None, train_encoder(method_cls, cfg, train, val, opts, ctx, classification=classification,
                                     out_dim=out_dim, label=label, **kw))]
    models: Models = []
    for spec in dict.fromkeys(g.ws.spec for g in train):
        tr = [g for g in train if g.ws.spec == spec]
        va = [g for g in val if g.ws.spec == spec]
        if not va:
            raise DataError(f"{label}: group(s) {[g.group for g in tr]} have no validation members")
        cfg = _group_config(method_config, tr[0].group)
        models.append((spec, train_encoder(method_cls, cfg, tr, va, opts, ctx, classification=classification,
                                           out_dim=out_dim, label=f"{label} {'+'.join(g.group for g in tr)}", **kw)))
    return models


def _group_config(config: Mapping[str, Any], group: str) -> dict[str, Any]:
    base = {k: v for k, v in config.items() if k != "groups"}
    return {**base, **((config.get("groups") or {}).get(group) or {})}


def model_for(models: Models, spec: NetworkSpec, method: str) -> TrainedEncoder:
    for s, m in models:
        if s is None or s == spec:
            return m
    raise NotApplicableError(f"method {method!r} is not architecture-agnostic and was not trained on {spec.describe()}")


def predict(models: Models, data: Sequence[GroupData], method: str, batch_size: int) -> torch.Tensor:
    return torch.cat([model_for(models, g.ws.spec, method).predict([g], batch_size) for g in data])


def training_extra(models: Models) -> dict[str, Any]:
    """What a record keeps about training: best epochs, val scores, throughput, notes."""
    ms = [m for _, m in models]
    return {"best_epoch": [m.best_epoch for m in ms], "best_val": [m.best_val for m in ms],
            "train_networks_per_s": sum(m.train_networks_per_s for m in ms) / len(ms),
            "train_s": sum(m.train_s for m in ms), "notes": [n for m in ms for n in m.notes]}


def regression_result(models: Models, test: Sequence[GroupData], method: str, method_config: Mapping[str, Any],
                      opts: Mapping[str, Any], n_train: int, extra: dict[str, Any]) -> TaskResult:
    if not test or not sum(len(g) for g in test):
        raise DataError(f"{method}: the test split to score is empty ({extra.get('eval_zoo', '')})")
    pred = predict(models, test, method, opts["eval_batch_size"])
    y = torch.cat([g.y.cpu() for g in test])
    metrics = regression_scores(y, pred)
    if len(test) > 1:
        per_group, start = {}, 0
        for g in test:
            per_group[g.group] = regression_scores(g.y.cpu(), pred[start:start + len(g)]) if len(g) > 1 else {}
            start += len(g)
        extra = {**extra, "per_group": per_group}
    return TaskResult(metrics, split="test", n_train=n_train, n_eval=len(y),
                      n_params=sum(m.n_params for _, m in models), method_config=dict(method_config),
                      extra={**extra, **training_extra(models)})


class GroupedEncoderTask(EncoderTask):
    """An encoder task on the zoo's `groups` option (default: every architecture group)."""

    opts: dict[str, Any]

    def groups(self, zoo: Zoo) -> list[str]:
        return check_groups(zoo, as_list(self.opts["groups"], "groups", self.name) or zoo.groups, "groups")

    def applicable(self, method_cls: type[Method], zoo: Zoo) -> tuple[bool, str]:
        ok, why = super().applicable(method_cls, zoo)
        return supports_groups(method_cls, zoo, self.groups(zoo)) if ok else (ok, why)


@TASKS.register("property_prediction")
class PropertyPrediction(GroupedEncoderTask):
    version = 1
    zoo_kinds = ("cnn",)
    description = "predict CNN test accuracy / generalisation gap from weights (Kendall tau, R^2, MSE on test)"
    extra_defaults: ClassVar[dict[str, Any]] = {"target": "test_acc", "groups": None, "checkpoint": "all"}
    metrics: ClassVar[dict[str, Metric]] = REGRESSION_METRICS

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.opts = task_options(self.name, config, self.extra_defaults)
        self.opts["checkpoint"] = check_checkpoint(self.opts["checkpoint"], self.name)
        self.targets = as_list(self.opts["target"], "target", self.name)
        if not self.targets:
            raise ConfigError(f"task {self.name!r}: option 'target' names no column")

    def run(self, method_cls: type[Method], method_config: dict[str, Any], zoo: Zoo,
            ctx: RunContext) -> list[TaskResult]:
        assert issubclass(method_cls, Encoder)
        groups, o = self.groups(zoo), self.opts
        frames = split_frames(zoo, groups, o["val_fraction"], o["checkpoint"])
        results = []
        for target in self.targets:
            data = {s: group_data(zoo, frames[s], target, classification=False, device=ctx.device,
                                  limit=o["max_train"] if s == "train" else o["max_eval"]) for s in frames}
            models = fit_models(method_cls, method_config, data["train"], data["val"], o, ctx,
                                label=f"{zoo.name} {target}")
            extra = {"target": target, "groups": groups, "normalize": resolve_normalize(o["normalize"], method_cls),
                     "checkpoint": o["checkpoint"]}
            results.append(regression_result(models, data["test"], method_cls.name, method_config, o,
                                             sum(len(g) for g in data["train"]), extra))
        return results
