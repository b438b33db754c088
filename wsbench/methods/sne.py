"""SNE, the Set-based Neural network Encoder (Andreis et al., NeurIPS 2024, arXiv 2305.16625).

Pad-chunk-encode: every layer's parameters are laid out one output neuron per row (a linear/conv
neuron's incoming weights then its bias; a norm layer's weight, bias and running statistics per
channel), flattened, zero-padded to a multiple of `chunk_size` and cut into chunks. A chunk is a
set of scalars: set-to-set (SAB x n_sab) then set-to-vector (PMA) gives one vector per chunk; the
chunks of a layer are encoded the same way into a layer vector; the layer vectors into the
network vector, which an MLP maps to the output. Layer-level (sinusoidal, the layer's index) and
layer-type (learned: linear/conv/batchnorm/other) encodings are added before every set block of
every stage. Padding is masked out of the attention. Nothing ties the weights to a symmetry: the
logit-invariance regulariser (sec. 3.6, after Moskalev et al. 2023) adds
lambda * E_g ||f(x) - f(g x)||^2 over random neuron permutations g of the input network.
Reads any architecture (architecture-agnostic).

Not given by the sources available to us (marked [U] in the fact sheet), so chosen here: chunk
size 16, hidden 64, 4 heads, 2 SABs per stage, one permutation per network and step, lambda 0.1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import METHODS
from ..weights import NetworkSpec, WeightSpace
from .base import Encoder
from .common import SpecArg, checked_specs, random_neuron_permutation, sinusoidal

LAYER_TYPES = {"linear": 0, "conv": 1, "batchnorm": 2, "other": 3}


@dataclass
class ChunkPlan:
    """Where each chunk element comes from in a network's flattened tensors (spec.keys order)."""

    index: Tensor  # [n_chunks, c] long; -1 = padding
    layer: Tensor  # [n_chunks] layer index of each chunk
    slot: Tensor  # [n_chunks] position of the chunk within its layer
    layer_type: Tensor  # [n_layers]
    n_layers: int
    max_chunks: int

    def to(self, device: torch.device) -> "ChunkPlan":
        return ChunkPlan(self.index.to(device), self.layer.to(device), self.slot.to(device),
                         self.layer_type.to(device), self.n_layers, self.max_chunks)


def _rows(spec: NetworkSpec, offsets: dict[str, int]) -> list[tuple[str, Tensor]]:
    """(layer type, [rows, row length] indices into the flat vector) for every layer of the spec."""
    def idx(key: str) -> Tensor:
        p = spec.param(key)
        return offsets[key] + torch.arange(math.prod(p.shape)).reshape(p.shape[0] if p.shape else 1, -1)

    units, covered = [], set()
    for lay in spec.layers:
        if lay.kind in ("linear", "conv"):
            keys = [lay.weight] + ([lay.bias] if lay.bias else [])
            units.append((lay.kind, torch.cat([idx(k) for k in keys], dim=1)))
        else:
            keys = [lay.weight] + ([lay.bias] if lay.bias else []) + list(lay.buffers)
            units.append(("batchnorm" if lay.kind == "batchnorm" else "other", torch.cat([idx(k) for k in keys], dim=1)))
        covered.update(keys)
    for p in spec.params:  # anything no layer owns (unknown architectures) is a layer of its own
        if p.key not in covered:
            units.append(("other", idx(p.key)))
    return units


def chunk_plan(spec: NetworkSpec, chunk_size: int) -> ChunkPlan:
    offsets, pos = {}, 0
    for p in spec.params:
        offsets[p.key] = pos
        pos += math.prod(p.shape)
    chunks, layer, slot, types = [], [], [], []
    for j, (kind, rows) in enumerate(_rows(spec, offsets)):
        flat = rows.reshape(-1)
        q = -(-flat.numel() // chunk_size)
        padded = torch.full((q * chunk_size,), -1, dtype=torch.long)
        padded[:flat.numel()] = flat
        chunks.append(padded.view(q, chunk_size))
        layer += [j] * q
        slot += list(range(q))
        types.append(LAYER_TYPES[kind])
    return ChunkPlan(torch.cat(chunks), torch.tensor(layer), torch.tensor(slot), torch.tensor(types),
                     len(types), max(slot) + 1)


class MAB(nn.Module):
    """Set Transformer multihead attention block, pre-LayerNorm form:
    H = X + MHA(LN(X), LN(Y), LN(Y)), out = H + rFF(LN(H)). (The post-LN form of Lee et al.,
    LN(X + MHA), shrank the between-network signal ~5x per block here; pre-LN keeps it.)"""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_q, self.ln_kv, self.ln_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, x: Tensor, y: Tensor, pad: Tensor | None = None) -> Tensor:
        kv = self.ln_kv(y)
        h = x + self.attn(self.ln_q(x), kv, kv, key_padding_mask=pad, need_weights=False)[0]
        return h + self.ff(self.ln_ff(h))


class PMA(nn.Module):
    """Pooling by multihead attention with one learned seed: MAB(S, rFF(X)), [N, n, d] -> [N, d]."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.seed = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.mab = MAB(dim, heads)

    def forward(self, x: Tensor, pad: Tensor | None = None) -> Tensor:
        return self.mab(self.seed.expand(x.shape[0], 1, -1), self.ff(x), pad)[:, 0]


class SetStage(nn.Module):
    """n_sab x (add positional encoding, SAB) then (add encoding, PMA)."""

    def __init__(self, dim: int, heads: int, n_sab: int) -> None:
        super().__init__()
        self.sabs = nn.ModuleList(MAB(dim, heads) for _ in range(n_sab))
        self.pma = PMA(dim, heads)

    def forward(self, x: Tensor, pe: Tensor, pad: Tensor | None) -> Tensor:
        for sab in self.sabs:
            x = x + pe
            x = sab(x, x, pad)
        return self.pma(x + pe, pad)


@METHODS.register("sne")
class SNE(Encoder):
    description: ClassVar[str] = "Set-based Neural network Encoder: pad-chunk-encode + logit invariance (Andreis et al.)"
    architecture_agnostic: ClassVar[bool] = True
    invariant: ClassVar[bool] = False  # invariance is learned (regulariser), not built in
    defaults: ClassVar[dict[str, Any]] = {"chunk_size": 16, "hidden_dim": 64, "num_heads": 4, "n_sab": 2,
                                          "invariance_weight": 0.1, "max_layers": 512,
                                          "head_bn": True}
    tiny_config: ClassVar[dict[str, Any]] = {"chunk_size": 4, "hidden_dim": 16, "num_heads": 2, "n_sab": 1}

    def __init__(self, spec_or_specs: SpecArg, out_dim: int, **config: Any) -> None:
        super().__init__()
        self.specs = checked_specs(type(self), spec_or_specs)
        self.config = c = self.parse_config(config)
        h = c["hidden_dim"]
        for key in ("chunk_size", "hidden_dim", "num_heads", "max_layers"):
            if c[key] < 1:
                raise ConfigError(f"method {self.name!r}: option {key!r} must be >= 1, got {c[key]}")
        if h % c["num_heads"]:
            raise ConfigError(f"method {self.name!r}: hidden_dim {h} must be divisible by num_heads {c['num_heads']}")
        self.embed = nn.Linear(1, h)
        self.type_embedding = nn.Embedding(len(LAYER_TYPES), h)
        self.register_buffer("layer_pe", sinusoidal(torch.arange(c["max_layers"]), h), persistent=False)
        self.chunk_stage, self.layer_stage, self.net_stage = (SetStage(h, c["num_heads"], c["n_sab"]) for _ in range(3))
        # BatchNorm over networks first: the set stages average, so the between-network signal of the
        # network vector is small at init (~1e-3 of its norm); BN rescales it to unit variance.
        self.head = nn.Sequential(nn.BatchNorm1d(h) if c["head_bn"] else nn.Identity(), nn.Linear(h, h), nn.ReLU(),
                                  nn.Linear(h, out_dim))
        self._plans: dict[NetworkSpec, ChunkPlan] = {}
        self._device_plans: dict[tuple[NetworkSpec, torch.device], ChunkPlan] = {}
        for spec in self.specs:
            self.plan(spec)

    @classmethod
    def supports(cls, spec: NetworkSpec) -> tuple[bool, str]:
        return (True, "") if spec.params else (False, "the architecture has no parameters")

    def plan(self, spec: NetworkSpec, device: torch.device | None = None) -> ChunkPlan:
        """The chunk layout of `spec` (built once; cached per device)."""
        if device is not None:
            key = (spec, device)
            if key not in self._device_plans:
                self._device_plans[key] = self.plan(spec).to(device)
            return self._device_plans[key]
        if spec not in self._plans:
            plan = chunk_plan(spec, self.config["chunk_size"])
            if plan.n_layers > self.config["max_layers"]:
                raise ConfigError(f"method 'sne': {spec.describe()} has {plan.n_layers} layers > max_layers "
                                  f"{self.config['max_layers']}")
            self._plans[spec] = plan
        return self._plans[spec]

    def forward(self, ws: WeightSpace) -> Tensor:
        B, dev = len(ws), ws.device
        plan = self.plan(ws.spec, dev)
        index, layer, slot = plan.index, plan.layer, plan.slot
        flat = torch.cat([ws.tensors[k].reshape(B, -1) for k in ws.spec.keys] + [ws.tensors[ws.spec.keys[0]].new_zeros(B, 1)], 1)
        pad_col = flat.shape[1] - 1
        values = flat[:, torch.where(index >= 0, index, pad_col)]  # [B, n_chunks, c]
        n_chunks, c = index.shape
        h = self.config["hidden_dim"]
        type_pe = self.type_embedding(plan.layer_type)  # [L, h]
        pe = self.layer_pe[: plan.n_layers] + type_pe  # [L, h]
        # chunks: sets of c scalars -> one vector each
        x = self.embed(values.reshape(B * n_chunks, c, 1))
        chunk_pe = pe[layer][:, None, :].repeat(B, 1, 1)  # [B * n_chunks, 1, h]
        elem_pad = (index < 0).repeat(B, 1)
        z = self.chunk_stage(x, chunk_pe, elem_pad if bool(elem_pad.any()) else None).view(B, n_chunks, h)
        # layers: sets of chunk vectors -> one vector each
        grid = z.new_zeros(B, plan.n_layers, plan.max_chunks, h)
        grid[:, layer, slot] = z
        chunk_pad = torch.ones(plan.n_layers, plan.max_chunks, dtype=torch.bool, device=dev)
        chunk_pad[layer, slot] = False  # True where a layer has fewer chunks than the longest
        lay = self.layer_stage(grid.view(B * plan.n_layers, plan.max_chunks, h), pe.repeat(B, 1)[:, None, :],
                               chunk_pad.repeat(B, 1) if bool(chunk_pad.any()) else None)
        # network: set of layer vectors (ordered by their encodings) -> one vector
        net = self.net_stage(lay.view(B, plan.n_layers, h), pe[None], None)
        return self.head(net)

    def auxiliary_loss(self, ws: WeightSpace, out: Tensor, generator: torch.Generator | None = None) -> Tensor | None:
        """Logit invariance: lambda * mean over networks of ||f(x) - f(g x)||^2, g a random neuron permutation."""
        lam = self.config["invariance_weight"]
        if lam <= 0 or not ws.spec.group_sizes:
            return None
        permuted = ws.permute(random_neuron_permutation(ws, generator))
        return lam * (out - self(permuted)).pow(2).sum(-1).mean()
