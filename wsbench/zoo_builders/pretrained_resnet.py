"""`cifar10_resnet` from published checkpoints: the akamaster ResNet20/56 in $WSBENCH_DATA_DIR/pretrained,
each member's test accuracy measured by the suite on the CIFAR-10 JPEG test set and on `cifar10_exact`."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from safetensors.torch import load_file

from ..archs import build_arch
from ..errors import DataError, IntegrityError
from ..evaluation import accuracy
from ..manifest import sha256_file
from ..zoo_card import ZooCard
from . import BUILDERS, BuildContext, BuildResult


def _data_dir() -> Path:
    d = os.environ.get("WSBENCH_DATA_DIR")
    if not d:
        raise DataError("WSBENCH_DATA_DIR is not set: point it at the data mirror (e.g. ../shared/data) "
                        "that holds pretrained/resnet20.safetensors")
    return Path(d)


@BUILDERS.register("pretrained_resnet")
def build_pretrained_resnet(card: ZooCard, ctx: BuildContext) -> BuildResult:
    from ..data import load_split

    limit = card.recipe.get("eval_limit")
    tests = {
        "test_acc": load_split("cifar10", "test", limit=limit),
        "test_acc_exact": load_split("cifar10_exact", "test", limit=limit),
    }
    rows, weights = [], {}
    for group, arch in card.archs.items():
        spec = card.recipe["checkpoints"][group]
        path = _data_dir() / spec["file"]
        if not path.exists():
            raise DataError(f"pretrained checkpoint {path} is missing (zoo {card.name}, group {group})")
        digest = sha256_file(path)
        if digest != spec["sha256"]:
            raise IntegrityError(f"{path}: sha256 {digest[:12]}... does not match the card's {spec['sha256'][:12]}...")
        try:
            sd = load_file(str(path))
        except Exception as e:  # a checksum-matching file that is still unreadable: say which
            raise IntegrityError(f"{path} is not a readable safetensors file ({e})") from None
        model = build_arch(arch["arch"], **arch.get("kwargs", {}))
        model.load_state_dict(sd, strict=False)
        metrics = {}
        for col, split in tests.items():
            metrics[col] = accuracy(model, split.x, split.y, device=ctx.device)
            metrics[col.replace("acc", "source")] = split.source
            ctx.log(f"{group}: {col} = {100 * metrics[col]:.2f}% on {len(split)} images ({split.dataset})")
        full = model.state_dict()
        weights[group] = {k: v.unsqueeze(0) for k, v in full.items() if not k.endswith("num_batches_tracked")}
        rows.append({
            "id": f"{group}_pretrained", "split": "test", "group": group, "row": 0,
            "arch": arch["arch"], "depth": arch.get("kwargs", {}).get("depth"),
            "source": spec.get("source", ""), "source_sha256": digest, "seed": None,
            "n_params": sum(v.numel() for k, v in sd.items() if "running" not in k),
            "n_test": len(tests["test_acc"].y), "n_test_exact": len(tests["test_acc_exact"].y), **metrics,
        })
    return BuildResult(pd.DataFrame(rows), weights)

