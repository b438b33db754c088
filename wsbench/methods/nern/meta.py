"""Size accounting and meta-compression (paper sec. 5.2): magnitude pruning of the predictor.

The representation of a network is: the predictor (float32), the tensors NeRN does not predict
(BN affine parameters, the final linear layer, conv biases; counted as in the other
reconstructors, `compression.kept_size`), the permutation indices (ceil(log2 n) bits each), and a
learned embedding table if that ablation is used. A pruned predictor stores its non-zeros as
values plus positions, in whichever sparse format is smaller per weight matrix: a bitmap (1 bit
per entry) or CSR (column index per non-zero + row pointers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class SizeReport:
    n_params: int  # stored numbers (non-zeros for a pruned predictor)
    n_bytes: int
    predictor_params: int
    predictor_nonzeros: int
    sparse_index_bytes: int
    kept_params: int
    permutation_bytes: int
    embedding_params: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _bits(n: int) -> int:
    return math.ceil(math.log2(n)) if n > 1 else 1


def sparse_index_bytes(weight: Tensor) -> int:
    """Bytes of the cheaper of a bitmap and CSR for the positions of `weight`'s non-zeros."""
    if weight.dim() != 2:
        weight = weight.reshape(weight.shape[0], -1) if weight.dim() > 1 else weight.reshape(1, -1)
    rows, cols = weight.shape
    nnz = int((weight != 0).sum())
    if nnz == weight.numel():
        return 0
    bitmap = math.ceil(weight.numel() / 8)
    csr = math.ceil((nnz * _bits(cols) + (rows + 1) * _bits(nnz + 1)) / 8)
    return min(bitmap, csr)


def size_report(predictor: nn.Module, kept_params: int, permutation_bits: int,
                embedding_params: int = 0) -> SizeReport:
    total = nonzero = idx_bytes = 0
    for name, p in predictor.named_parameters():
        total += p.numel()
        nz = int((p != 0).sum())
        nonzero += nz
        if nz < p.numel():
            idx_bytes += sparse_index_bytes(p.detach())
    n_params = nonzero + kept_params + embedding_params
    n_bytes = 4 * n_params + idx_bytes + math.ceil(permutation_bits / 8)
    return SizeReport(n_params, n_bytes, total, nonzero, idx_bytes, kept_params,
                      math.ceil(permutation_bits / 8), embedding_params)


@torch.no_grad()
def magnitude_prune(predictor: nn.Module, sparsity: float) -> nn.Module:
    """A copy of `predictor` whose weight matrices keep the largest (1 - sparsity) fraction of
    entries by magnitude, globally across layers; biases are kept (they are ~1% of the size)."""
    import copy

    pruned = copy.deepcopy(predictor)
    if sparsity <= 0:
        return pruned
    mats = [m.weight for m in pruned.modules() if isinstance(m, nn.Linear)]
    flat = torch.cat([w.abs().reshape(-1) for w in mats])
    n_drop = int(round(sparsity * flat.numel()))
    if n_drop <= 0:
        return pruned
    # exact global threshold: drop the n_drop smallest (ties broken by position, deterministically)
    order = torch.argsort(flat, stable=True)
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[order[:n_drop]] = False
    pos = 0
    for w in mats:
        n = w.numel()
        w.mul_(keep[pos:pos + n].view_as(w))
        pos += n
    return pruned
