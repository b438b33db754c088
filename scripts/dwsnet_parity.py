#!/usr/bin/env python
"""Does our DWSNet learn like the official DWSNets model? Same INRs, same batches, same optimiser.

    WSBENCH_OFFICIAL_DWSNETS=<checkout of github:AvivNavon/DWSNets> WSBENCH_DATA_DIR=../shared/data \
        python scripts/dwsnet_parity.py --zoo siren_mnist --variant small [--steps 300] [--seeds 0 1] \
        [--out leaderboards/parity/dwsnet_siren_mnist_small]   # writes <out>.json and <out>.md

Both models at the official MNIST-INR settings (hidden 32, 4 hidden DWS layers, max reduction, SAB
with 8 heads, BatchNorm, no dropout), each with its own initialisation under the same seed, train on
the zoo's training INRs normalised per entry (the official trainer's statistics), in batches of 64
drawn in one shared order, with the official trainer's optimiser (AdamW, lr 1e-3, amsgrad, weight
decay 5e-4) and no augmentation. Reported: the logits' spread at initialisation, the training loss
averaged over windows of equal iterations, and test accuracy and loss after the last step.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from official_dwsnets import official_dwsnet, official_inputs  # noqa: E402

from wsbench.files import write_report  # noqa: E402
from wsbench.weights import WeightSpace  # noqa: E402

BATCH, LR, WEIGHT_DECAY = 64, 1e-3, 5e-4


def ours(spec) -> torch.nn.Module:
    import wsbench.builtins  # noqa: F401
    from wsbench.registry import METHODS
    from wsbench.runner import RESERVED, load_preset

    cfg = {k: v for k, v in load_preset("dwsnet", "paper").items() if k not in RESERVED}
    return METHODS.get("dwsnet")(spec, 10, **cfg)


def adapters(spec):
    """name -> (model builder, inputs from a dict of normalised tensors)."""
    official = os.environ.get("WSBENCH_OFFICIAL_DWSNETS")
    if not official:
        raise SystemExit("dwsnet_parity: set WSBENCH_OFFICIAL_DWSNETS to a checkout of github:AvivNavon/DWSNets")
    return {"official": (lambda: official_dwsnet(official), official_inputs),
            "wsbench": (lambda: ours(spec), lambda t: WeightSpace(spec, t))}


def evaluate(model, make_inputs, tensors: dict, y: torch.Tensor) -> dict:
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(make_inputs({k: v[i:i + 256] for k, v in tensors.items()}))
                            for i in range(0, len(y), 256)])
    return {"accuracy": float((logits.argmax(1) == y).float().mean()), "loss": float(F.cross_entropy(logits, y))}


def run(name: str, build, make_inputs, train: dict, y: torch.Tensor, test: dict, y_test: torch.Tensor,
        order: list[torch.Tensor], seed: int) -> dict:
    torch.manual_seed(seed)
    model = build()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, amsgrad=True, weight_decay=WEIGHT_DECAY)
    model.train()
    with torch.no_grad():
        first = model(make_inputs({k: v[order[0]] for k, v in train.items()}))
    losses, t = [], time.perf_counter()
    for idx in order:
        loss = F.cross_entropy(model(make_inputs({k: v[idx] for k, v in train.items()})), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - t
    return {"method": name, "seed": seed, "params": sum(p.numel() for p in model.parameters()),
            "init_logit_std": float(first.std()), "losses": losses, "seconds_per_step": seconds / len(order),
            "test": evaluate(model, make_inputs, test, y_test)}


def batch_order(n: int, steps: int, seed: int) -> list[torch.Tensor]:
    """Shuffled epochs of batches of BATCH (a last batch under 2 networks dropped: BatchNorm needs 2)."""
    g, out = torch.Generator().manual_seed(seed), []
    while len(out) < steps:
        perm = torch.randperm(n, generator=g)
        out += [b for b in perm.split(BATCH) if len(b) > 1]
    return out[:steps]


def windows(losses: list[float], width: int) -> list[float]:
    return [sum(losses[i:i + width]) / len(losses[i:i + width]) for i in range(0, len(losses), width)]


def markdown(res: dict) -> str:
    w = res["window"]
    lines = [f"# DWSNet against the official DWSNets model: {res['zoo']}", "", f"`{res['command']}` ({res['date']}, "
             f"torch {res['torch']}, {res['device']}). {res['n_train']} training and {res['n_test']} test INRs, "
             f"{res['steps']} steps of batch {BATCH}; {res['setup']}", "",
             "| model | seed | params | logit std at init | " + " | ".join(
                 f"loss {i * w + 1}-{min((i + 1) * w, res['steps'])}" for i in range(len(res["runs"][0]["windows"])))
             + " | test acc | test loss | s/step |",
             "|---|---:|---:|---:|" + "---:|" * len(res["runs"][0]["windows"]) + "---:|---:|---:|"]
    for r in res["runs"]:
        lines.append(f"| {r['method']} | {r['seed']} | {r['params']:,} | {r['init_logit_std']:.3f} | "
                     + " | ".join(f"{x:.3f}" for x in r["windows"])
                     + f" | {r['test']['accuracy']:.1%} | {r['test']['loss']:.3f} | {r['seconds_per_step']:.2f} |")
    lines += ["", "Mean over seeds, ours / official: " + ", ".join(
        f"loss window {i + 1}: {x:.2f}" for i, x in enumerate(res["loss_ratio"]))
        + f"; test accuracy {res['test_accuracy']['wsbench']:.1%} vs {res['test_accuracy']['official']:.1%}.", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zoo", default="siren_mnist")
    ap.add_argument("--variant", default="small")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", help="write <out>.json and <out>.md")
    a = ap.parse_args()
    if a.steps < 1 or a.window < 1:
        raise SystemExit("dwsnet_parity: --steps and --window must be >= 1")
    from wsbench.zoo_store import open_zoo

    zoo = open_zoo(a.zoo, variant=a.variant)
    frames = {s: zoo.split(s) for s in ("train", "test")}  # weights and labels from the same rows
    ws_train, ws_test = (zoo.weights(frames[s]) for s in ("train", "test"))
    y, y_test = (torch.as_tensor(frames[s]["label"].to_numpy(copy=True)).long() for s in ("train", "test"))
    mean = {k: t.mean(0) for k, t in ws_train.tensors.items()}
    # per entry, with torch.std's unbiased estimate as the official compute_statistics.py (WeightNormalizer's
    # `entry` mode uses the biased one)
    std = {k: t.std(0).clamp_min(1e-8) for k, t in ws_train.tensors.items()}

    def normalised(ws: WeightSpace) -> dict:
        return {k: ((t - mean[k]) / std[k]).float() for k, t in ws.tensors.items()}

    train, test = normalised(ws_train), normalised(ws_test)
    models = adapters(ws_train.spec)
    runs = []
    for seed in a.seeds:
        order = batch_order(len(y), a.steps, seed)
        for name, (build, make_inputs) in models.items():
            r = run(name, build, make_inputs, train, y, test, y_test, order, seed)
            r["windows"] = windows(r["losses"], a.window)
            runs.append(r)
            print(f"{name} seed {seed}: windows {[round(x, 3) for x in r['windows']]}, test {r['test']}", flush=True)

    def mean_of(name: str, get) -> list[float] | float:
        vals = [get(r) for r in runs if r["method"] == name]
        return [sum(c) / len(c) for c in zip(*vals)] if isinstance(vals[0], list) else sum(vals) / len(vals)

    ours_w, off_w = mean_of("wsbench", lambda r: r["windows"]), mean_of("official", lambda r: r["windows"])
    res = {"zoo": f"{a.zoo} [{a.variant}]", "command": "python scripts/dwsnet_parity.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
           "device": f"cpu, {torch.get_num_threads()} threads", "n_train": len(y), "n_test": len(y_test),
           "steps": a.steps, "window": a.window,
           "setup": "per-entry normalisation from the training INRs; AdamW lr 1e-3, amsgrad, weight decay 5e-4; "
                    "no augmentation; each model initialised its own way under the same seed; the same batches.",
           "runs": runs, "loss_ratio": [o / f for o, f in zip(ours_w, off_w)],
           "test_accuracy": {n: mean_of(n, lambda r: r["test"]["accuracy"]) for n in models}}
    md = markdown(res)
    print(md)
    if a.out:
        write_report(f"{a.out}.json", res, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
