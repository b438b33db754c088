"""Smoothness by permutation (paper sec. 3.3): greedy nearest-neighbour paths over kernels.

The path of a set of items starts at item 0 and repeatedly jumps to the unvisited item of highest
similarity (argmax; ties go to the lowest index), as the official `get_max_sim_order`. Here all
sets of a run (every layer, or every filter of every layer) are walked at once: their similarity
matrices are stacked (padded) on the run's device and the walk is one loop of tensor ops over the
stack, with no host synchronisation. `greedy_path_reference` is the plain-Python definition the
fast walk must match exactly (tests).

An ordering never moves weights: it gives kernel i of a layer the coordinate slot positions[i]
(slot t = (f', c') = divmod(t, C)). `apply_ordering` / `undo_ordering` permute a weight tensor
into slot order and back (the "smooth" view the predictor learns), exactly.

Similarity: cosine between k x k kernels. 1x1 kernels are scalars, where cosine is only a sign;
the paper uses the l2 distance there (sim = -(a-b)^2, `one_by_one="l2"`, default); the official
code keeps cosine for cross-filter orderings and for the infilter filter step
(`one_by_one="cosine"`). Within a filter the official 1x1 rule is -(n_i-n_j)^2 on per-filter
normalised values, whose path equals l2 on raw values (a common positive scale), so both options
use l2 there.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ORDERINGS = ("none", "crossfilter", "infilter")
ONE_BY_ONE_RULES = ("l2", "cosine")


def similarity_stack(items: Tensor, rule: str, out: Tensor | None = None) -> Tensor:
    """(B, n, n) similarities within each of B item sets of equal size (B, n, d)."""
    if rule in ("cosine", "dot"):
        x = F.normalize(items, dim=-1, eps=1e-12) if rule == "cosine" else items  # zero kernel: sim 0
        return torch.bmm(x, x.transpose(1, 2), out=out)
    if rule == "l2":
        if items.shape[-1] == 1:
            sim = -(items - items.transpose(1, 2)).square()
        else:
            sim = -(items[:, :, None, :] - items[:, None, :, :]).square().sum(-1)
        return out.copy_(sim) if out is not None else sim
    raise ValueError(f"unknown similarity rule {rule!r}")


def greedy_walk(sim: Tensor) -> Tensor:
    """(B, n) greedy paths through B similarity matrices (B, n, n), all walked in one loop.

    Visited items get -inf added to every later row read (a penalty vector); each step is a row
    gather, an add, an argmax (first maximum on ties) and a fill: no host synchronisation. On
    CPU the same loop runs on NumPy views of the tensors: its per-call overhead is ~5x lower than
    torch's and its argmax is vectorised, which makes the walk 2-3x faster there (measured)."""
    if sim.device.type == "cpu":
        return torch.from_numpy(_walk_numpy(sim.detach().numpy()))
    return greedy_walk_torch(sim)


def greedy_walk_torch(sim: Tensor) -> Tensor:
    b, n, _ = sim.shape
    dev = sim.device
    flat = sim.reshape(b * n, n)
    base = torch.arange(b, device=dev) * n
    penalty = torch.zeros(b * n, device=dev, dtype=sim.dtype)
    idx = base.clone()  # current item (0) of every set, as a row of `flat` / slot of `penalty`
    penalty.index_fill_(0, idx, float("-inf"))
    penalty = penalty.view(b, n)
    steps = [torch.zeros(b, dtype=torch.long, device=dev)]
    for _ in range(1, n):
        row = flat.index_select(0, idx).add_(penalty)
        cur = row.argmax(1)
        steps.append(cur)
        idx = base + cur
        penalty.view(-1).index_fill_(0, idx, float("-inf"))
    return torch.stack(steps, 1)


def _walk_numpy(sim: np.ndarray) -> np.ndarray:
    b, n, _ = sim.shape
    flat = sim.reshape(b * n, n)
    base = np.arange(b) * n
    rows = np.arange(b)
    penalty = np.zeros((b, n), dtype=sim.dtype)
    penalty[:, 0] = -np.inf
    path = np.zeros((b, n), dtype=np.int64)
    buf = np.empty((b, n), dtype=sim.dtype)
    idx = base.copy()
    for t in range(1, n):
        np.take(flat, idx, axis=0, out=buf)
        buf += penalty
        cur = buf.argmax(axis=1)
        path[:, t] = cur
        penalty[rows, cur] = -np.inf
        idx = base + cur
    return path


def greedy_path_reference(sim: Sequence[Sequence[float]]) -> list[int]:
    """The definition, in plain Python: start at 0, go to the most similar unvisited item."""
    n = len(sim)
    visited = [False] * n
    path, cur = [0], 0
    visited[0] = True
    for _ in range(n - 1):
        best_j, best = -1, None
        for j in range(n):
            if not visited[j] and (best is None or sim[cur][j] > best):
                best_j, best = j, sim[cur][j]
        path.append(best_j)
        visited[best_j] = True
        cur = best_j
    return path


def _default_budget(device: torch.device) -> int:
    if device.type == "cuda":
        return max(1 << 30, torch.cuda.mem_get_info(device)[0] // 4)
    try:  # a quarter of the available memory, at most 2 GiB
        with open("/proc/meminfo") as fh:
            avail = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable"))
        return int(min(2 << 30, max(256 << 20, avail // 4)))
    except (OSError, StopIteration, ValueError):
        return 1 << 30


def greedy_paths(sets: Sequence[Tensor], rule: str, *, memory_budget: int | None = None) -> list[Tensor]:
    """Greedy paths of many item sets (each (n_i, d_i)), walked together.

    Sets of equal shape are stacked (no padding) and walked in one loop; a stack is split when
    its similarity matrices would exceed `memory_budget` bytes (default: a quarter of free
    memory, at most 2 GiB on CPU). One similarity buffer is reused across stacks."""
    if not sets:
        return []
    dev = sets[0].device
    budget = memory_budget if memory_budget is not None else _default_budget(dev)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(sets):
        groups.setdefault((s.shape[0], s.shape[1]), []).append(i)
    out: list[Tensor | None] = [None] * len(sets)
    buf: Tensor | None = None
    for (n, _d), members in sorted(groups.items(), reverse=True):
        per_set = max(n * n * sets[members[0]].element_size(), 1)
        size = max(1, min(len(members), budget // per_set))
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            items = torch.stack([sets[i] for i in chunk])
            need = len(chunk) * n * n
            if buf is None or buf.numel() < need or buf.dtype != items.dtype:
                buf = torch.empty(need, device=dev, dtype=items.dtype)
            sim = similarity_stack(items, rule, out=buf[:need].view(len(chunk), n, n))
            paths = greedy_walk(sim)
            for j, i in enumerate(chunk):
                out[i] = paths[j]
    return out  # type: ignore[return-value]


def inverse_permutation(perm: Tensor) -> Tensor:
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    return inv


def _rule(k: int, one_by_one: str, step: str) -> str:
    if k > 1:
        return "cosine"
    if step == "within":  # official -(n_i-n_j)^2 on per-filter normalised values == l2 on raw values
        return "l2"
    return "l2" if one_by_one == "l2" else "cosine"


def crossfilter_positions(weights: Sequence[Tensor], one_by_one: str = "l2",
                          memory_budget: int | None = None) -> list[Tensor]:
    """Per layer (F, C, k, k): the slot of every kernel after one greedy path over all F*C kernels."""
    out: list[Tensor | None] = [None] * len(weights)
    for rule in ("cosine", "l2"):
        idx = [i for i, w in enumerate(weights) if _rule(w.shape[2], one_by_one, "cross") == rule]
        sets = [weights[i].reshape(weights[i].shape[0] * weights[i].shape[1], -1) for i in idx]
        for i, path in zip(idx, greedy_paths(sets, rule, memory_budget=memory_budget)):
            out[i] = inverse_permutation(path)
    return out  # type: ignore[return-value]


def infilter_positions(weights: Sequence[Tensor], one_by_one: str = "l2",
                       memory_budget: int | None = None) -> list[Tensor]:
    """Per layer: order each filter's kernels (pi_f), then the filters (sigma) by the summed
    similarity of their reordered kernels; kernel (f, c) gets slot (inv sigma[f], inv pi_f[c])."""
    n_layers = len(weights)
    # step 1: every filter of every layer is one set of C kernels
    within: list[Tensor | None] = [None] * n_layers
    for rule in ("cosine", "l2"):
        idx = [i for i, w in enumerate(weights) if _rule(w.shape[2], one_by_one, "within") == rule]
        sets = [weights[i][f].reshape(weights[i].shape[1], -1) for i in idx for f in range(weights[i].shape[0])]
        paths = greedy_paths(sets, rule, memory_budget=memory_budget)
        pos = 0
        for i in idx:
            nf = weights[i].shape[0]
            within[i] = torch.stack(paths[pos:pos + nf])  # (F, C): pi_f
            pos += nf
    # step 2: order the filters; filter f is the concatenation of its kernels in pi_f order
    out: list[Tensor | None] = [None] * n_layers
    for rule in ("cosine", "l2"):
        idx = [i for i, w in enumerate(weights) if _rule(w.shape[2], one_by_one, "filters") == rule]
        sets = []
        for i in idx:
            w = weights[i]
            f, c = w.shape[:2]
            kern = w.reshape(f, c, -1)
            if rule == "cosine":
                kern = F.normalize(kern, dim=-1, eps=1e-12)
            reordered = torch.gather(kern, 1, within[i][:, :, None].expand(-1, -1, kern.shape[2]))
            sets.append(reordered.reshape(f, -1))
        # a sum of per-kernel cosines is the dot product of the normalised concatenations
        sigmas = greedy_paths(sets, "dot" if rule == "cosine" else "l2", memory_budget=memory_budget)
        for i, sigma in zip(idx, sigmas):
            f, c = weights[i].shape[:2]
            inv_sigma = inverse_permutation(sigma)
            inv_pi = torch.empty_like(within[i]).scatter_(
                1, within[i], torch.arange(c, device=within[i].device).expand(f, c).contiguous())
            out[i] = (inv_sigma[:, None] * c + inv_pi).reshape(-1)
    return out  # type: ignore[return-value]


def compute_positions(weights: Sequence[Tensor], mode: str, one_by_one: str = "l2",
                      memory_budget: int | None = None) -> list[Tensor]:
    """Slot of every kernel of every layer under ordering `mode` (identity for "none")."""
    if mode == "none":
        return [torch.arange(w.shape[0] * w.shape[1], device=w.device) for w in weights]
    if mode == "crossfilter":
        return crossfilter_positions(weights, one_by_one, memory_budget)
    if mode == "infilter":
        return infilter_positions(weights, one_by_one, memory_budget)
    raise ValueError(f"unknown ordering {mode!r}")


def apply_ordering(weight: Tensor, positions: Tensor) -> Tensor:
    """(F, C, ...) weight rearranged so that slot positions[i] holds kernel i (the smooth view)."""
    f, c = weight.shape[:2]
    flat = weight.reshape(f * c, *weight.shape[2:])
    out = torch.empty_like(flat)
    out[positions] = flat
    return out.reshape(weight.shape)


def undo_ordering(ordered: Tensor, positions: Tensor) -> Tensor:
    """Inverse of `apply_ordering`: kernel i is read back from slot positions[i]."""
    f, c = ordered.shape[:2]
    return ordered.reshape(f * c, *ordered.shape[2:])[positions].reshape(ordered.shape)


def ordering_index_bits(shapes: Sequence[tuple[int, ...]], mode: str) -> int:
    """Bits to store the permutations (paper sec. 3.3): each index takes ceil(log2(range)) bits.

    crossfilter: F*C indices in [0, F*C); infilter: F*C indices in [0, C) plus F in [0, F)."""
    def bits(n: int) -> int:
        return math.ceil(math.log2(n)) if n > 1 else 0

    total = 0
    for s in shapes:
        f, c = s[0], s[1]
        if mode == "crossfilter":
            total += f * c * bits(f * c)
        elif mode == "infilter":
            total += f * c * bits(c) + f * bits(f)
    return total
