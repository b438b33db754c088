#!/usr/bin/env python
"""NeRN speed on whatever device is present (made for an H100; runs on CPU too, slowly).

For ResNet20 (h=180) and ResNet56 (h=320), both with cross-filter orderings, it measures:
- ordering and encoding times (the second of two runs, after warm-up), and the whole set-up;
- training iterations/s of the KD+FMD step (256 images, 4,096 kernels), for each speed variant
  (default switches, bf16 autocast, torch.compile), after warm-up, with the device synchronised;
- time-to-target: set-up + 68,600 iterations at that rate (the paper schedule; target <= 5 min);
- with --full: an actual run of the paper preset end to end (real data, model selection on the
  validation split), with its wall time and best validation accuracy.

  python scripts/gpu_bench_nern.py [--depths 20 56] [--variants default bf16 compile] [--steps 300]
                                   [--full 20] [--out nern_gpu_bench.json]

Writes JSON (default: $OUT/nern_gpu_bench.json when $OUT is set, else ./nern_gpu_bench.json).
Each measurement is wrapped so that one failing variant (e.g. compile) is recorded, not fatal.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from safetensors.torch import load_file  # noqa: E402

from wsbench.files import write_atomic  # noqa: E402
from wsbench.methods.base import ReconstructionTarget, RunContext  # noqa: E402
from wsbench.methods.nern import NeRN  # noqa: E402
from wsbench.methods.nern.fit import Fitter  # noqa: E402
from wsbench.methods.nern.layout import ConvLayout  # noqa: E402
from wsbench.methods.nern.orderings import compute_positions  # noqa: E402

PAPER_ITERS = 68_600
HIDDEN = {20: 180, 56: 320}
WEIGHTS = {20: 1e-4, 56: 1e-5}
VARIANTS = {"default": {}, "bf16": {"bf16": True}, "compile": {"compile": True},
            "bf16+compile": {"bf16": True, "compile": True}, "compile-cudagraphs": {"compile": "reduce-overhead"},
            "bf16+compile-cudagraphs": {"bf16": True, "compile": "reduce-overhead"}, "no_tf32": {"tf32": False},
            "no_fold": {"fold_bn": False}, "nchw": {"channels_last": False}}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def data_dir() -> Path:
    """WSBENCH_DATA_DIR, required: the device has no ../shared beside the checkout."""
    if not os.environ.get("WSBENCH_DATA_DIR"):
        raise SystemExit("gpu_bench_nern: set WSBENCH_DATA_DIR (on the device: $PWD/.device/data)")
    return Path(os.environ["WSBENCH_DATA_DIR"])


def target(depth: int) -> ReconstructionTarget:
    sd = load_file(str(data_dir() / "pretrained" / f"resnet{depth}.safetensors"))
    return ReconstructionTarget(f"resnet{depth}", "resnet_cifar", {"depth": depth}, sd, "cifar10")


def train_images(dev: torch.device, real: bool) -> torch.Tensor:
    if real:
        from wsbench.data import load_split

        return load_split("cifar10", "train", device=dev).x
    return torch.randn(45_000, 3, 32, 32, device=dev)


def guarded(fn, *args, **kw) -> dict:
    try:
        return fn(*args, **kw)
    except Exception as e:  # noqa: BLE001 - record and go on
        return {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=6)}


def bench_ordering(depth: int, dev: torch.device) -> dict:
    t = target(depth)
    layout = ConvLayout(t.build_model())
    ws = [t.state_dict[k].to(dev) for k in layout.keys]
    out = {}
    for mode in ("crossfilter", "infilter"):
        times = []
        for _ in range(2):
            sync(dev)
            t0 = time.perf_counter()
            compute_positions(ws, mode)
            sync(dev)
            times.append(time.perf_counter() - t0)
        out[f"{mode}_s"] = times[-1]
        out[f"{mode}_first_s"] = times[0]
    return out


def bench_steps(depth: int, dev: torch.device, x: torch.Tensor, variant: str, steps: int, warmup: int) -> dict:
    cfg = {"hidden": HIDDEN[depth], "ordering": "crossfilter", "kd_weight": WEIGHTS[depth],
           "fmd_weight": WEIGHTS[depth], "selection": "last", "iterations": PAPER_ITERS, **VARIANTS[variant]}
    ctx = RunContext(device=dev, progress=False)
    t0 = time.perf_counter()
    tr = NeRN(**cfg).trainer(target(depth), ctx, train_images=x)
    sync(dev)
    setup_s = time.perf_counter() - t0
    with tr.precision_context():
        t0 = time.perf_counter()
        # warm-up also steps the epoch's last, smaller image batch (45,000 images at 256 -> 200), so a
        # compiled step has both shapes compiled before the timed loop (which crosses an epoch end)
        last_of_epoch = [tr.images.per_epoch - 1] if tr.images is not None and tr.images.n % tr.images.batch else []
        for it in [*range(warmup), *last_of_epoch]:
            tr.step(it)
        sync(dev)
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        acc = None
        for it in range(warmup, warmup + steps):
            losses = tr.step(it)
            acc = losses if acc is None else acc + losses
        sync(dev)
        dt = time.perf_counter() - t0
    its = steps / dt
    return {"variant": variant, "it_per_s": its, "step_ms": 1e3 * dt / steps, "warmup_s": warm_s,
            "setup_s": setup_s, "ordering_s": tr.timings.ordering, "encodings_s": tr.timings.encodings,
            "time_to_target_s": tr.timings.setup + PAPER_ITERS / its,
            "mean_losses": dict(zip(("rec", "kd", "fmd", "total"), (acc / steps).tolist())),
            "bn_folded": tr.net.folded, "tf32": tr.tf32}


def full_run(depth: int, dev: torch.device, variant: str) -> dict:
    import yaml

    preset = Path(__file__).resolve().parents[1] / "baselines" / "nern" / f"paper_resnet{depth}_h{HIDDEN[depth]}.yaml"
    cfg = {**yaml.safe_load(preset.read_text()), **VARIANTS[variant]}
    t0 = time.perf_counter()
    rec = NeRN(**cfg).reconstruct(target(depth), RunContext(device=dev, progress=True))
    ex = rec.extra
    return {"preset": preset.name, "variant": variant, "wall_s": time.perf_counter() - t0,
            "best_val_acc": ex["best_val_acc"], "best_iteration": ex["best_iteration"], "it_per_s": ex["it_per_s"],
            "time_training_s": ex["time_training_s"], "time_eval_s": ex["time_eval_s"],
            "final_losses": ex["final_losses"], "n_params": rec.n_params, "n_bytes": rec.n_bytes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    ap.add_argument("--variants", nargs="+", default=["default", "bf16", "compile"], choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--random-images", action="store_true", help="skip loading CIFAR-10 (speed is the same)")
    ap.add_argument("--full", type=int, nargs="*", default=[], help="depths to run end to end with the paper preset")
    ap.add_argument("--full-variant", default="default", choices=list(VARIANTS))
    ap.add_argument("--skip-ordering", action="store_true", help="skip the ordering timings")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    data_dir()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    print(json.dumps(info), flush=True)
    out = Path(args.out) if args.out else Path(os.environ.get("OUT", ".")) / "nern_gpu_bench.json"
    results: dict = {"info": info, "ordering": {}, "steps": {}, "full": {}}
    x = guarded(train_images, dev, not args.random_images)
    if isinstance(x, dict):  # loading failed: recorded, and the step timings use random images
        results["train_images"] = x
        x = train_images(dev, False)
    for depth in args.depths:
        if not args.skip_ordering:
            results["ordering"][depth] = guarded(bench_ordering, depth, dev)
            print(f"ResNet{depth} ordering: {json.dumps(results['ordering'][depth])}", flush=True)
            write_json(out, results)
        for variant in args.variants:
            r = guarded(bench_steps, depth, dev, x, variant, args.steps, args.warmup)
            results["steps"][f"{depth}/{variant}"] = r
            print(f"ResNet{depth} {variant}: " + (f"{r['it_per_s']:.1f} it/s, time to target "
                  f"{r['time_to_target_s']:.0f} s" if "error" not in r else r["error"]), flush=True)
            write_json(out, results)  # after each measurement: a killed run keeps what it measured
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    for depth in args.full:
        results["full"][depth] = guarded(full_run, depth, dev, args.full_variant)
        print(f"ResNet{depth} full run: {json.dumps(results['full'][depth])[:400]}", flush=True)
        write_json(out, results)
    write_json(out, results)
    print(f"wrote {out}")


def write_json(path: Path, obj: dict) -> None:
    write_atomic(path, json.dumps(obj, indent=1, default=str))


if __name__ == "__main__":
    main()
