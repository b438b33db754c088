"""Ranger (RAdam + Lookahead) and the cosine schedule of the official NeRN configs.

RAdam: torch.optim.RAdam with decoupled weight decay (p <- p (1 - lr wd), applied to every
parameter, biases included, as the official Ranger). Lookahead (Zhang et al. 2019): every k
steps the slow weights move alpha of the way to the fast ones and the fast weights are reset to
them. Gradient centralisation (Yong et al. 2020), on in the official Ranger whatever its `use_gc`
flag says: before each step every gradient with >= 2 dimensions loses its mean over all but the
first dimension (a Linear weight's row means); biases are left alone. The learning rate follows lr_t = lr_min + (lr - lr_min)(1 + cos(pi t / T)) / 2, the closed
form of CosineAnnealingLR stepped once per iteration; being a function of t alone, a resumed run
gets exactly the same schedule.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import Tensor

OPTIMIZERS = ("ranger", "adam")


class Lookahead:
    """Wraps an optimizer; `state_dict` holds the inner state, the slow weights and the counter."""

    def __init__(self, inner: torch.optim.Optimizer, k: int = 6, alpha: float = 0.5) -> None:
        self.inner = inner
        self.k = k
        self.alpha = alpha
        self.counter = 0
        self.params = [p for g in inner.param_groups for p in g["params"]]
        self.slow = [p.detach().clone() for p in self.params]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.inner.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        self.inner.step()
        self.counter += 1
        if self.counter % self.k == 0:
            fast = self.params
            torch._foreach_lerp_(self.slow, [p.detach() for p in fast], self.alpha)
            torch._foreach_copy_([p.data for p in fast], self.slow)

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "slow": [s.clone() for s in self.slow], "counter": self.counter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        for s, v in zip(self.slow, state["slow"]):
            s.copy_(v)
        self.counter = int(state["counter"])


@torch.no_grad()
def centralize_gradients_(params: Iterable[Tensor]) -> None:
    """g <- g - mean(g over every dimension but the first), for each gradient with >= 2 dimensions."""
    for p in params:
        g = p.grad
        if g is not None and g.dim() >= 2:
            g.sub_(g.mean(dim=tuple(range(1, g.dim())), keepdim=True))


def build_optimizer(params: Iterable[Tensor], kind: str, lr: float, betas: tuple[float, float], eps: float,
                    weight_decay: float, lookahead_k: int, lookahead_alpha: float,
                    gradient_centralization: bool = False):
    params = list(params)
    foreach = True
    if kind == "ranger":
        inner = torch.optim.RAdam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                  decoupled_weight_decay=True, foreach=foreach)
        opt = Lookahead(inner, lookahead_k, lookahead_alpha)
    elif kind == "adam":
        inner = opt = torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                        foreach=foreach)
    else:
        raise ValueError(f"unknown optimizer {kind!r}")
    if gradient_centralization:
        inner.register_step_pre_hook(lambda _opt, _args, _kwargs: centralize_gradients_(params))
    return opt


def cosine_lr(iteration: int, total: int, lr: float, lr_min: float) -> float:
    """Learning rate used for step `iteration` (0-based) of a `total`-step run."""
    if total <= 0:
        return lr
    return lr_min + (lr - lr_min) * (1.0 + math.cos(math.pi * min(iteration, total) / total)) / 2.0


def set_lr(optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr


def optimizer_tensors(optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Flatten an optimizer state into named tensors + JSON-able scalars (for safetensors)."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    inner = sd["inner"] if "inner" in sd else sd
    for pid, st in inner["state"].items():
        for name, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"opt.{pid}.{name}"] = v.detach().clone()
            else:
                scalars[f"opt.{pid}.{name}"] = v
    scalars["opt.param_groups"] = inner["param_groups"]
    if "inner" in sd:
        for i, s in enumerate(sd["slow"]):
            tensors[f"slow.{i}"] = s
        scalars["lookahead.counter"] = sd["counter"]
    return tensors, scalars


def load_optimizer_tensors(optimizer, tensors: dict[str, Tensor], scalars: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for key, v in scalars.items():
        if key.startswith("opt.") and key != "opt.param_groups":
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    inner = {"state": state, "param_groups": scalars["opt.param_groups"]}
    if isinstance(optimizer, Lookahead):
        n = len(optimizer.slow)
        optimizer.load_state_dict({"inner": inner, "slow": [tensors[f"slow.{i}"] for i in range(n)],
                                   "counter": scalars["lookahead.counter"]})
    else:
        optimizer.load_state_dict(inner)
