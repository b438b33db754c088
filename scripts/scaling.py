"""How zoo time and memory grow with zoo size and network size; writes leaderboards/scaling.{md,json}.

    python scripts/scaling.py                       # 1k/10k/100k small CNNs + network-size sweep
    python scripts/scaling.py --sizes 1000 --quick  # smoke run

Every point runs in a fresh child process (peak RSS is that process's alone; the peak is reset
between phases through /proc/self/clear_refs). A point: random members of one architecture,
written with `write_zoo` to a temporary folder, then timed: write (incl. its verifying reload),
`load_zoo` with and without the sha256 check, `zoo.weights(split="train")` (80% of the members),
`zoo.weights(<1,000 ids>)`, `WeightSpace.flat()`, and a memory-mapped reference (np.memmap of
the safetensors data at its header offsets, rows gathered). On CUDA it also moves the train
split to the GPU and runs the first 1,024 networks forward (`batched_forward`), with peak GPU
memory. The summary fits time and memory linearly in the member count and says how many members
of each architecture fit in one GPU's memory.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from wsbench.metrics import linear_fit  # noqa: E402

SMALL_CNN = {"in_channels": 1, "num_classes": 10, "channels": 16, "n_conv": 3}
GPUS_GIB = {"H100 80GB": 80, "H200 141GB": 141}


# ----------------------------------------------------------------------------- child: one measurement

def _rss_mib(field: str = "VmHWM") -> float:
    return int(Path("/proc/self/status").read_text().split(f"{field}:")[1].split()[0]) / 1024


def _timed(fn, *args, **kwargs):
    """fn(*args, **kwargs) -> (result, seconds, extra peak RSS in MiB above the RSS at the start)."""
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    start = _rss_mib("VmRSS")
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t, _rss_mib() - start


def _mmap_rows(path: Path, rows) -> dict:
    """Reference loader: memory-map each stacked tensor at its header offsets and gather rows."""
    import numpy as np
    import torch

    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        start, end = info["data_offsets"]
        arr = np.memmap(path, dtype=np.float32, mode="r", offset=8 + n + start, shape=tuple(info["shape"]))
        out[key] = torch.from_numpy(np.ascontiguousarray(arr[rows]))
    return out


def measure(n: int, arch: str, kwargs: dict, workdir: Path, device: str) -> dict:
    import pandas as pd
    import torch

    from wsbench.archs import spec_for_arch
    from wsbench.weights import batched_forward
    from wsbench.zoo import load_zoo, write_zoo
    from wsbench.zoo_card import ZooCard

    spec = spec_for_arch(arch, **kwargs)
    res: dict = {"n": n, "arch": arch, "kwargs": kwargs, "params_per_member": spec.n_params,
                 "bytes_per_member": 4 * sum(int(torch.Size(p.shape).numel()) for p in spec.params),
                 "rss_base_mib": _rss_mib("VmRSS")}
    card = ZooCard.from_dict({"name": "scaling", "version": "1", "description": "scaling run", "kind": "cnn",
                              "dataset": "mnist", "archs": {"g": {"arch": arch, "kwargs": kwargs}},
                              "builder": "none", "variants": {"tiny": {}}})
    g = torch.Generator().manual_seed(0)
    weights = {"g": {p.key: torch.randn((n, *p.shape), generator=g).mul_(0.1) for p in spec.params}}
    split = ["train"] * 8 + ["val", "test"]
    members = pd.DataFrame({"id": [f"m{i:07d}" for i in range(n)], "split": (split * (n // 10 + 1))[:n],
                            "group": "g", "row": range(n), "test_acc": 0.5})
    root = workdir / f"zoo_{arch}_{n}"
    _, res["write_s"], res["write_peak_mib"] = _timed(write_zoo, root, card, members, weights)
    del weights
    res["files_mib"] = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20
    zoo, res["load_s"], res["load_peak_mib"] = _timed(load_zoo, root)
    del zoo
    zoo, res["load_noverify_s"], _ = _timed(load_zoo, root, verify=False)
    ws, res["split_s"], res["split_peak_mib"] = _timed(zoo.weights, split="train")
    res["split_members"] = len(ws)
    ids = list(zoo.members["id"].iloc[:: max(1, n // 1000)][:1000])
    _, res["ids1000_s"], _ = _timed(zoo.weights, ids)
    _, res["flat_s"], _ = _timed(ws.flat)
    rows = zoo.members.index[zoo.members["split"] == "train"].to_numpy()
    del zoo
    ref, res["mmap_split_s"], res["mmap_split_peak_mib"] = _timed(_mmap_rows, root / "weights" / "g.safetensors", rows)
    assert all(torch.equal(ref[k], ws.tensors[k]) for k in ref), "mmap reference disagrees with Zoo.weights"
    del ref
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        t = time.perf_counter()
        wsg = ws.to(device)
        torch.cuda.synchronize()
        res["to_gpu_s"] = time.perf_counter() - t
        res["gpu_resident_mib"] = torch.cuda.max_memory_allocated() / 2**20
        from wsbench.archs import build_arch

        model = build_arch(arch, **kwargs).to(device).eval()
        k = min(1024, len(wsg))
        x = torch.randn(256, kwargs.get("in_channels", 3), 28 if arch == "small_cnn" else 32,
                        28 if arch == "small_cnn" else 32, device=device)
        sub = wsg[:k]
        with torch.no_grad():
            batched_forward(model, sub, x, chunk_size=256)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            batched_forward(model, sub, x, chunk_size=256)
            torch.cuda.synchronize()
        res["gpu_forward_s"], res["gpu_forward_nets"] = time.perf_counter() - t, k
        res["gpu_forward_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        res["gpu_name"] = torch.cuda.get_device_name()
    shutil.rmtree(root)
    return res


# ----------------------------------------------------------------------------- parent: sweep, fit, report

def run_point(n: int, arch: str, kwargs: dict, workdir: Path, device: str, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--_child", json.dumps({"n": n, "arch": arch, "kwargs": kwargs,
                                                             "workdir": str(workdir), "device": device})]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return {"n": n, "arch": arch, "kwargs": kwargs, "error": r.stderr.strip().splitlines()[-1:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _label(p: dict) -> str:
    kw = p["kwargs"]
    return p["arch"] + (f" (channels {kw['channels']})" if "channels" in kw else
                        f" (depth {kw['depth']})" if "depth" in kw else "")


def _row(p: dict, cols: list[tuple[str, str]]) -> str:
    p = {**p, "arch": _label(p)}
    if "error" in p:
        return f"| {p['arch']} | {p['n']:,} | failed: {p['error']} |"
    return "| " + " | ".join(fmt.format(p.get(key, float("nan"))) if key in p else "-" for key, fmt in cols) + " |"


COLS = [("arch", "{}"), ("n", "{:,}"), ("params_per_member", "{:,}"), ("files_mib", "{:.1f}"), ("write_s", "{:.2f}"),
        ("load_s", "{:.2f}"), ("load_noverify_s", "{:.2f}"), ("load_peak_mib", "{:.0f}"), ("split_s", "{:.3f}"),
        ("mmap_split_s", "{:.3f}"), ("split_peak_mib", "{:.0f}"), ("mmap_split_peak_mib", "{:.0f}"),
        ("ids1000_s", "{:.3f}"), ("flat_s", "{:.3f}")]
GPU_COLS = [("arch", "{}"), ("n", "{:,}"), ("to_gpu_s", "{:.3f}"), ("gpu_resident_mib", "{:.0f}"),
            ("gpu_forward_nets", "{:,}"), ("gpu_forward_s", "{:.3f}"), ("gpu_forward_peak_mib", "{:.0f}")]
HEAD = ("| arch | members | params/member | files MiB | write s | load s | load s (no sha256) | load +RSS MiB | "
        "train split s | mmap ref. s | split +RSS MiB | mmap ref. +RSS MiB | 1,000 ids s | flat s |")


def report(data: dict) -> str:
    size, net = data["size_sweep"], data["network_sweep"]
    ok = [p for p in size if "error" not in p]
    lines = [
        "# Scaling of the zoo format (time and memory vs zoo size and network size)", "",
        f"Generated by `python scripts/scaling.py` on {data['machine']} ({data['device']}), torch "
        f"{data['torch']}, {data['threads']} torch thread(s), {data['date']}. Random float32 members written with "
        "`write_zoo`; every point in a fresh process (peak RSS per phase via /proc/self/clear_refs).", "",
        "Columns: *load* = `load_zoo` (card, members table, sha256 of every file, stacked tensors opened: "
        "safetensors maps the file, so pages are read when first touched); *+RSS* = peak resident memory of the "
        "phase above the memory at its start; *train split* = `zoo.weights(split='train')` (80% of the members, NaN check included); *mmap ref.* = "
        "the simple reference: `np.memmap` of the safetensors data, the same rows gathered; *1,000 ids* = "
        "`zoo.weights([1,000 member ids])`.", "",
        "## Zoo size (small CNN, 4,970 parameters)", "", HEAD, "|" + "---|" * len(COLS),
        *[_row(p, COLS) for p in size], ""]
    if len(ok) >= 2:
        xs = [p["n"] for p in ok]
        fits = {k: linear_fit(xs, [p[k] for p in ok]) for k in ("load_s", "split_s", "load_peak_mib", "split_peak_mib")}
        per = ok[-1]["bytes_per_member"] / 2**10
        lines += ["Linear fits over these points (intercept + slope x members):", "",
                  f"- load: {fits['load_s'][0]:.3f} s + {fits['load_s'][1] * 1e6:.1f} s per million members "
                  f"(mostly sha256); +RSS {fits['load_peak_mib'][0]:.0f} MiB + {fits['load_peak_mib'][1] * 1024:.2f} "
                  f"KiB per member (the data is {per:.1f} KiB per member)",
                  f"- train split: {fits['split_s'][0]:.3f} s + {fits['split_s'][1] * 1e6:.1f} s per million "
                  f"members; +RSS {fits['split_peak_mib'][1] * 1024:.1f} KiB per member "
                  f"({fits['split_peak_mib'][1] * 1024 / per:.2f}x the data of a member: the mapped pages it reads "
                  "plus the copy)", ""]
    lines += ["## Network size (1,000 members unless noted)", "", HEAD, "|" + "---|" * len(COLS),
              *[_row(p, COLS) for p in net], ""]
    both = [p for p in size + net if "error" not in p]
    if both:
        ratios = [p["split_s"] / p["mmap_split_s"] for p in both]
        ids_s = [p["ids1000_s"] for p in both]
        lines += ["Observations from these numbers:", "",
                  f"- `zoo.weights(split=...)` takes {min(ratios):.1f}-{max(ratios):.1f}x the time of the mmap "
                  "reference; most of the difference is the NaN/Inf check (`torch.isfinite(t).all()` per tensor).",
                  f"- `zoo.weights(<1,000 ids>)` takes {min(ids_s):.1f}-{max(ids_s):.1f} s, at least "
                  f"{min(ids_s):.1f} s even for the smallest networks: it looks members up one by one (a scan of "
                  "the table each) and concatenates 1,000 one-row frames.",
                  "- The sha256 check is most of `load_zoo` on big zoos (compare the two load columns).", ""]
    gpu = [p for p in size + net if "gpu_name" in p]
    if not gpu:
        lines += ["No CUDA device on this machine: the GPU columns (transfer, resident memory, batched forward) are "
                  "filled when the script runs where `torch.cuda.is_available()`.", ""]
    if gpu:
        lines += [f"## GPU ({gpu[0]['gpu_name']})", "", "| arch | members | to GPU s | resident MiB | forward nets | "
                  "forward s (256 images) | forward peak MiB |", "|" + "---|" * len(GPU_COLS),
                  *[_row(p, GPU_COLS) for p in gpu], ""]
    lines += ["## Where it stops fitting one GPU", "",
              "Whole zoo resident on the GPU as float32 (what an encoder epoch over the full zoo without host "
              "transfers needs), after 4 GiB reserved for the model, activations and the CUDA context:", "",
              "| arch | params/member | MiB per 1k members | " + " | ".join(f"max members, {g}" for g in GPUS_GIB) + " |",
              "|---|---|---|" + "---|" * len(GPUS_GIB)]
    seen = set()
    for p in [q for q in size + net if "error" not in q]:
        key = (p["arch"], json.dumps(p["kwargs"], sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        b = p["bytes_per_member"]
        fits_n = [f"{int((gib - 4) * 2**30 / b):,}" for gib in GPUS_GIB.values()]
        lines.append(f"| {_label(p)} | {p['params_per_member']:,} | {b * 1000 / 2**20:.1f} | " + " | ".join(fits_n) + " |")
    lines += ["", "Host RAM: opening a zoo costs almost nothing (the weight file is memory-mapped); a split "
              "reads its rows from the page cache and holds a private copy, so what must fit in RAM is the split "
              "(plus page cache for the mapped file), not the zoo.", ""]
    return "\n".join(lines)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--quick", action="store_true", help="small network sweep (smoke test)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in each child (1: stable on shared CPUs)")
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", default=str(REPO / "leaderboards"), help="writes scaling.md and scaling.json here")
    ap.add_argument("--from-json", help="re-render scaling.md from an earlier scaling.json (no measuring)")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        spec = json.loads(args._child)
        print(json.dumps(measure(spec["n"], spec["arch"], spec["kwargs"], Path(spec["workdir"]), spec["device"])))
        return 0
    if args.from_json:
        data = json.loads(Path(args.from_json).read_text())
        _atomic_write(Path(args.out) / "scaling.md", report(data))
        return 0
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    work = Path(args.workdir or tempfile.mkdtemp(prefix="wsbench-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    data = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs)", "device": device, "torch": torch.__version__,
            "threads": args.threads, "date": time.strftime("%Y-%m-%d %H:%M"), "size_sweep": [], "network_sweep": []}
    try:
        for n in args.sizes:
            print(f"zoo size {n:,} ...", file=sys.stderr, flush=True)
            data["size_sweep"].append(run_point(n, "small_cnn", SMALL_CNN, work, device, args.threads))
        nets = [("small_cnn", {**SMALL_CNN, "channels": c}, 1000) for c in ((8, 32) if args.quick else (8, 32, 64, 128))]
        nets += [] if args.quick else [("resnet_cifar", {"depth": 20}, 1000), ("resnet_cifar", {"depth": 56}, 300)]
        for arch, kwargs, n in nets:
            print(f"network {arch} {kwargs} x {n:,} ...", file=sys.stderr, flush=True)
            data["network_sweep"].append(run_point(n, arch, kwargs, work, device, args.threads))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    _atomic_write(out / "scaling.json", json.dumps(data, indent=1) + "\n")
    _atomic_write(out / "scaling.md", report(data))
    print(f"wrote {out / 'scaling.md'} and {out / 'scaling.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
