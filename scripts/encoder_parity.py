#!/usr/bin/env python
"""Does our encoder learn like the original code's model? Same INRs, same batches, same optimiser.

    WSBENCH_OFFICIAL_<REPO>=<checkout> WSBENCH_DATA_DIR=../shared/data \
        python scripts/encoder_parity.py --method dwsnet --zoo siren_mnist --variant small [--steps 300] \
        [--seeds 0 1] [--out leaderboards/parity/dwsnet_siren_mnist_small]   # writes <out>.json and <out>.md

The original model comes from a checkout of its repository (imported, never copied); how it is built,
fed and trained is the method's `Official` in scripts/official_<repo>.py (see METHOD_MODULES). Both
models, each with its own initialisation under the same seed, train on the zoo's training INRs with
the original trainer's normalisation, in batches drawn in one shared order, with the original trainer's
optimiser and no augmentation. Reported: the logits' spread at initialisation, the training loss
averaged over windows of equal iterations, and test accuracy and loss after the last step.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from official_model import Official  # noqa: E402

from wsbench.files import print_and_write_report  # noqa: E402
from wsbench.weights import NetworkSpec, WeightSpace  # noqa: E402

Tensors = dict[str, torch.Tensor]

# method -> the scripts/ module whose OFFICIAL dict holds its Official
METHOD_MODULES = {"dwsnet": "official_dwsnets", "nfn_np": "official_nfn", "nfn_hnp": "official_nfn",
                  "neural_graph": "official_neural_graphs"}


def official_for(method: str) -> Official:
    if method not in METHOD_MODULES:
        raise SystemExit(f"encoder_parity: no original model known for {method!r}; one of {sorted(METHOD_MODULES)}")
    return importlib.import_module(METHOD_MODULES[method]).OFFICIAL[method]


def ours(method: str, preset: str, spec: NetworkSpec, n_classes: int = 10) -> torch.nn.Module:
    import wsbench.builtins  # noqa: F401
    from wsbench.registry import METHODS
    from wsbench.runner import preset_method_config

    cfg = preset_method_config(method, preset)
    return METHODS.get(method)(spec, n_classes, **cfg)


def adapters(method: str, spec: NetworkSpec, n_classes: int = 10) -> dict[str, tuple[Callable, Callable]]:
    """name -> (model builder, inputs from a dict of normalised tensors)."""
    off = official_for(method)
    path = os.environ.get(off.env)
    if not path:
        raise SystemExit(f"encoder_parity: set {off.env} to a checkout of github:{off.repo}")
    return {"official": (lambda: off.build(path, spec, n_classes), off.inputs),
            "wsbench": (lambda: ours(method, off.our_preset, spec, n_classes), lambda t: WeightSpace(spec, t))}


def evaluate(model, make_inputs, tensors: Tensors, y: torch.Tensor) -> dict:
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(make_inputs({k: v[i:i + 256] for k, v in tensors.items()}))
                            for i in range(0, len(y), 256)])
    return {"accuracy": float((logits.argmax(1) == y).float().mean()), "loss": float(F.cross_entropy(logits, y))}


def run(name: str, build, make_inputs, optimizer, train: Tensors, y: torch.Tensor, test: Tensors,
        y_test: torch.Tensor, order: list[torch.Tensor], seed: int) -> dict:
    torch.manual_seed(seed)
    model = build()
    opt = optimizer(model.parameters())
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


def batch_order(n: int, steps: int, seed: int, batch: int = 64) -> list[torch.Tensor]:
    """Shuffled epochs of batches of `batch` (a last batch under 2 networks dropped: BatchNorm needs 2)."""
    g, out = torch.Generator().manual_seed(seed), []
    while len(out) < steps:
        perm = torch.randperm(n, generator=g)
        out += [b for b in perm.split(batch) if len(b) > 1]
    return out[:steps]


def windows(losses: list[float], width: int) -> list[float]:
    return [sum(losses[i:i + width]) / len(losses[i:i + width]) for i in range(0, len(losses), width)]


def markdown(res: dict) -> str:
    w = res["window"]
    lines = [f"# {res['method']} against the original model ({res['repo']}): {res['zoo']}", "",
             f"`{res['command']}` ({res['date']}, torch {res['torch']}, {res['device']}). {res['n_train']} training "
             f"and {res['n_test']} test INRs, {res['steps']} steps of batch {res['batch']}; {res['setup']}", "",
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


def parse_args(argv: list[str] | None, method: str | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    if method is None:
        ap.add_argument("--method", required=True, choices=sorted(METHOD_MODULES))
    ap.add_argument("--zoo", default="siren_mnist")
    ap.add_argument("--variant", default="small")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", help="write <out>.json and <out>.md")
    a = ap.parse_args(argv)
    if method is not None:
        a.method = method
    if a.steps < 1 or a.window < 1:
        raise SystemExit("encoder_parity: --steps and --window must be >= 1")
    return a


def main(argv: list[str] | None = None, method: str | None = None, script: str = "encoder_parity.py") -> int:
    a = parse_args(argv, method)
    from wsbench.zoo_store import open_zoo

    off = official_for(a.method)
    zoo = open_zoo(a.zoo, variant=a.variant)
    frames = {s: zoo.split(s) for s in ("train", "test")}  # weights and labels from the same rows
    ws_train, ws_test = (zoo.weights(frames[s]) for s in ("train", "test"))
    y, y_test = (torch.as_tensor(frames[s]["label"].to_numpy(copy=True)).long() for s in ("train", "test"))
    n_classes = int(max(y.max(), y_test.max())) + 1
    normalise = off.normaliser(ws_train.tensors)
    train, test = normalise(ws_train.tensors), normalise(ws_test.tensors)
    models = adapters(a.method, ws_train.spec, n_classes)
    runs = []
    for seed in a.seeds:
        order = batch_order(len(y), a.steps, seed, off.batch)
        for name, (build, make_inputs) in models.items():
            r = run(name, build, make_inputs, off.optimizer, train, y, test, y_test, order, seed)
            r["windows"] = windows(r["losses"], a.window)
            runs.append(r)
            print(f"{name} seed {seed}: windows {[round(x, 3) for x in r['windows']]}, test {r['test']}", flush=True)

    def mean_of(name: str, get) -> list[float] | float:
        vals = [get(r) for r in runs if r["method"] == name]
        return [sum(c) / len(c) for c in zip(*vals)] if isinstance(vals[0], list) else sum(vals) / len(vals)

    ours_w, off_w = mean_of("wsbench", lambda r: r["windows"]), mean_of("official", lambda r: r["windows"])
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    env_text = "".join(f"{k}={os.environ[k]} " for k in off.command_env if k in os.environ)
    res = {"method": a.method, "repo": off.repo, "zoo": f"{a.zoo} [{a.variant}]",
           "command": f"{env_text}python scripts/{script} {argv_text}", "date": time.strftime("%Y-%m-%d"),
           "torch": torch.__version__, "device": f"cpu, {torch.get_num_threads()} threads", "n_train": len(y),
           "n_test": len(y_test), "steps": a.steps, "window": a.window, "batch": off.batch,
           "setup": off.settings + " Each model initialised its own way under the same seed; the same batches.",
           "runs": runs, "loss_ratio": [o / f for o, f in zip(ours_w, off_w)],
           "test_accuracy": {n: mean_of(n, lambda r: r["test"]["accuracy"]) for n in models}}
    return print_and_write_report(a.out, res, markdown(res))


if __name__ == "__main__":
    raise SystemExit(main())
