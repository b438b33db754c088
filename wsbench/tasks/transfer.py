"""Transfer of property predictors (SNE, Andreis et al.): train on one zoo, score on another.

- `cross_dataset`: train on the run's zoo (train split, val for model selection), score the test
  split of each zoo in `eval_zoo` (same architectures, other datasets; e.g. small_cnn_mnist ->
  small_cnn_fashion_mnist). One result per evaluation zoo, named in its `member` (the leaderboard's
  transfer matrix: rows the training zoo, columns the evaluation zoos; list the run zoo among
  `eval_zoo` for the diagonal); the run zoo's own test score is also kept as `extra.in_distribution`.
- `cross_architecture`: train on the `train_groups` (architecture families) of the run's zoo,
  score the test split of the held-out `eval_groups` (default: every other group), of the same
  zoo or of `eval_zoo`. Needs an architecture-agnostic encoder that reads every family; any
  other method is "not applicable" (reported, never a crash).

Unseen architectures have no train-split normalisation statistics; they are normalised per layer
with statistics of their own (unlabelled) weights, which the record notes.
Options: target (default test_acc), eval_zoo, eval_zoo_variant, train_groups, eval_groups,
checkpoint (all | final | an epoch: which checkpoints of each run are members), plus the training
options of encoder_training.
"""
from __future__ import annotations

from typing import Any, ClassVar

from ..errors import ConfigError
from ..methods.base import Encoder, Method, RunContext
from ..registry import TASKS
from ..zoo import Zoo
from ..zoo_store import open_zoo
from .base import Metric, TaskResult
from .encoder_training import EncoderTask, check_checkpoint, group_data, resolve_normalize, split_frames, task_options
from .property_prediction import REGRESSION_METRICS, as_list, check_groups, fit_models, regression_result, supports_groups


class TransferTask(EncoderTask):
    zoo_kinds = ("cnn",)
    version = 1
    mode: ClassVar[str] = ""
    metrics: ClassVar[dict[str, Metric]] = REGRESSION_METRICS
    extra_defaults: ClassVar[dict[str, Any]] = {"target": "test_acc", "eval_zoo": None, "eval_zoo_variant": None,
                                                "train_groups": None, "eval_groups": None, "checkpoint": "all"}

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.opts = task_options(self.name, config, self.extra_defaults)
        self.opts["checkpoint"] = check_checkpoint(self.opts["checkpoint"], self.name)
        if not isinstance(self.opts["target"], str):
            raise ConfigError(f"task {self.name!r}: option 'target' must be one column name")
        self.eval_zoo_names = as_list(self.opts["eval_zoo"], "eval_zoo", self.name)
        self._zoos: dict[str, Zoo] = {}

    def eval_zoos(self, zoo: Zoo) -> list[Zoo]:
        if not self.eval_zoo_names:
            return [zoo]
        out = []
        for name in self.eval_zoo_names:
            if name not in self._zoos:
                variant = self.opts["eval_zoo_variant"] or zoo.card.variant
                self._zoos[name] = zoo if name in (zoo.name, str(zoo.root)) else open_zoo(name, variant=variant)
            out.append(self._zoos[name])
        return out

    def train_groups(self, zoo: Zoo) -> list[str]:
        return check_groups(zoo, as_list(self.opts["train_groups"], "train_groups", self.name) or zoo.groups,
                            "train_groups")

    def eval_groups(self, zoo: Zoo, eval_zoo: Zoo) -> list[str]:
        chosen = as_list(self.opts["eval_groups"], "eval_groups", self.name)
        train = self.train_groups(zoo)
        if chosen:
            both = sorted(set(chosen) & set(train)) if eval_zoo is zoo and self.mode == "cross_architecture" else []
            if both:  # scored on families it was trained on: not a transfer
                raise ConfigError(f"task {self.name!r}: eval_groups {both} are also train_groups; cross_architecture "
                                  f"scores architectures held out of training")
            return check_groups(eval_zoo, chosen, "eval_groups")
        if self.mode == "cross_architecture":
            held_out = [g for g in eval_zoo.groups if not (eval_zoo is zoo and g in train)]
            if not held_out:
                raise ConfigError(f"task {self.name!r}: no held-out groups to evaluate (set eval_groups)")
            return held_out
        same = [g for g in train if g in eval_zoo.groups]
        return same or eval_zoo.groups

    def applicable(self, method_cls: type[Method], zoo: Zoo) -> tuple[bool, str]:
        ok, why = super().applicable(method_cls, zoo)
        if not ok:
            return ok, why
        if self.mode == "cross_dataset" and not self.eval_zoo_names:
            raise ConfigError(f"task {self.name!r} needs option eval_zoo (the zoo(s) to evaluate on)")
        ok, why = supports_groups(method_cls, zoo, self.train_groups(zoo))
        if not ok:
            return ok, why
        for ez in self.eval_zoos(zoo):
            if ez.card.kind not in self.zoo_kinds:
                return False, f"task {self.name!r}: eval zoo {ez.name} is a {ez.card.kind} zoo"
        return True, ""

    def reads_every_network(self, method_cls: type[Method], zoo: Zoo) -> tuple[bool, str]:
        train_specs = {zoo.spec(g) for g in self.train_groups(zoo)}
        for ez in self.eval_zoos(zoo):
            groups = self.eval_groups(zoo, ez)
            ok, why = supports_groups(method_cls, ez, groups)
            if not ok:
                return ok, why
            unseen = [g for g in groups if ez.spec(g) not in train_specs]
            if unseen and not method_cls.architecture_agnostic:
                return False, (f"method {method_cls.name!r} is not architecture-agnostic: it cannot read the held-out "
                               f"architecture(s) {unseen} of {ez.name}")
        return True, ""

    def run(self, method_cls: type[Method], method_config: dict[str, Any], zoo: Zoo,
            ctx: RunContext) -> list[TaskResult]:
        assert issubclass(method_cls, Encoder)
        o, target = self.opts, self.opts["target"]
        train_groups = self.train_groups(zoo)
        frames = split_frames(zoo, train_groups, o["val_fraction"], o["checkpoint"])
        data = {s: group_data(zoo, frames[s], target, classification=False, device=ctx.device,
                              limit=o["max_train"] if s == "train" else o["max_eval"]) for s in frames}
        models = fit_models(method_cls, method_config, data["train"], data["val"], o, ctx,
                            label=f"{self.mode} {zoo.name}")
        n_train = sum(len(g) for g in data["train"])
        base = {"target": target, "train_zoo": zoo.name, "train_groups": train_groups,
                "normalize": resolve_normalize(o["normalize"], method_cls), "transfer": self.mode,
                "checkpoint": o["checkpoint"]}
        ref = None
        if data["test"]:
            ref = regression_result(models, data["test"], method_cls.name, method_config, o, n_train, {}).metrics
        results = []
        for ez in self.eval_zoos(zoo):
            groups = self.eval_groups(zoo, ez)
            test = group_data(ez, split_frames(ez, groups, o["val_fraction"], o["checkpoint"])["test"], target, classification=False,
                              device=ctx.device, limit=o["max_eval"])
            extra = {**base, "eval_zoo": ez.name, "eval_zoo_version": ez.version, "eval_zoo_variant": ez.card.variant,
                     "eval_groups": groups, "in_distribution": ref}
            result = regression_result(models, test, method_cls.name, method_config, o, n_train, extra)
            if self.mode == "cross_dataset":  # one record per evaluation zoo: rows and matrix cells keep them apart
                result.member = ez.name
            results.append(result)
        return results


@TASKS.register("cross_dataset")
class CrossDataset(TransferTask):
    mode = "cross_dataset"
    description = "train a property predictor on one dataset's zoo, score it on another's (Kendall tau, R^2, MSE)"


@TASKS.register("cross_architecture")
class CrossArchitecture(TransferTask):
    mode = "cross_architecture"
    description = "train a property predictor on some architecture families, score it on held-out ones"
