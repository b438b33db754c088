"""Small zoos made in tests (no data needed)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from wsbench.archs import build_arch
from wsbench.zoo import write_zoo
from wsbench.zoo_card import ZooCard


def mlp_card(name: str = "toy_mlp", widths: tuple[int, ...] = (2, 8, 8, 3)) -> ZooCard:
    return ZooCard.from_dict({
        "name": name, "version": "0.1", "description": "toy MLP zoo for tests", "kind": "cnn", "dataset": "mnist",
        "archs": {"mlp": {"arch": "mlp", "kwargs": {"widths": list(widths)}}}, "builder": "none",
        "variants": {"tiny": {}, "full": {}},
    })


def make_mlp_zoo(root: Path, n: int = 6, seed: int = 0, name: str = "toy_mlp") -> Path:
    card = mlp_card(name)
    torch.manual_seed(seed)
    sds = [build_arch("mlp", widths=[2, 8, 8, 3]).state_dict() for _ in range(n)]
    weights = {"mlp": {k: torch.stack([sd[k] for sd in sds]) for k in sds[0]}}
    splits = ["train", "train", "train", "val", "test", "test"] * (n // 6 + 1)
    members = pd.DataFrame({"id": [f"m{i}" for i in range(n)], "split": splits[:n], "group": "mlp",
                            "row": list(range(n)), "test_acc": torch.rand(n).tolist()})
    write_zoo(root, card, members, weights)
    return root
