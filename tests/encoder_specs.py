"""The two small network specs the encoder tests run on, and random zoos of them."""
from __future__ import annotations

import torch

from wsbench.archs import build_arch, spec_for_arch
from wsbench.weights import NetworkSpec, WeightSpace

SPECS = {"mlp": ("mlp", {"widths": [2, 5, 4, 3]}),
         "cnn": ("small_cnn", {"in_channels": 2, "channels": 3, "n_conv": 2, "num_classes": 3})}


def spec_of(key: str) -> NetworkSpec:
    arch, kw = SPECS[key]
    return spec_for_arch(arch, **kw)


def random_ws(key: str, n: int, seed: int = 0) -> WeightSpace:
    arch, kw = SPECS[key]
    torch.manual_seed(seed)
    sds = [{k: v * (1 + i % 3) for k, v in build_arch(arch, **kw).state_dict().items()} for i in range(n)]
    return WeightSpace.from_state_dicts(spec_of(key), sds)
