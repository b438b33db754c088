#!/usr/bin/env python
"""One command for the GPU-relevant figures, written to one JSON summary.

    WSBENCH_DATA_DIR=../shared/data python scripts/gpu_bench.py [--out DIR] [--skip nern zoos encoders]

- encoders: training throughput (networks/s, forward + backward + AdamW step) of every registered
  encoder on batches of SIREN-INR-shaped and small-CNN-shaped random weight spaces;
- nern: scripts/gpu_bench_nern.py (iterations/s of the ResNet20 h180 paper step, time to the
  68.6k-iteration schedule, crossfilter ordering times for ResNet20/56);
- zoos: scripts/gpu_build_zoos.py bench (networks/s of batched small-CNN and SIREN training, speed-up
  over one network at a time).
The summary (`gpu_bench_summary.json`, in --out, default $OUT or .) names the device; on a
lease, scripts/gpu_session.py runs it (encoders) and its output comes back through $OUT.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def encoder_throughput(device: torch.device, batch: int = 256, steps: int = 10, out: dict | None = None,
                       on_result=lambda: None) -> dict:
    """networks/s of each encoder, filled into `out` one by one (`on_result` after each: partial results survive)."""
    from wsbench.methods.base import Encoder
    from wsbench.registry import METHODS
    from wsbench.archs import spec_for_arch
    from wsbench.weights import WeightSpace

    specs = {"siren": spec_for_arch("siren"), "small_cnn": spec_for_arch("small_cnn", in_channels=1)}
    out = {} if out is None else out
    for name in METHODS.names():
        cls = METHODS.get(name)
        if not (isinstance(cls, type) and issubclass(cls, Encoder)):
            continue
        for sname, spec in specs.items():
            key = f"{name}/{sname}"
            ok, why = cls.supports(spec)
            if not ok:
                out[key] = {"not_applicable": why}
                continue
            try:
                ws = WeightSpace(spec, {p.key: 0.1 * torch.randn(batch, *p.shape) for p in spec.params}).to(device)
                model = cls(spec, 10).to(device)
                opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
                y = torch.randint(0, 10, (batch,), device=device)
                for i in range(steps + 2):  # two warm-up steps
                    if i == 2:
                        sync(device)
                        t0 = time.perf_counter()
                    loss = torch.nn.functional.cross_entropy(model(ws), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                sync(device)
                dt = time.perf_counter() - t0
                out[key] = {"networks_per_s": batch * steps / dt, "batch": batch,
                            "params": sum(p.numel() for p in model.parameters())}
            except Exception as e:  # one failing encoder is recorded, not fatal
                out[key] = {"error": f"{type(e).__name__}: {e}"}
            print(f"{key:32s} {out[key]}", flush=True)
            on_result()
    return out


def run_script(args: list[str], out_json: Path, timeout: int) -> dict:
    """Run a sub-benchmark, its output streamed to ours; a timeout is recorded, with what it wrote so far."""
    t0 = time.perf_counter()
    try:
        rc: int | str = subprocess.run([sys.executable, *args], cwd=ROOT, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = "timed_out"
    result: dict = {"rc": rc, "wall_s": time.perf_counter() - t0}
    if out_json.exists():
        result["result"] = json.loads(out_json.read_text())
    return result


def write_summary(path: Path, summary: dict) -> None:
    from wsbench.files import write_atomic

    write_atomic(path, json.dumps(summary, indent=1, sort_keys=True, default=str))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--skip", nargs="*", default=[], choices=["nern", "zoos", "encoders"])
    ap.add_argument("--timeout", type=int, default=240, help="seconds per sub-benchmark")
    ap.add_argument("--batch", type=int, default=256, help="encoders: networks per step")
    ap.add_argument("--steps", type=int, default=10, help="encoders: timed steps")
    ap.add_argument("--device", default="auto", help="auto (cuda when present) | cpu | cuda")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gpu_bench_summary.json"
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    summary: dict = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
                     "torch": torch.__version__, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if "encoders" not in args.skip:
        summary["encoders"] = {}
        encoder_throughput(device, args.batch, args.steps, summary["encoders"], lambda: write_summary(path, summary))
    if "nern" not in args.skip:
        summary["nern"] = run_script(["scripts/gpu_bench_nern.py", "--out", str(out / "nern_gpu_bench.json")],
                                     out / "nern_gpu_bench.json", args.timeout)
        write_summary(path, summary)
    if "zoos" not in args.skip:
        # gpu_build_zoos prints its figures (networks/s, speed-up, non-determinism): kept as stdout_tail
        summary["zoos"] = run_script(["scripts/gpu_build_zoos.py", "bench", "--device", device.type, "--budget", "60",
                                      "--json", str(out / "zoo_gpu_bench.json")],
                                     out / "zoo_gpu_bench.json", args.timeout)
    write_summary(path, summary)
    print(f"summary written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
