"""Run by tests/test_distributed.py under torchrun (gloo, CPU): DDP checks that need several ranks.

    python -m torch.distributed.run --nproc_per_node 2 --standalone tests/distributed_worker.py OUT.json [CLI ARGS]

Checks (rank 0 writes the findings to OUT.json), then, given CLI ARGS, `run_bench.py CLI ARGS` in
the same process group (one launch instead of two: starting ranks is the slow part on a small box):
- gradient averaging: a DDP-wrapped layer's gradient equals the mean of the ranks' local gradients;
- train_encoder under DDP: every rank ends with the same weights, history and best epoch, for an
  encoder with and without per-rank augmentation (mlp, mlp_permaug).
"""
from __future__ import annotations

import copy
import json
import sys

import torch
from torch import nn


def gradient_averaging() -> float:
    """Largest |DDP gradient - mean of local gradients| over the ranks."""
    from torch.nn.parallel import DistributedDataParallel

    from wsbench import distributed

    torch.manual_seed(0)
    layer = nn.Linear(4, 1)
    plain = copy.deepcopy(layer)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(100 + distributed.rank()))  # different per rank
    ddp_layer = DistributedDataParallel(layer)  # kept: its reducer averages during backward
    ddp_layer(x).pow(2).mean().backward()
    plain(x).pow(2).mean().backward()
    local = torch.cat([p.grad.flatten() for p in plain.parameters()])
    mean = torch.stack(distributed.all_gather_object(local)).mean(0)
    ddp = torch.cat([p.grad.flatten() for p in layer.parameters()])
    assert not torch.allclose(local, mean), "the ranks' local gradients should differ"
    return float((ddp - mean).abs().max())


def synthetic_groups(n: int, seed: int):
    from wsbench.tasks.encoder_training import GroupData
    from wsbench.archs import spec_for_arch
    from wsbench.weights import WeightSpace

    spec = spec_for_arch("small_cnn", in_channels=1, num_classes=10, channels=4, n_conv=2)
    g = torch.Generator().manual_seed(seed)
    ws = WeightSpace(spec, {p.key: torch.randn(n, *p.shape, generator=g) for p in spec.params})
    y = torch.randn(n, generator=g)
    return [GroupData("cnn", ws, y, [str(i) for i in range(n)])]


def train_everywhere(method: str) -> dict:
    """Train on every rank; report whether all ranks agree on weights, history and best epoch."""
    from wsbench import distributed
    from wsbench.methods.base import RunContext
    from wsbench.registry import METHODS
    from wsbench.tasks.encoder_training import task_options, train_encoder

    opts = task_options("property_prediction", {"epochs": 4, "batch_size": 8, "eval_every": 2}, {})
    ctx = RunContext(device=torch.device("cpu"), seed=3, progress=False, log=lambda _m: None)
    trained = train_encoder(METHODS.get(method), {"hidden_dim": 16, "n_hidden": 1}, synthetic_groups(44, 1),
                            synthetic_groups(12, 2), opts, ctx, classification=False, out_dim=1, label=method)
    flat = torch.cat([p.detach().flatten() for p in trained.model.parameters()])
    mine = {"params": flat, "history": trained.history, "best_epoch": trained.best_epoch}
    every = distributed.all_gather_object(mine)
    return {"params_max_diff": max(float((e["params"] - flat).abs().max()) for e in every),
            "history_equal": all(e["history"] == trained.history for e in every),
            "best_epoch_equal": all(e["best_epoch"] == trained.best_epoch for e in every),
            "n_epochs": len(trained.history)}


def main(out: str, cli_args: list[str]) -> int:
    from wsbench import distributed

    distributed.setup("cpu")
    report = {"world": distributed.world(), "backend": torch.distributed.get_backend(),
              "grad_diff": gradient_averaging(),
              "encoders": {m: train_everywhere(m) for m in ("mlp", "mlp_permaug")}}
    if distributed.is_main():
        with open(out, "w") as f:
            json.dump(report, f)
    if cli_args:
        from wsbench.cli import main as cli_main

        return cli_main(cli_args)  # leaves the process group at its end
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
