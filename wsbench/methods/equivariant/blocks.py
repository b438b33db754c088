"""The blocks of a DWS layer: every equivariant map from one weight-space tensor to another.

A block maps tensor A ([B, *axes_A, C]) to tensor B ([B, *axes_B, C']). Axes with the same
permutation group in A and B are *shared*. For independent symmetric groups the equivariant
linear maps factor over groups: a shared group is either kept (identity, "diagonal") or pooled and
broadcast; a group only in A is pooled; a group only in B is broadcast; non-permutable axes are
features (a dense map). One term per subset K of the shared groups:

    term_K(x) = broadcast_B( Lin_K( pool_{A's groups not in K}(x) ) )

This spans every block of DWSNets (Navon et al. 2023, sec. 4-5): for W->W with i = j internal
the 4 terms are the DeepSets-of-interactions layer (SetKroneckerSetLayer in the official code);
with one shared group (W_i->W_{i+1}, b_i->W_i, W_i->b_i, b_i->b_i ...) the two terms are a
DeepSets layer over that neuron set, which the official code (and our default) replaces by a
set layer, SAB (self-attention over the set); with no shared group (|i - j| > 1, last bias ...)
it is pool -> Lin -> broadcast; those blocks (most of them) are evaluated together by
`PooledBlocks`: every tensor is pooled once, and each output tensor gets one matmul over the
concatenated pooled inputs (the same maps and parameters as one Linear per block); the set blocks of
equal sizes in a layer run together (`batched_set_blocks`). Unlike the official code, the block W_{L-2} -> W_{L-1} maps to
every one of the d_L output columns (the official one copies one column; a known quirk).
"""
from __future__ import annotations

import math
from itertools import combinations
from math import prod
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cpu_kernels import fused_kernel_applies, fused_set_attention, max_first, set_attention
from .layout import Axis


def reduce(x: Tensor, dims: Sequence[int], how: str) -> Tensor:
    """Pool `x` over `dims`. Max over adjacent dims flattens them and takes torch.max over one axis,
    as the official code does: its backward scatters the gradient to one index per output (amax
    splits it over ties and runs four full-size passes to do so). On CPU the same values and
    gradients come from `cpu_kernels.max_first`, several times faster for these shapes."""
    if not dims:
        return x
    if how == "max":
        lo, hi = min(dims), max(dims)
        if hi - lo + 1 == len(dims):
            flat = x.flatten(lo, hi) if hi > lo else x
            return flat.max(dim=lo).values if x.is_cuda else max_first(flat, lo)
        return x.amax(dim=list(dims))
    if how == "mean":
        return x.mean(dim=dims)
    return x.sum(dim=dims)


def attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """softmax(q k^T scale) v over the last two dims. On CPU `cpu_kernels.set_attention`: for these
    sets (32 neurons, heads of 4 channels) PyTorch's CPU flash-attention kernel takes 1.6-1.8x as
    long forward and backward as the plain ops, and those take longer than the products oriented by
    hand (tests/bench/test_bench_encoders.py measures all three)."""
    if q.is_cuda:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    return set_attention(q, k, v, scale)


def heads_attention(q: Tensor, k: Tensor, v: Tensor, heads: int, scale: float) -> Tensor:
    """`attention` per head on [B, n, heads * d] tensors (head h on channels h*d..(h+1)*d), as
    [B, n, heads * d]: the set block's path where the fused kernel does not apply (see packed_set_attention)."""
    B, n, F = q.shape
    split = [t.view(B, n, heads, F // heads).transpose(1, 2) for t in (q, k, v)]
    return attention(*split, scale).transpose(1, 2).reshape(B, n, F)


class SAB(nn.Module):
    """Set-attention block as in the official DWSNets code (Set Transformer's MAB(X, X) without
    LayerNorm): O = Q + softmax(Q K^T / sqrt(f_out)) V per head, then O + ReLU(fc_o(O))."""

    def __init__(self, f_in: int, f_out: int, num_heads: int = 8) -> None:
        super().__init__()
        self.heads = max(h for h in range(1, max(num_heads, 1) + 1) if f_out % h == 0)
        self.fc_q, self.fc_k, self.fc_v = (nn.Linear(f_in, f_out) for _ in range(3))
        self.fc_o = nn.Linear(f_out, f_out)
        self.scale = 1.0 / math.sqrt(f_out)

    def forward(self, x: Tensor) -> Tensor:  # [B, n, f_in] -> [B, n, f_out]
        weight = torch.cat([self.fc_q.weight, self.fc_k.weight, self.fc_v.weight])  # one product for q, k and v
        bias = torch.cat([self.fc_q.bias, self.fc_k.bias, self.fc_v.bias])
        o = packed_set_attention(F.linear(x, weight, bias), self.heads, self.scale)
        return o + F.relu(self.fc_o(o))


def packed_set_attention(qkv: Tensor, heads: int, scale: float) -> Tensor:
    """The set block's O = Q + softmax(Q K^T scale) V per head, on the packed [N, n, 3 * f] product
    [q | k | v]: through the fused C kernel where it applies (it reads the packed tensor in place), else
    the per-head attention on views of the three thirds."""
    f = qkv.shape[-1] // 3
    if fused_kernel_applies(qkv, f // heads):
        return fused_set_attention(qkv, heads, scale, residual=True)
    q, k, v = qkv.split(f, dim=-1)
    return q + heads_attention(q, k, v, heads, scale)


def batched_set_blocks(blocks: Sequence[SAB], xs: Sequence[Tensor]) -> Tensor:
    """blocks[g](xs[g]) for set blocks of equal sizes on inputs of equal shape [B, n, f_in], at once, as
    [G, B, n, f_out]: one batched product for every block's q, k and v, one attention call over all
    G * B sets, one batched product for fc_o. The values are each block's own; a DWS layer has 16 such
    blocks (MLP of 3 layers) in a few shape classes, and one at a time their small ops cost more to
    dispatch than to compute."""
    first = blocks[0]
    G, (B, n, f_in), f = len(blocks), xs[0].shape, first.fc_q.out_features
    x = torch.stack(list(xs)).view(G, B * n, f_in)
    w = torch.stack([lin.weight for s in blocks for lin in (s.fc_q, s.fc_k, s.fc_v)]).view(G, 3 * f, f_in)
    b = torch.stack([lin.bias for s in blocks for lin in (s.fc_q, s.fc_k, s.fc_v)]).view(G, 1, 3 * f)
    qkv = torch.baddbmm(b, x, w.transpose(1, 2)).view(G * B, n, 3 * f)
    o = packed_set_attention(qkv, first.heads, first.scale).reshape(G, B * n, f)
    w_o = torch.stack([s.fc_o.weight for s in blocks])
    b_o = torch.stack([s.fc_o.bias for s in blocks]).unsqueeze(1)
    return (o + F.relu(torch.baddbmm(b_o, o, w_o.transpose(1, 2)))).view(G, B, n, f)


class PairBlock(nn.Module):
    """All equivariant maps from tensor `src` to tensor `dst` (see the module docstring)."""

    def __init__(self, src: tuple[Axis, ...], dst: tuple[Axis, ...], c_in: int, c_out: int, *,
                 reduction: str = "max", set_layer: str = "sab", num_heads: int = 8) -> None:
        super().__init__()
        self.reduction, self.c_out = reduction, c_out
        dst_groups = {a.group for a in dst if a.group is not None}
        shared = [a.group for a in src if a.group is not None and a.group in dst_groups]
        f_in = prod(a.size for a in src if a.group is None) * c_in
        self.out_fixed = [a.size for a in dst if a.group is None]
        f_out = prod(self.out_fixed) * c_out
        if len(shared) == 1 and set_layer == "sab":
            kept: list[tuple[str, ...]] = [tuple(shared)]
            mods: list[nn.Module] = [SAB(f_in, f_out, num_heads)]
        elif len(shared) == 1:  # DeepSets: Gamma(x) + Lambda(pool(x)), Lambda without bias
            kept = [tuple(shared), ()]
            mods = [nn.Linear(f_in, f_out), nn.Linear(f_in, f_out, bias=False)]
        else:
            kept = [k for r in range(len(shared), -1, -1) for k in combinations(shared, r)]
            mods = [nn.Linear(f_in, f_out) for _ in kept]
        self.terms = nn.ModuleList(mods)
        self.scale = 1.0 / len(kept) if len(shared) >= 2 else 1.0
        self.plans = [self._plan(src, dst, k) for k in kept]

    @staticmethod
    def _plan(src: tuple[Axis, ...], dst: tuple[Axis, ...], kept: tuple[str, ...]) -> dict:
        """Index bookkeeping of one term, computed once."""
        pool = [1 + i for i, a in enumerate(src) if a.group is not None and a.group not in kept]
        rem = [a for a in src if a.group is None or a.group in kept]
        order = [next(i for i, a in enumerate(rem) if a.group == g) for g in kept]
        order += [i for i, a in enumerate(rem) if a.group is None]
        kept_sizes = [rem[i].size for i in order[:len(kept)]]
        cur = list(kept) + [("fixed", j) for j, a in enumerate(dst) if a.group is None]
        keys = [("fixed", j) if a.group is None else (a.group if a.group in kept else None) for j, a in enumerate(dst)]
        present = [cur.index(k) for k in keys if k is not None]
        broadcast = [1 + j for j, k in enumerate(keys) if k is None]
        return {"pool": pool, "perm": [0] + [1 + i for i in order] + [len(rem) + 1], "kept_sizes": kept_sizes,
                "out_perm": [0] + [1 + p for p in present] + [len(cur) + 1], "broadcast": broadcast}

    def set_block(self) -> SAB | None:
        """The block's one term when it is a set-attention block: such blocks of equal sizes in a layer
        run together (see `batched_set_blocks`)."""
        return self.terms[0] if len(self.terms) == 1 and isinstance(self.terms[0], SAB) else None

    def term_input(self, x: Tensor, plan: dict, pool: Callable[[Sequence[int]], Tensor] | None = None) -> Tensor:
        """A term's input: x pooled over the groups it does not keep, as [B, *kept sizes, features]."""
        h = (pool(plan["pool"]) if pool is not None else reduce(x, plan["pool"], self.reduction)).permute(plan["perm"])
        return h.reshape(x.shape[0], *plan["kept_sizes"], -1)

    def term_output(self, h: Tensor, plan: dict) -> Tensor:
        """A term's [B, *kept sizes, features] output laid out on the destination's axes (1 where broadcast)."""
        h = h.reshape(h.shape[0], *plan["kept_sizes"], *self.out_fixed, self.c_out).permute(plan["out_perm"])
        for d in plan["broadcast"]:
            h = h.unsqueeze(d)
        return h

    def term_outputs(self, x: Tensor, pool: Callable[[Sequence[int]], Tensor] | None = None,
                     scale: float = 1.0) -> list[Tensor]:
        """The block's terms times `scale`, not summed: [B, *dst sizes (1 where broadcast), c_out] each.
        `pool(dims)` gives x pooled over dims (a cache shared by the blocks of a layer). A linear
        term takes the scale in its weights: its output can be a full-size tensor, its weights are small."""
        out = []
        for mod, plan in zip(self.terms, self.plans):
            h = self.term_input(x, plan, pool)
            if scale == 1.0:
                h = mod(h)
            elif isinstance(mod, nn.Linear):
                h = F.linear(h, mod.weight * scale, None if mod.bias is None else mod.bias * scale)
            else:
                h = mod(h) * scale
            out.append(self.term_output(h, plan))
        return out

    def forward(self, x: Tensor) -> Tensor:
        """[B, *src sizes, c_in] -> [B, *dst sizes (1 where broadcast), c_out]."""
        return sum_terms([(h, 1.0) for h in self.term_outputs(x, scale=self.scale)])


def sum_terms(terms: Sequence[tuple[Tensor, float]]) -> Tensor:
    """sum(scale * term) over broadcastable terms with few full-size passes: terms of one shape are
    summed first (a scale of 1 costs no pass), then, smallest first, each sum is added into the
    smallest larger sum it broadcasts into, so only the sums that fit into no other are added at full
    size (adding each term into a full-size running sum took one full-size pass per term, and as many
    reductions in the backward pass)."""
    groups: dict[tuple[int, ...], Tensor] = {}
    for t, s in terms:
        shape = tuple(t.shape)
        if shape not in groups:
            groups[shape] = t if s == 1.0 else t * s
        else:
            groups[shape] = groups[shape].add(t, alpha=s)
    for shape in sorted(groups, key=prod):
        into = [k for k in groups if k != shape and prod(k) >= prod(shape)
                and all(a == b or a == 1 for a, b in zip(shape, k))]
        if into:
            target = min(into, key=prod)
            groups[target] = groups[target] + groups.pop(shape)
    parts = sorted(groups.values(), key=lambda t: -t.numel())
    out = parts[0]
    for t in parts[1:]:
        out = out + t
    return out


class PooledBlocks(nn.Module):
    """All blocks without a shared group, at once: y_j = sum_i Lin_ij(pool(x_i)), broadcast to tensor j.

    Pools each source tensor over its permutable axes once ([B, fixed..., C] -> [B, F_i]) and runs
    one Linear per destination over the concatenated pooled sources. Parameters equal one
    Linear(F_i -> F_j) with bias per block (the per-block biases are kept separately and summed,
    and each block's weight slice is initialised with its own fan-in, as separate Linears would be).
    """

    def __init__(self, layouts: list, c_ins: list[int], c_out: int, pairs: list[tuple[int, int]], *,
                 reduction: str = "max") -> None:
        super().__init__()
        self.reduction, self.c_out = reduction, c_out
        self.pool_dims = [[1 + k for k, a in enumerate(t.axes) if a.group is not None] for t in layouts]
        self.f_in = [prod(a.size for a in t.axes if a.group is None) * c for t, c in zip(layouts, c_ins)]
        self.sources: dict[int, list[int]] = {}
        for i, j in pairs:
            self.sources.setdefault(j, []).append(i)
        self.dsts = sorted(self.sources)
        self.linears = nn.ModuleList()
        self.biases = nn.ParameterList()
        self.out_shape, self.fan_in = {}, {}
        for j in self.dsts:
            t = layouts[j]
            f_out = prod(a.size for a in t.axes if a.group is None) * c_out
            self.linears.append(nn.Linear(sum(self.f_in[i] for i in self.sources[j]), f_out, bias=False))
            self.biases.append(nn.Parameter(torch.zeros(len(self.sources[j]), f_out)))
            self.out_shape[j] = [1 if a.group is not None else a.size for a in t.axes] + [c_out]
        self.needed = sorted({i for srcs in self.sources.values() for i in srcs})

    def init_(self, scale: float) -> None:
        """Official init per block: xavier_normal * sqrt(2 in / out) * scale, bias U(-1e-4, 1e-4)."""
        with torch.no_grad():
            for j, lin, bias in zip(self.dsts, self.linears, self.biases):
                start, f_out = 0, lin.weight.shape[0]
                for i in self.sources[j]:
                    f = self.f_in[i]
                    std = math.sqrt(2.0 / (f + f_out)) * math.sqrt(2 * f / f_out) * scale
                    lin.weight[:, start:start + f].normal_(0, std)
                    start += f
                bias.uniform_(-1e-4, 1e-4)

    def forward(self, xs: Sequence[Tensor], pool: Callable[[int, Sequence[int]], Tensor] | None = None) -> dict[int, Tensor]:
        B = xs[0].shape[0]
        pooled = {i: (pool(i, self.pool_dims[i]) if pool is not None else reduce(xs[i], self.pool_dims[i], self.reduction))
                  .reshape(B, -1) for i in self.needed}
        out = {}
        for j, lin, bias in zip(self.dsts, self.linears, self.biases):
            h = lin(torch.cat([pooled[i] for i in self.sources[j]], dim=1)) + bias.sum(0)
            out[j] = h.view(B, *self.out_shape[j])
        return out
