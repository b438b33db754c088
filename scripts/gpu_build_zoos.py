#!/usr/bin/env python
"""Build the full zoos on a GPU and measure how fast (networks/s, speed-up over one at a time).

    WSBENCH_DATA_DIR=../shared/data python scripts/gpu_build_zoos.py bench            # the two speed targets
    WSBENCH_DATA_DIR=../shared/data python scripts/gpu_build_zoos.py build --out $OUT   # -> $OUT/zoo_builds.json
    python scripts/gpu_build_zoos.py summaries --from <returned>/zoo_builds.json         # -> zoos/summaries/
    python scripts/gpu_build_zoos.py build --zoos siren_mnist small_cnn_mnist --budget 560

`bench`: (1) small CNNs: trains up to 10,000 runs of the small_cnn_mnist full recipe, shard after
shard, until done or --budget seconds, and prints networks/s and the projected time for 10,000
runs (target <= 10 min); (2) SIRENs: fits up to 10,000 MNIST images with the siren_mnist recipe
(target <= 10 min); (3) the same code one network at a time on a few members, and the speed-up;
(4) non-determinism: one shard trained twice on the GPU, and on GPU vs CPU (max weight / metric
differences, for the cards' `nondeterminism` field); (5) grouped vs unfold convolutions.
`build`: builds each zoo's variant with the suite's builder (resumable: run it again after a time
limit and it continues with the next shard) and collects their summaries in one zoo_builds.json;
`summaries` writes those as zoos/summaries/<zoo>-<variant>.{json,md} here.
Builds stop starting new zoos after --budget seconds; shards are atomic, so a kill at any time is safe.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsbench.files import write_atomic  # noqa: E402
from wsbench.zoo_builders import build_zoo  # noqa: E402
from wsbench.zoo_builders import resnet_training, siren_inr, small_cnn  # noqa: E402,F401
from wsbench.zoo_builders.batched_training import MemberHParams, train_batch  # noqa: E402

ZOOS = ["siren_mnist", "siren_fashion_mnist", "small_cnn_mnist", "small_cnn_fashion_mnist", "small_cnn_cifar10_gray",
        "cnn_families_mnist", "cifar10_resnet_trained"]
FIELDS = ("seed", "optimizer", "lr", "weight_decay", "dropout", "init_scale", "train_fraction")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def device_label(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def card(name: str, variant: str = "full"):
    from wsbench.registry import ZOOS as CARDS

    return CARDS.get(name).resolve(variant)


class _BudgetSpent(Exception):
    pass


def bench_cnn(device: torch.device, budget: float, n_runs: int, conv_impl: str, variant: str = "full") -> dict:
    c = card("small_cnn_mnist", variant)
    c.recipe = {**c.recipe, "runs": n_runs, "conv_impl": conv_impl}
    runs, shards = small_cnn.plan(c)
    data, _ = small_cnn.load_image_data(c, device)
    print(f"[cnn] {n_runs} runs of small_cnn_mnist ({c.recipe['epochs']} epochs, batch {c.recipe['batch_size']}, "
          f"{len(shards)} shards of <= {c.recipe['members_per_shard']}, conv {conv_impl}) on {device_label(device)}")
    done, t0 = 0.0, time.perf_counter()
    for group, act, idx in shards:
        if time.perf_counter() - t0 > budget:
            break
        steps = {"done": 0}

        def stop_at_budget(step: int) -> None:  # the budget is checked every step, not only between shards
            steps["done"] = step
            if time.perf_counter() - t0 > budget:
                raise _BudgetSpent

        try:
            members, _, st = small_cnn.train_shard(c, group, act, idx, runs, data, on_step=stop_at_budget)
        except _BudgetSpent:  # the part of the shard trained so far counts pro rata
            sync()
            total = c.recipe["epochs"] * -(-len(data.x_train) // int(c.recipe["batch_size"]))
            done += len(idx) * steps["done"] / total
            print(f"  budget spent {steps['done']}/{total} steps into shard {group}-{act} x{len(idx)}", flush=True)
            break
        sync()
        done += len(idx)
        el = time.perf_counter() - t0
        print(f"  shard {group}-{act} x{len(idx)}: {st['train_seconds']:.1f}s, {done:.0f} runs in {el:.0f}s -> "
              f"{done / el:.1f} networks/s, projected {n_runs / (done / el) / 60:.1f} min for {n_runs}; test_acc median "
              f"{members[members.epoch == members.epoch.max()].test_acc.median():.3f}", flush=True)
    rate = done / (time.perf_counter() - t0)
    # one at a time: the same code with one member per batch, a few members
    one_times = []
    for i in range(4):
        hp = MemberHParams(**{f: [runs[i][f]] for f in FIELDS})
        t = time.perf_counter()
        train_batch(small_cnn.cnn_arch(c, "cnn"), hp, runs[i]["activation"], data, epochs=1, checkpoints=[1],
                    batch_size=c.recipe["batch_size"], eval_train_images=c.recipe["eval_train_images"], conv_impl=conv_impl)
        sync()
        one_times.append((time.perf_counter() - t) * c.recipe["epochs"])
    one_rate = 1 / (sum(one_times) / len(one_times))
    print(f"[cnn] batched {rate:.2f} networks/s; one at a time {one_rate:.3f} networks/s (1 epoch measured, x epochs); "
          f"speed-up {rate / one_rate:.0f}x; target 10,000 runs <= 10 min: "
          f"{'MET' if 10000 / rate <= 600 else 'NOT met'} ({10000 / rate / 60:.1f} min)", flush=True)
    return {"zoo": "small_cnn_mnist", "variant": variant, "conv_impl": conv_impl, "runs_trained": done,
            "networks_per_s": rate, "one_at_a_time_networks_per_s": one_rate, "minutes_for_10000": 10000 / rate / 60}


def bench_siren(device: torch.device, budget: float, n: int, variant: str = "full") -> dict:
    from wsbench.data import load_split

    c = card("siren_mnist", variant)
    steps, lr, per = int(c.recipe["steps"]), float(c.recipe["lr"]), int(c.recipe["images_per_shard"])
    x = load_split("mnist", "train_full", device=device, normalize=False, limit=n).x[:, 0]
    done, t0 = 0, time.perf_counter()
    for k in range(0, len(x), per):
        if time.perf_counter() - t0 > budget:
            break
        _, mse = siren_inr.fit_sirens(x[k:k + per], torch.arange(k, k + len(x[k:k + per]), device=device), steps=steps, lr=lr)
        sync()
        done += len(mse)
        el = time.perf_counter() - t0
        print(f"  {done} SIRENs in {el:.0f}s ({done / el:.0f} networks/s), PSNR mean {siren_inr.psnr(mse).mean():.1f} dB",
              flush=True)
    rate = done / (time.perf_counter() - t0)
    t = time.perf_counter()
    for i in range(4):
        siren_inr.fit_sirens(x[i:i + 1], torch.tensor([i], device=device), steps=steps, lr=lr)
    sync()
    one_rate = 4 / (time.perf_counter() - t)
    print(f"[siren] batched {rate:.1f} networks/s; one at a time {one_rate:.2f} networks/s; speed-up {rate / one_rate:.0f}x; "
          f"target 10,000 <= 10 min: {'MET' if 10000 / rate <= 600 else 'NOT met'} ({10000 / rate / 60:.2f} min)", flush=True)
    return {"zoo": "siren_mnist", "variant": variant, "steps": steps, "images_per_shard": per, "fitted": done,
            "networks_per_s": rate, "one_at_a_time_networks_per_s": one_rate, "minutes_for_10000": 10000 / rate / 60,
            "psnr_mean_db": float(siren_inr.psnr(mse).mean()) if done else None}


def nondeterminism(device: torch.device, variant: str = "full") -> None:
    c = card("small_cnn_mnist", variant)
    c.recipe = {**c.recipe, "runs": 64, "epochs": 1, "checkpoints": [1]}
    runs, shards = small_cnn.plan(c)
    group, act, idx = shards[0]
    out = {}
    for name, dev in (("gpu1", device), ("gpu2", device), ("cpu", torch.device("cpu"))):
        data, _ = small_cnn.load_image_data(c, dev)
        out[name] = small_cnn.train_shard(c, group, act, idx[:16], runs, data)
    for a, b in (("gpu1", "gpu2"), ("gpu1", "cpu")):
        dw = max((out[a][1][k] - out[b][1][k]).abs().max().item() for k in out[a][1])
        dm = (out[a][0]["test_acc"] - out[b][0]["test_acc"]).abs().max()
        print(f"[nondeterminism] {a} vs {b}: max |weight diff| {dw:.2e}, max |test_acc diff| {dm:.2e} "
              f"(16 runs, 1 epoch)", flush=True)


def build(names: list[str], variant: str, device: torch.device, budget: float, summaries_json: Path,
          runs: int | None = None) -> None:
    """Build each zoo (resumable) and collect their summaries in ONE JSON file (a lease returns at most
    8 files); `summaries` mode writes them into zoos/summaries/ here. `runs` replaces the variant's run count
    (dry runs: a tiny zoo with a test split large enough to rank)."""
    from wsbench.registry import ZOOS
    from wsbench.zoo import CARD_FILE, built_zoo_path, load_zoo
    from wsbench.zoo_builders import build_resolved
    from wsbench.zoo_summary import summarize_zoo

    collected: dict = json.loads(summaries_json.read_text()) if summaries_json.is_file() else {}
    t0 = time.perf_counter()
    for name in names:
        t = time.perf_counter()
        if (built_zoo_path(name, variant) / CARD_FILE).exists():
            zoo = load_zoo(built_zoo_path(name, variant))
            print(f"[build] {name} ({variant}) is built already at {zoo.root}")
        elif time.perf_counter() - t0 > budget:
            print(f"[build] budget spent; not starting {name} (run again to continue)")
            continue
        else:
            if runs is None:
                zoo = build_zoo(name, variant=variant, device=device, progress=sys.stderr.isatty())
            else:
                card = ZOOS.get(name).resolve(variant)
                card.recipe["runs"] = runs
                zoo = build_resolved(card, built_zoo_path(name, variant), device=device, progress=sys.stderr.isatty())
            st = zoo.card.recipe.get("build_stats", {})
            print(f"[build] {name}: {len(zoo.members)} members in {time.perf_counter() - t:.0f}s "
                  f"({st.get('networks_per_s')} networks/s)", flush=True)
        collected[f"{name}-{variant}"] = summarize_zoo(zoo)
        write_json(str(summaries_json), collected)


def write_summaries(summaries_json: Path, out_dir: Path) -> None:
    from wsbench.zoo_summary import write_summary_files

    for stem, summary in json.loads(summaries_json.read_text()).items():
        print(f"{stem}: {write_summary_files(summary, out_dir)[1]}")


def write_json(path: str | None, obj: dict) -> None:
    if path:
        write_atomic(path, json.dumps(obj, indent=1, default=str))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["bench", "build", "summaries"],
                   help="summaries: write the .json/.md files of a zoo_builds.json that came back (--from)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--budget", type=float, default=540, help="seconds per part (bench) / for starting zoos (build)")
    p.add_argument("--store", help="where built zoos go (sets WSBENCH_ZOO_DIR; keep it on the GPU machine's disk)")
    p.add_argument("--runs", type=int, help="bench: networks to train per target (default 10,000); build: runs "
                   "instead of the variant's (a dry run's tiny zoo)")
    p.add_argument("--conv-impl", default="grouped", choices=["grouped", "unfold"])
    p.add_argument("--zoos", nargs="+", default=ZOOS)
    p.add_argument("--variant", default="full")
    p.add_argument("--parts", nargs="+", default=["cnn", "siren", "nondeterminism"], help="bench parts to run")
    p.add_argument("--json", help="bench: write the figures here (after each part)")
    p.add_argument("--out", default=os.environ.get("OUT", "."), help="build: zoo_builds.json goes here")
    p.add_argument("--from", dest="source", help="summaries: the zoo_builds.json to write out")
    p.add_argument("--summaries", default=str(Path(__file__).resolve().parent.parent / "zoos" / "summaries"),
                   help="summaries: where the .json/.md files go")
    a = p.parse_args()
    if a.mode == "summaries":
        if not a.source or not Path(a.source).is_file():
            print("gpu_build_zoos summaries: --from must name a zoo_builds.json", file=sys.stderr)
            return 2
        write_summaries(Path(a.source), Path(a.summaries))
        return 0
    if a.store:
        os.environ["WSBENCH_ZOO_DIR"] = a.store
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device; use --device cpu for a (slow) CPU run", file=sys.stderr)
        return 2
    if not os.environ.get("WSBENCH_DATA_DIR"):
        print("gpu_build_zoos: set WSBENCH_DATA_DIR (on the device: $PWD/.device/data)", file=sys.stderr)
        return 2
    print(f"torch {torch.__version__}, device {device}, TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, "
          f"cudnn TF32 {torch.backends.cudnn.allow_tf32}", flush=True)
    if a.mode == "bench":
        figures: dict = {"device": device_label(device), "torch": torch.__version__}
        if "cnn" in a.parts:
            figures["cnn"] = bench_cnn(device, a.budget, a.runs or 10000, a.conv_impl, a.variant)
            write_json(a.json, figures)
        if "siren" in a.parts:
            figures["siren"] = bench_siren(device, a.budget, a.runs or 10000, a.variant)
            write_json(a.json, figures)
        if "nondeterminism" in a.parts:
            nondeterminism(device, a.variant)
        if "conv" in a.parts:
            for impl in ("grouped", "unfold"):
                bench_cnn(device, 60, 512, impl, a.variant)
    else:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        build(a.zoos, a.variant, device, a.budget, Path(a.out) / "zoo_builds.json", a.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
