"""Classic compression baselines NeRN is compared against at equal size (Reconstructors).

All three act on the convolution kernels only, like NeRN: BatchNorm and the final linear layer
are kept as stored and counted in the size. Each takes a list of `budgets` and returns one
reconstruction variant per budget, so one fit gives a whole accuracy-vs-size curve.

- magnitude_prune: global magnitude pruning of conv weights, keeping `budget` x (conv weights).
  Size: kept values (fp32) + a position bitmap (1 bit per conv weight), as a sparse format needs.
- low_rank: per-layer truncated SVD of each kernel reshaped to [out, in*k*k]; ranks chosen
  greedily across layers by relative energy gained per parameter until the budget is spent.
- quantize: uniform per-layer (asymmetric, min-max) k-bit quantisation; `budgets` are bit widths.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..errors import ConfigError
from ..metrics import relative_weight_errors
from ..options import parse_options
from ..registry import METHODS
from .base import Reconstruction, ReconstructionTarget, Reconstructor, RunContext


def conv_keys(target: ReconstructionTarget) -> list[str]:
    """State-dict keys of the conv kernels, from the architecture's spec."""
    return [lay.weight for lay in target.spec.weight_layers() if lay.kind == "conv"]


def layer_errors(orig: dict[str, Tensor], new: dict[str, Tensor], keys: list[str]) -> dict[str, float | None]:
    """Relative error per tensor (wsbench.metrics.relative_weight_errors, without the total)."""
    errs = relative_weight_errors(orig, new, keys)
    errs.pop("__total__")
    return errs


def kept_size(target: ReconstructionTarget, predicted: list[str]) -> int:
    """Parameters stored as-is (everything that is not a predicted/compressed conv kernel, no BN buffers)."""
    return sum(v.numel() for k, v in target.state_dict.items()
               if k not in predicted and v.is_floating_point() and "running" not in k)


def _budgets(config: dict[str, Any], default: list[float], lo: float, hi: float, name: str) -> list[float]:
    budgets = parse_options(f"method {name!r}", config, {"budgets": list(default)})["budgets"]
    if not budgets:
        raise ConfigError(f"method {name!r}: option 'budgets' must be a non-empty list, got {budgets!r}")
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not lo <= b <= hi:
            raise ConfigError(f"method {name!r}: every budget must be a number in [{lo}, {hi}], got {b!r}")
    return [float(b) for b in budgets]


class _BudgetReconstructor(Reconstructor):
    budget_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    default_budgets: ClassVar[list[float]] = [0.5]

    def __init__(self, **config: Any) -> None:
        self.budgets = _budgets(config, self.default_budgets, *self.budget_range, self.name)
        super().__init__(**config)

    @classmethod
    def supports(cls, spec: Any) -> tuple[bool, str]:
        if not any(lay.kind == "conv" for lay in spec.layers):
            return False, f"{cls.name} compresses conv kernels; {spec.describe()} has no conv layers"
        return True, ""

    def reconstruct(self, target: ReconstructionTarget, ctx: RunContext) -> Reconstruction:
        keys = conv_keys(target)
        variants = {}
        for b in self.budgets:
            compressed, n_params, n_bytes = self.compress(target, keys, b)
            sd = {**target.state_dict, **compressed}
            variants[self.label(b)] = Reconstruction(
                sd, n_params, n_bytes, extra={"budget": b, "layer_rel_error": layer_errors(target.state_dict, sd, keys)})
        first = variants[self.label(self.budgets[0])]
        return Reconstruction(first.state_dict, first.n_params, first.n_bytes, first.extra, variants)

    def label(self, budget: float) -> str:
        return f"{self.name}@{budget:g}"

    def compress(self, target: ReconstructionTarget, keys: list[str], budget: float) -> tuple[dict[str, Tensor], int, int]:
        raise NotImplementedError


@METHODS.register("magnitude_prune")
class MagnitudePrune(_BudgetReconstructor):
    description = "global magnitude pruning of conv kernels to a fraction of their weights"
    default_budgets = [0.25, 0.5, 0.75]

    def compress(self, target, keys, budget):
        flat = torch.cat([target.state_dict[k].abs().flatten() for k in keys])
        n_keep = int(round(budget * flat.numel()))
        if n_keep == 0:
            threshold = math.inf
        else:  # keep exactly the n_keep largest magnitudes (ties broken by position)
            threshold = torch.topk(flat, n_keep, sorted=True).values[-1].item()
        out, kept, budget_left = {}, 0, n_keep
        for k in keys:
            w = target.state_dict[k]
            mask = w.abs() > threshold
            ties = (w.abs() == threshold).flatten().nonzero().flatten()
            n_more = min(budget_left - int(mask.sum()), len(ties))
            if n_more > 0:
                mask.view(-1)[ties[:n_more]] = True
            budget_left -= int(mask.sum())
            kept += int(mask.sum())
            out[k] = w * mask
        n_conv = flat.numel()
        n_params = kept + kept_size(target, keys)
        n_bytes = 4 * n_params + math.ceil(n_conv / 8)  # values + position bitmap
        return out, n_params, n_bytes


@METHODS.register("low_rank")
class LowRank(_BudgetReconstructor):
    description = "per-layer truncated SVD of conv kernels, ranks allocated greedily to a parameter budget"
    default_budgets = [0.25, 0.5, 0.75]

    def compress(self, target, keys, budget):
        mats = {k: target.state_dict[k].reshape(target.state_dict[k].shape[0], -1) for k in keys}
        svds = {k: torch.linalg.svd(m, full_matrices=False) for k, m in mats.items()}
        total = sum(m.numel() for m in mats.values())
        allowed = budget * total
        ranks = {k: 1 for k in keys}  # rank >= 1 everywhere: a rank-0 layer kills the network
        spent = sum(sum(mats[k].shape) for k in keys)
        candidates = []
        for k, (_, s, _) in svds.items():
            energy = (s ** 2) / (s ** 2).sum().clamp_min(1e-12)
            cost = sum(mats[k].shape)
            candidates += [(float(e) / cost, k, i) for i, e in enumerate(energy.tolist()) if i >= 1]
        for _, k, i in sorted(candidates, key=lambda c: (-c[0], c[1], c[2])):
            cost = sum(mats[k].shape)
            if i == ranks[k] and spent + cost <= allowed and (ranks[k] + 1) * cost <= mats[k].numel():
                ranks[k] += 1
                spent += cost
        out = {}
        for k, (u, s, vh) in svds.items():
            r = ranks[k]
            out[k] = ((u[:, :r] * s[:r]) @ vh[:r]).reshape(target.state_dict[k].shape)
        n_params = int(spent) + kept_size(target, keys)
        return out, n_params, 4 * n_params


@METHODS.register("quantize")
class Quantize(_BudgetReconstructor):
    description = "uniform per-layer k-bit (min-max) quantisation of conv kernels; budgets are bit widths"
    budget_range = (1.0, 16.0)
    default_budgets = [2, 4, 8]

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        bad = [b for b in self.budgets if b != int(b)]
        if bad:
            raise ConfigError(f"quantize: bit widths must be integers, got {bad}")

    def label(self, budget: float) -> str:
        return f"quantize@{int(budget)}bit"

    def compress(self, target, keys, budget):
        bits = int(budget)
        levels = 2 ** bits - 1
        out, n_values = {}, 0
        for k in keys:
            w = target.state_dict[k]
            lo, hi = w.min(), w.max()
            scale = (hi - lo).clamp_min(1e-12) / levels
            out[k] = torch.round((w - lo) / scale) * scale + lo
            n_values += w.numel()
        kept = kept_size(target, keys)
        # n_params counts stored numbers (values + 2 per layer); bytes count their real width
        n_params = n_values + 2 * len(keys) + kept
        n_bytes = math.ceil(n_values * bits / 8) + 8 * len(keys) + 4 * kept
        return out, n_params, n_bytes
