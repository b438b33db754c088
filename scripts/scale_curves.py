#!/usr/bin/env python
"""Time and peak memory vs number of networks for zoo building and for one encoder epoch, with the
projection of the full zoos on this CPU and on an H200. Writes <out>.json, <out>.md and <out>.png.

    WSBENCH_DATA_DIR=../shared/data python scripts/scale_curves.py --out leaderboards/perf/scale_cpu
    python scripts/scale_curves.py --sizes 64 128 --out /tmp/scale   # a smoke run

With --out, the points of paths not named in --paths are kept from an earlier <out>.json, each with
the date and command that measured it.
Every point runs in a fresh process (its peak RSS is its own) through the real code paths:
- `siren_build`: the siren_mnist builder (build_resolved) on the first N training images, the
  recipe with `steps` cut to --siren-steps (fit time per step is constant: the fit seconds are scaled
  to the recipe's 1,000 steps; loading and writing are not; the compile happens before, untimed);
- `small_cnn_build`: the small_cnn_cifar10_gray builder with N runs of one full step each (the
  recipe's batch and shard size) and 128-image evaluations: the per-run overhead and the peak memory;
- `dwsnet_epoch` / `statnn_epoch`: one training epoch (batch 64, AdamW) of the encoder's paper /
  default preset over N SIREN-shaped networks (random weights: the time does not depend on them).
Projections (marked as such): the full zoos' work from the recipe, at the rate measured here, and
on an H200 at its published dense fp32 rate (67 TFLOP/s) times the fraction of this CPU's GEMM
rate the path reaches here (leaderboards/perf/cpu.json): an assumption, not a measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wsbench.metrics import linear_fit  # noqa: E402

H200_FP32_TFLOPS = 67.0  # NVIDIA H200 SXM datasheet, FP32 (no tensor cores)
SIREN_RECIPE_STEPS = 1000
SIREN_FULL = 70_000  # siren_mnist full: 60,000 train + 10,000 test images
SMALL_CNN_FULL_RUNS, SMALL_CNN_FULL_EPOCHS = 30_000, 86
SMALL_CNN_MEAN_FRACTION = (0.1 + 0.25 + 0.5 + 1.0) / 4  # the recipe's train_fraction choices
CIFAR_TRAIN = 50_000


def _peak_rss_mib() -> float:
    return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024


def _scale_card(name: str, overrides: dict):
    """The registered card `name` resolved with `overrides` as an extra variant (the card itself unchanged)."""
    from dataclasses import replace

    import wsbench.builtins  # noqa: F401
    from wsbench.registry import ZOOS

    card = ZOOS.get(name)
    return replace(card, variants={**card.variants, "scale": overrides}).resolve("scale")


def point_siren_build(n: int, steps: int) -> dict:
    import torch

    from wsbench.zoo_builders import build_resolved
    from wsbench.zoo_builders.siren_grads import CPU_CHUNK
    from wsbench.zoo_builders.siren_inr import fit_sirens

    per_shard, chunk = 1024, CPU_CHUNK
    sizes = [min(per_shard, n - k) for k in range(0, n, per_shard)]
    shapes = {chunk for s in sizes if s >= chunk} | {s % chunk for s in sizes} - {0}
    for size in sorted(shapes):  # every chunk shape the build meets compiles once, untimed
        fit_sirens(torch.rand(size, 28, 28), torch.arange(size), steps=1, lr=1e-3, chunk=chunk, compile_mode="on")
    val = max(1, n // 10)
    card = _scale_card("siren_mnist", {"train_images": n, "test_images": 0, "val_size": val, "steps": steps,
                                       "stop_psnr": None, "images_per_shard": per_shard})
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        zoo = build_resolved(card, Path(tmp) / "zoo", log=lambda _m: None, progress=False)
        wall = time.perf_counter() - t
        stats = zoo.card.recipe["build_stats"]
        members = len(zoo.members)
    fit = float(stats["fit_seconds"])
    return {"networks": members, "wall_s": wall, "fit_s": fit, "other_s": wall - fit,
            "seconds_at_recipe": (wall - fit) + fit * SIREN_RECIPE_STEPS / steps}


def point_small_cnn_build(n: int) -> dict:
    from wsbench.zoo_builders import build_resolved

    # one full minibatch per run at the recipe's batch size and shard size (the "dataset" epoch rule draws a whole
    # batch from any subset; the recipe's "subset" rule would give the 10 % runs a partial one): the build's peak memory
    card = _scale_card("small_cnn_cifar10_gray", {"runs": n, "epochs": 1, "checkpoints": [1], "epoch_steps": "dataset",
                                                  "train_images": 512, "test_images": 128, "eval_train_images": 64})
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        zoo = build_resolved(card, Path(tmp) / "zoo", log=lambda _m: None, progress=False)
        wall = time.perf_counter() - t
        stats = zoo.card.recipe["build_stats"]
    return {"networks": int(stats["runs_total"]), "wall_s": wall, "train_s": float(stats["train_seconds"])}


def point_encoder_epoch(method: str, preset: str, n: int) -> dict:
    import torch

    import wsbench.builtins  # noqa: F401
    from wsbench.archs import spec_for_arch
    from wsbench.registry import METHODS
    from wsbench.runner import load_preset
    from wsbench.flat_adamw import adamw
    from wsbench.weights import WeightSpace

    cfg = {k: v for k, v in load_preset(method, preset).items() if k not in ("description", "task", "extends")}
    spec = spec_for_arch("siren")
    g = torch.Generator().manual_seed(0)
    ws = WeightSpace(spec, {p.key: 0.1 * torch.randn(n, *p.shape, generator=g) for p in spec.params})
    y = torch.randint(0, 10, (n,), generator=g)
    torch.manual_seed(0)
    model = METHODS.get(method)(spec, 10, **cfg)
    opt = adamw(list(model.parameters()), lr=1e-3)
    t = time.perf_counter()
    for i in range(0, n, 64):
        loss = torch.nn.functional.cross_entropy(model(ws[i:i + 64]), y[i:i + 64])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {"networks": n, "wall_s": time.perf_counter() - t}


POINTS = {
    "siren_build": lambda n, a: point_siren_build(n, a.siren_steps),
    "small_cnn_build": lambda n, a: point_small_cnn_build(n),
    "dwsnet_epoch": lambda n, a: point_encoder_epoch("dwsnet", "paper", n),
    "statnn_epoch": lambda n, a: point_encoder_epoch("statnn", "default", n),
}


def _previous(out: str | None, remeasured: list[str]) -> dict:
    """The points of the paths not measured in this run, from an earlier <out>.json (each keeps its own date)."""
    old = Path(out).with_suffix(".json") if out else None
    if old is None or not old.is_file():
        return {}
    data = json.loads(old.read_text())
    kept = {p: pts for p, pts in data.get("paths", {}).items() if p in POINTS and p not in remeasured}
    measured = data.get("measured", {})
    return {"paths": kept, "what": {p: data["what"][p] for p in kept},
            "measured": {p: measured.get(p, {"date": data["date"], "command": data["command"]}) for p in kept}}


def run_point(path: str, n: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--one", path, str(n), "--siren-steps", str(args.siren_steps)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"networks": n, "error": tail[0]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def projections(res: dict, perf: dict | None) -> list[dict]:
    """The full zoos on this CPU (fitted per-network time at the recipe) and on an H200 (assumption)."""
    out = []
    siren = [p for p in res["paths"].get("siren_build", []) if "error" not in p]
    if len(siren) >= 2:
        a, b = linear_fit([p["networks"] for p in siren], [p["seconds_at_recipe"] for p in siren])
        cpu_s = a + b * SIREN_FULL
        row = {"what": f"siren_mnist full ({SIREN_FULL:,} INRs x {SIREN_RECIPE_STEPS:,} steps)", "cpu_hours": cpu_s / 3600}
        fit = (perf or {}).get("paths", {}).get("siren_fit")
        if fit and "flops_per_step" in fit:
            flops = fit["flops_per_step"] / 400 * SIREN_RECIPE_STEPS * SIREN_FULL  # perf path: 400 SIRENs per step
            row["h200_minutes"] = flops / (H200_FP32_TFLOPS * 1e12 * fit["fraction_of_gemm"]) / 60
        out.append(row)
    cnn = (perf or {}).get("paths", {}).get("small_cnn_train")
    if cnn and "image_passes_per_s" in cnn:
        passes = SMALL_CNN_FULL_RUNS * SMALL_CNN_FULL_EPOCHS * SMALL_CNN_MEAN_FRACTION * CIFAR_TRAIN
        flops_per_pass = cnn["flops_per_step"] / (cnn["image_passes_per_s"] * cnn["seconds_per_step"])
        out.append({"what": f"small_cnn_cifar10_gray full ({SMALL_CNN_FULL_RUNS:,} runs x {SMALL_CNN_FULL_EPOCHS} epochs "
                            f"over their data fraction: {passes / 1e9:.0f}G image passes, evaluations not counted)",
                    "cpu_hours": passes / cnn["image_passes_per_s"] / 3600,
                    "h200_minutes": passes * flops_per_pass / (H200_FP32_TFLOPS * 1e12 * cnn["fraction_of_gemm"]) / 60})
    return out


def markdown(res: dict) -> str:
    lines = [f"# Scale curves: time and memory vs number of networks ({res['machine']})", "",
             f"`{res['command']}` ({res['date']}, torch {res['torch']}, {res['threads']} threads). Every point in a fresh "
             "process; peak RSS is the process's.", ""]
    for path, points in res["paths"].items():
        when = res.get("measured", {}).get(path)
        source = f" Measured {when['date']} by `{when['command']}`." if when and when["command"] != res["command"] else ""
        lines += [f"## {path}", "", res["what"][path] + source, "", "| networks | seconds | s per 1k networks | peak RSS MiB |",
                  "|---:|---:|---:|---:|"]
        for p in points:
            if "error" in p:
                lines.append(f"| {p['networks']:,} | failed: {p['error']} | | |")
                continue
            secs = p.get("seconds_at_recipe", p["wall_s"])
            lines.append(f"| {p['networks']:,} | {secs:.1f} | {1000 * secs / p['networks']:.1f} | {p['peak_rss_mib']:.0f} |")
        ok = [p for p in points if "error" not in p]
        if len(ok) >= 2:
            a, b = linear_fit([p["networks"] for p in ok], [p.get("seconds_at_recipe", p["wall_s"]) for p in ok])
            ra, rb = linear_fit([p["networks"] for p in ok], [p["peak_rss_mib"] for p in ok])
            lines += ["", f"Fit: {a:.1f} s + {1000 * b:.2f} s per 1k networks; peak RSS {ra:.0f} MiB + "
                          f"{1000 * rb:.1f} MiB per 1k networks."]
        lines.append("")
    if res["projections"]:
        lines += ["## Projections for the full zoos (not measured)", "",
                  "| zoo | this CPU, hours | H200, minutes (projection) |", "|---|---:|---:|"]
        for p in res["projections"]:
            h200 = f"{p['h200_minutes']:.1f}" if "h200_minutes" in p else ""
            lines.append(f"| {p['what']} | {p['cpu_hours']:.1f} | {h200} |")
        lines += ["", f"H200 column: the path's FLOPs at the published dense fp32 rate ({H200_FP32_TFLOPS:.0f} TFLOP/s) "
                      "times the fraction of the GEMM rate the path reaches on this CPU (leaderboards/perf/cpu.json). "
                      "An assumption: small grouped kernels may reach a smaller fraction on a GPU, bf16 a larger rate.", ""]
    return "\n".join(lines)


def plot_png(res: dict) -> bytes:
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_t, ax_m = fig.subplots(1, 2)
    for path, points in res["paths"].items():
        ok = [p for p in points if "error" not in p]
        if not ok:
            continue
        xs = [p["networks"] for p in ok]
        ax_t.plot(xs, [p.get("seconds_at_recipe", p["wall_s"]) for p in ok], marker="o", label=path)
        ax_m.plot(xs, [p["peak_rss_mib"] for p in ok], marker="o", label=path)
    ax_t.set(xscale="log", yscale="log", xlabel="networks", ylabel="seconds", title="time")
    ax_m.set(xscale="log", xlabel="networks", ylabel="peak RSS, MiB", title="memory")
    ax_t.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


WHAT = {
    "siren_build": "siren_mnist builder on the first N training images; fit seconds scaled to the recipe's 1,000 steps "
                   "(measured at --siren-steps); loading and writing as measured.",
    "small_cnn_build": "small_cnn_cifar10_gray builder, N runs of one full training step each (the recipe's batch of 512 "
                       "and shard size) with 128-image evaluations: the cost of a run besides its training passes (planning, "
                       "init, evaluation, writing) and the build's peak memory.",
    "dwsnet_epoch": "one epoch of DWSNet (paper preset, 552,650 parameters) over N SIRENs, batch 64, AdamW.",
    "statnn_epoch": "one epoch of StatNN (default preset) over N SIRENs, batch 64, AdamW.",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    ap.add_argument("--paths", nargs="+", default=list(POINTS), choices=list(POINTS))
    ap.add_argument("--siren-steps", type=int, default=50)
    ap.add_argument("--perf", default=str(ROOT / "leaderboards" / "perf" / "cpu.json"),
                    help="the efficiency benchmark's JSON (rates for the projections)")
    ap.add_argument("--out", help="write <out>.json, <out>.md and <out>.png")
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        import torch

        from wsbench.allocator import tune_allocator

        tune_allocator()
        out = POINTS[a.one[0]](int(a.one[1]), a)
        out["peak_rss_mib"] = _peak_rss_mib()
        out["threads"] = torch.get_num_threads()
        print(json.dumps(out))
        return 0
    if not os.environ.get("WSBENCH_DATA_DIR"):
        print("scale_curves: set WSBENCH_DATA_DIR", file=sys.stderr)
        return 2
    import torch

    res = {"machine": f"{platform.machine()} CPU, {os.cpu_count()} cores", "torch": torch.__version__,
           "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
           "command": "python scripts/scale_curves.py " + " ".join(sys.argv[1:]), "siren_steps": a.siren_steps,
           "what": {p: WHAT[p] for p in POINTS}, "paths": {}}
    previous = _previous(a.out, a.paths)
    res["paths"], res["measured"] = previous.get("paths", {}), previous.get("measured", {})
    for path in a.paths:
        res["paths"][path], res["measured"][path] = [], {"date": res["date"], "command": res["command"]}
        for n in a.sizes:
            point = run_point(path, n, a)
            res["paths"][path].append(point)
            print(f"{path} {n}: {point}", file=sys.stderr)
    res["paths"] = {p: res["paths"][p] for p in POINTS if p in res["paths"]}
    perf_path = Path(a.perf)
    perf = json.loads(perf_path.read_text()) if perf_path.is_file() else None
    res["projections"] = projections(res, perf)
    text = markdown(res)
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
        out.with_suffix(".md").write_text(text)
        out.with_suffix(".png").write_bytes(plot_png(res))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
