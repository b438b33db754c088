"""Reconstruction: how well a Reconstructor's copy of a network keeps its test accuracy, at what size.

For each zoo member (default: every member of the `test` split, or `members`), the method fits
the network; the original and the reconstructed network are then evaluated on the same test
set(s) by the same code, once. For CIFAR-10 zoos both the JPEG test set (`cifar10`) and the
lossless subset (`cifar10_exact`) are scored, since the JPEG mirror costs ~10 points.
Every reconstruction variant (e.g. several budgets, or NeRN's pruned predictors) is a result.
"""
from __future__ import annotations

import time
from typing import Any, ClassVar

import torch

from ..errors import ConfigError
from ..evaluation import accuracy
from ..metrics import relative_weight_errors
from ..methods.base import Method, Reconstruction, ReconstructionTarget, RunContext
from ..options import parse_options
from ..registry import TASKS
from ..zoo import Zoo
from .base import Metric, Task, TaskResult

EXTRA_TEST_SETS = {"cifar10": ["cifar10_exact"]}
OPTIONS: dict[str, Any] = {"members": None, "split": "test", "test_sets": None, "eval_limit": None}


def merged_method_config(config: dict[str, Any], group: str | None) -> dict[str, Any]:
    """A method config with its per-group overrides (`groups: {resnet56: {...}}`) applied."""
    base = {k: v for k, v in config.items() if k != "groups"}
    return {**base, **(config.get("groups") or {}).get(group, {})}


@TASKS.register("reconstruction")
class ReconstructionTask(Task):
    version = 1
    capability = "reconstructor"
    zoo_kinds = ("resnet", "cnn")
    description = "fit one network, score original vs reconstructed test accuracy, size and weight error"
    metrics: ClassVar[dict[str, Metric]] = {  # acc_*: on the first test set; acc_*_<name> on the others
        "acc_orig": Metric(True, False, "the original network's test accuracy, %"),
        "acc_recon": Metric(True, True, "the reconstructed network's test accuracy, %"),
        "acc_drop": Metric(False, False, "acc_orig - acc_recon, points"),
        "rel_weight_error": Metric(False, False, "relative L2 error over the conv/linear weights"),
        "size_params": Metric(False, False, "parameters of the representation"),
        "size_bytes": Metric(False, False, "bytes of the representation"),
        "compression_ratio": Metric(True, True, "original parameters / representation parameters"),
        "bytes_ratio": Metric(True, False, "original bytes (fp32) / representation bytes")}

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        return dict(OPTIONS)

    def __init__(self, **config: Any) -> None:
        opts = parse_options("task 'reconstruction'", config, OPTIONS)
        limit, sets, members = opts["eval_limit"], opts["test_sets"], opts["members"]
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"task 'reconstruction': option 'eval_limit' must be an integer >= 1 or null, got {limit!r}")
        for key, value in (("test_sets", sets), ("members", members)):
            if value is not None and not (isinstance(value, str) or (
                    isinstance(value, list) and all(isinstance(v, str) for v in value))):
                raise ConfigError(f"task 'reconstruction': option {key!r} must be a name or a list of names, "
                                  f"got {value!r}")
        super().__init__(**config)

    def applicable(self, method_cls: type[Method], zoo: Zoo) -> tuple[bool, str]:
        ok, why = super().applicable(method_cls, zoo)
        if ok:
            for group in zoo.groups:
                ok, why = method_cls.supports(zoo.spec(group))
                if not ok:
                    break
        return ok, why

    def members(self, zoo: Zoo) -> list[str]:
        chosen = self.config.get("members")
        if chosen:
            ids = [chosen] if isinstance(chosen, str) else list(chosen)
            for m in ids:
                zoo.member(m)  # clear error for unknown ids
            return ids
        return list(zoo.split(self.config.get("split", "test"))["id"])

    def test_sets(self, zoo: Zoo) -> list[str]:
        sets = self.config.get("test_sets")
        if isinstance(sets, str):
            return [sets]
        return list(sets) if sets else [zoo.card.dataset] + EXTRA_TEST_SETS.get(zoo.card.dataset, [])

    def run(self, method_cls: type[Method], method_config: dict[str, Any], zoo: Zoo,
            ctx: RunContext) -> list[TaskResult]:
        from ..data import load_split

        members = self.members(zoo)  # unknown ids fail before any data is loaded
        grayscale = bool(zoo.card.recipe.get("grayscale", False))
        limit = self.config.get("eval_limit")
        tests = {name: load_split(name, "test", grayscale=grayscale, limit=limit) for name in self.test_sets(zoo)}
        results = []
        for member_id in members:
            row = zoo.member(member_id)
            arch, arch_kwargs = zoo.member_arch(member_id)  # e.g. a small-CNN member's own activation
            target = ReconstructionTarget(member_id, arch, arch_kwargs, zoo.state_dict(member_id), zoo.card.dataset)
            cfg = merged_method_config(method_config, row["group"])
            method = method_cls(**cfg)
            ctx.log(f"[{method_cls.name}] reconstructing {zoo.name}/{member_id} on {ctx.device}")
            t0 = time.perf_counter()
            rec = method.reconstruct(target, ctx)
            fit_s = time.perf_counter() - t0
            results += self.score(target, rec, tests, cfg, fit_s, ctx)
        return results

    def score(self, target: ReconstructionTarget, rec: Reconstruction, tests: dict, cfg: dict[str, Any],
              fit_s: float, ctx: RunContext) -> list[TaskResult]:
        model = target.build_model(ctx.device)
        orig_params = sum(v.numel() for k, v in target.state_dict.items() if v.is_floating_point() and "running" not in k)
        orig = {name: accuracy(model, s.x, s.y, device=ctx.device) for name, s in tests.items()}
        variants = rec.variants or {"": rec}
        out = []
        for label, var in variants.items():
            metrics: dict[str, float] = {}
            for name, split in tests.items():
                sfx = "" if name == next(iter(tests)) else f"_{name}"
                rec_acc = accuracy(model, split.x, split.y, state_dict=var.state_dict, device=ctx.device)
                metrics |= {f"acc_orig{sfx}": 100 * orig[name], f"acc_recon{sfx}": 100 * rec_acc,
                            f"acc_drop{sfx}": 100 * (orig[name] - rec_acc)}
            errs = weight_errors(target, var.state_dict)
            total = errs.pop("__total__")
            if total is None:
                raise ConfigError(f"{target.member_id}: every conv/linear weight is zero; a relative error is undefined")
            metrics |= {"rel_weight_error": total, "size_params": float(var.n_params),
                        "size_bytes": float(var.n_bytes), "compression_ratio": orig_params / max(var.n_params, 1),
                        "bytes_ratio": 4 * orig_params / max(var.n_bytes, 1)}
            extra = {"fit_s": fit_s, "layer_rel_error": errs,
                     "test_sets": {n: s.source for n, s in tests.items()}, "orig_params": orig_params,
                     **{k: v for k, v in rec.extra.items() if k != "layer_rel_error" and k not in var.extra},
                     **{f"variant_{k}": v for k, v in var.extra.items() if k != "layer_rel_error"}}
            out.append(TaskResult(metrics, split="test", n_train=0, n_eval=len(next(iter(tests.values()))),
                                  n_params=var.n_params, method_config=cfg, extra=extra, member=target.member_id,
                                  variant=label or None))
        return out


def weight_errors(target: ReconstructionTarget, new: dict[str, torch.Tensor]) -> dict[str, float | None]:
    """Relative L2 error per conv/linear weight of the target's architecture, and over all of them
    ('__total__'): wsbench.metrics.relative_weight_errors."""
    return relative_weight_errors(target.state_dict, new, [lay.weight for lay in target.spec.weight_layers()])