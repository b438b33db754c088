"""INR classification (DWSNets, sec. 6.1): which class does the image an INR represents belong to?
Train on the INR zoo's train split, pick the epoch with the best validation accuracy, report test
accuracy (percent) once.

`inr_augment` (off by default; on in the DWSNets paper presets) applies the official
training-time augmentations that change the represented image but not its class, exactly in
weight space: a random translation of the input coordinates (b_0 += W_0 t, t ~ U(+-0.25)^2),
a rotation (W_0 R, angle ~ U(+-45 deg), 2-D inputs only), a zoom (W_0 * (1 + U(+-0.2))) and
dropout (p = 0.01) of every tensor. Not reproduced: the official "noise" adds the constant
0.1 * std(w) (not random) and translates deeper layers inexactly; both are left out.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..errors import ConfigError
from ..methods.base import Encoder, Method, RunContext
from ..metrics import accuracy
from ..registry import TASKS
from ..weights import WeightSpace
from ..zoo import Zoo
from .base import Metric, TaskResult
from .encoder_training import group_data, resolve_normalize, split_frames, task_options
from .property_prediction import GroupedEncoderTask, fit_models, predict, training_extra


def _uniform(n: int, *shape: int, bound: float, generator: torch.Generator | None) -> torch.Tensor:
    return (torch.rand(n, *shape, generator=generator) * 2 - 1) * bound


def inr_augment(ws: WeightSpace, generator: torch.Generator | None = None, *, translate: float = 0.25,
                rotate_deg: float = 45.0, scale: float = 0.2, dropout: float = 0.01) -> WeightSpace:
    """Random image-level transformations of INRs, applied to their first layer (see module doc)."""
    first = ws.spec.weight_layers()[0]
    B, dev = len(ws), ws.device
    tensors = dict(ws.tensors)
    w0 = tensors[first.weight]  # [B, hidden, in_dim]
    if w0.shape[-1] == 2 and rotate_deg > 0:
        a = _uniform(B, bound=math.radians(rotate_deg), generator=generator).to(dev)
        rot = torch.stack([torch.stack([a.cos(), -a.sin()], -1), torch.stack([a.sin(), a.cos()], -1)], -2)
        w0 = w0 @ rot
    if scale > 0:
        w0 = w0 * (1 + _uniform(B, 1, 1, bound=scale, generator=generator).to(dev))
    if translate > 0 and first.bias:
        t = _uniform(B, w0.shape[-1], bound=translate, generator=generator).to(dev)
        tensors[first.bias] = tensors[first.bias] + torch.einsum("bhi,bi->bh", w0, t)
    tensors[first.weight] = w0
    if dropout > 0:
        for k, v in tensors.items():
            keep = (torch.rand(v.shape, generator=generator) >= dropout).to(dev)
            tensors[k] = v * keep / (1 - dropout)
    return WeightSpace(ws.spec, tensors)


@TASKS.register("inr_classification")
class INRClassification(GroupedEncoderTask):
    version = 1
    zoo_kinds = ("inr",)
    description = "classify the image an INR represents from the INR's weights (test accuracy, %)"
    extra_defaults: ClassVar[dict[str, Any]] = {"target": "label", "groups": None, "inr_augment": False}
    metrics: ClassVar[dict[str, Metric]] = {"accuracy": Metric(True, True, "test accuracy, %")}

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.opts = task_options(self.name, config, self.extra_defaults)
        if not isinstance(self.opts["target"], str):
            raise ConfigError(f"task {self.name!r}: option 'target' must be a column name")
        if not isinstance(self.opts["inr_augment"], bool):
            raise ConfigError(f"task {self.name!r}: option 'inr_augment' must be true or false")

    def run(self, method_cls: type[Method], method_config: dict[str, Any], zoo: Zoo,
            ctx: RunContext) -> list[TaskResult]:
        assert issubclass(method_cls, Encoder)
        o, groups, target = self.opts, self.groups(zoo), self.opts["target"]
        frames = split_frames(zoo, groups, o["val_fraction"])
        data = {s: group_data(zoo, frames[s], target, classification=True, device=ctx.device,
                              limit=o["max_train"] if s == "train" else o["max_eval"]) for s in frames}
        n_classes = int(zoo.members[target].max()) + 1
        models = fit_models(method_cls, method_config, data["train"], data["val"], o, ctx, classification=True,
                            out_dim=n_classes, label=f"{zoo.name} {target}",
                            batch_augment=inr_augment if o["inr_augment"] else None)
        logits = predict(models, data["test"], method_cls.name, o["eval_batch_size"])
        y = torch.cat([g.y.cpu() for g in data["test"]])
        extra = {"target": target, "groups": groups, "n_classes": n_classes, 
            "normalize": resolve_normalize(o["normalize"], method_cls),
                 "inr_augment": o["inr_augment"], **training_extra(models)}
        return [TaskResult({"accuracy": 100 * accuracy(y, logits)}, split="test",
                           n_train=sum(len(g) for g in data["train"]), n_eval=len(y),
                           n_params=sum(m.n_params for _, m in models), method_config=dict(method_config), extra=extra)]
