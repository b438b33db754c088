"""DWS layer (the block matrix of all weight/bias -> weight/bias maps), its pointwise companions,
and the invariant head.

The layer keeps DWSNets' four block families apart (weight_to_weight, weight_to_bias,
bias_to_weight, bias_to_bias; key "i_j" = from the i-th to the j-th tensor of that kind) for the
blocks between tensors that share a neuron set; the blocks between tensors that share none
(pool -> Lin -> broadcast) are evaluated together in `pooled` (see blocks.PooledBlocks). It sums
every block into its output tensor and divides by the number of tensors, as the official code.

NFN's layers (Zhou et al.; the same linear space with mean pooling) differ in scale only, and under
Adam scale is learning speed: `terms="sum"` adds the terms without DWSNets' 1/n and 1/(number of
terms), and `init="nfn"` draws every weight and bias feeding output tensor j from
U(-sqrt(1/F_j), sqrt(1/F_j)), F_j the summed fan-in of those maps (the NFN repository's
`set_init_`). The NFN repository's layers also feed some redundant inputs (a tensor's full mean
beside its row means), so its F_j, and its parameter count, are somewhat larger than ours.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import PairBlock, PooledBlocks, batched_set_blocks, reduce, sum_terms
from .layout import TensorLayout


class DWSLayer(nn.Module):
    def __init__(self, layouts: Sequence[TensorLayout], c_in: int | Sequence[int], c_out: int, *,
                 reduction: str = "max", set_layer: str = "sab", num_heads: int = 8, init_scale: float = 1.0,
                 terms: str = "mean", init: str = "dwsnets") -> None:
        super().__init__()
        if terms not in ("mean", "sum") or init not in ("dwsnets", "nfn"):
            raise ValueError(f"DWSLayer: terms must be 'mean' or 'sum' and init 'dwsnets' or 'nfn', got {terms!r}, {init!r}")
        if init == "nfn" and set_layer == "sab":
            raise ValueError("DWSLayer: init 'nfn' is for linear blocks (set_layer 'ds'), not attention")
        self.sum_terms = terms == "sum"
        self.layouts = list(layouts)
        c_ins = [c_in] * len(self.layouts) if isinstance(c_in, int) else list(c_in)
        self.c_out, self.reduction = c_out, reduction
        index = {id(t): (t.kind, sum(1 for u in self.layouts[:k] if u.kind == t.kind)) for k, t in enumerate(self.layouts)}
        families = {f"{a}_to_{b}": nn.ModuleDict() for a in ("weight", "bias") for b in ("weight", "bias")}
        self.routes: list[tuple[int, int, str, str]] = []
        pooled_pairs = []
        for i, src in enumerate(self.layouts):
            for j, dst in enumerate(self.layouts):
                if not set(src.groups) & set(dst.groups):
                    pooled_pairs.append((i, j))
                    continue
                fam = f"{src.kind}_to_{dst.kind}"
                key = f"{index[id(src)][1]}_{index[id(dst)][1]}"
                families[fam][key] = PairBlock(src.axes, dst.axes, c_ins[i], c_out, reduction=reduction,
                                               set_layer=set_layer, num_heads=num_heads)
                self.routes.append((i, j, fam, key))
        self.blocks = nn.ModuleDict(families)
        # set-attention blocks of equal sizes (set size, features in and out, heads) run together
        self.batch_set_blocks = True
        classes: dict[tuple, list[int]] = {}
        for r, (i, j, fam, key) in enumerate(self.routes):
            sab = self.blocks[fam][key].set_block()
            if sab is not None:
                shape = (*self.blocks[fam][key].plans[0]["kept_sizes"], sab.fc_q.in_features, sab.fc_q.out_features,
                         sab.heads)
                classes.setdefault(shape, []).append(r)
        self.set_classes = [rs for rs in classes.values() if len(rs) > 1]
        self.pooled = PooledBlocks(self.layouts, c_ins, c_out, pooled_pairs, reduction=reduction)
        if init == "nfn":
            self._init_nfn()
        else:
            self._init(init_scale)

    def _init_nfn(self) -> None:
        """The NFN repository's init: every map into output tensor j from U(+-sqrt(1 / its summed fan-in))."""
        fan_in = [0] * len(self.layouts)
        params: list[list[Tensor]] = [[] for _ in self.layouts]
        for j, lin, bias in zip(self.pooled.dsts, self.pooled.linears, self.pooled.biases):
            fan_in[j] += lin.in_features
            params[j] += [lin.weight, bias]
        for _, j, fam, key in self.routes:
            for m in self.blocks[fam][key].terms:
                fan_in[j] += m.in_features
                params[j] += [p for p in (m.weight, m.bias) if p is not None]
        with torch.no_grad():
            for f, ps in zip(fan_in, params):
                for p in ps:
                    p.uniform_(-(1 / f) ** 0.5, (1 / f) ** 0.5)

    def _init(self, scale: float) -> None:
        """Official init: xavier_normal * sqrt(2 in / out) * scale, biases U(-1e-4, 1e-4)."""
        self.pooled.init_(scale)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                out_c, in_c = m.weight.shape
                nn.init.xavier_normal_(m.weight)
                with torch.no_grad():
                    m.weight.mul_((2 * in_c / out_c) ** 0.5 * scale)
                    if m.bias is not None:
                        m.bias.uniform_(-1e-4, 1e-4)

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:
        n, B = len(self.layouts), xs[0].shape[0]
        pooled: dict[tuple[int, tuple[int, ...]], Tensor] = {}

        def pool(i: int, dims: Sequence[int]) -> Tensor:
            """Each tensor pooled once per set of axes. Over several axes: the pool over the first of
            the (cached) pool over the others, so that only one full-size pool per axis runs forward
            and backward (for max the gradient reaches the same entry: the first maximum in the
            flattened axes, as torch.max over them)."""
            key = (i, tuple(sorted(dims)))
            if key not in pooled:
                d = key[1]
                pooled[key] = reduce(pool(i, d[1:]), d[:1], self.reduction) if len(d) > 1 else \
                    reduce(xs[i], d, self.reduction)
            return pooled[key]

        share = 1.0 if self.sum_terms else 1.0 / n
        terms: list[list[tuple[Tensor, float]]] = [[] for _ in self.layouts]
        for j, h in self.pooled(xs, pool).items():
            terms[j].append((h, share))
        batched: dict[int, Tensor] = {}
        for routes in self.set_classes if self.batch_set_blocks else ():
            blocks = [self.blocks[fam][key] for _, _, fam, key in (self.routes[r] for r in routes)]
            inputs = [b.term_input(xs[self.routes[r][0]], b.plans[0], lambda dims, i=self.routes[r][0]: pool(i, dims))
                      for r, b in zip(routes, blocks)]
            batched.update(zip(routes, batched_set_blocks([b.terms[0] for b in blocks], inputs).unbind(0)))
        for r, (i, j, fam, key) in enumerate(self.routes):
            block = self.blocks[fam][key]
            s = share * (1.0 if self.sum_terms else block.scale)
            if r in batched:
                terms[j].append((block.term_output(batched[r], block.plans[0]), s))
            else:
                terms[j] += [(h, 1.0) for h in block.term_outputs(xs[i], lambda dims, i=i: pool(i, dims), scale=s)]
        return [sum_terms(ts).expand(B, *(a.size for a in t.axes), self.c_out) for ts, t in zip(terms, self.layouts)]


class TensorBatchNorm(nn.Module):
    """One BatchNorm1d per tensor over all its entries (DWSNets' BN)."""

    def __init__(self, n_tensors: int, channels: int) -> None:
        super().__init__()
        self.bns = nn.ModuleList(nn.BatchNorm1d(channels) for _ in range(n_tensors))

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:
        return [bn(x.reshape(-1, x.shape[-1])).reshape(x.shape) for bn, x in zip(self.bns, xs)]


def relu_dropout(xs: Sequence[Tensor], p: float, training: bool) -> list[Tensor]:
    return [F.dropout(F.relu(x), p, training) if p > 0 else F.relu(x) for x in xs]


class InvariantHead(nn.Module):
    """Pool every tensor over its permutable axes, keep non-permutable axes as features, concatenate,
    then an MLP (one Linear by default). For an MLP input this is DWSNets' InvariantLayer: internal
    weights and biases pooled to C, W_0 keeps d_0, W_{L-1} and b_{L-1} keep d_L."""

    def __init__(self, layouts: Sequence[TensorLayout], channels: int, out_dim: int, *, reduction: str = "max",
                 n_fc_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.reduction = reduction
        self.pool_dims = [[1 + i for i, a in enumerate(t.axes) if a.group is not None] for t in layouts]
        in_dim = sum(channels * int(torch.tensor([a.size for a in t.axes if a.group is None] or [1]).prod())
                     for t in layouts)
        mods: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(n_fc_layers - 1):  # dropout (if any) after each hidden ReLU
            mods += [nn.ReLU(), *([nn.Dropout(dropout)] if dropout > 0 else []), nn.Linear(out_dim, out_dim)]
        self.fc = nn.Sequential(*mods)

    def forward(self, xs: Sequence[Tensor]) -> Tensor:
        pooled = [reduce(x, dims, self.reduction).flatten(1) for x, dims in zip(xs, self.pool_dims)]
        return self.fc(torch.cat(pooled, dim=1))
