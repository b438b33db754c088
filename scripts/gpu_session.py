#!/usr/bin/env python
"""The one command for a GPU lease: work to a time budget, write every result into $OUT as it goes.

Prepare here (packs the data into the carried, git-ignored .device/; about 42 MB):

    ../shared/tools/device-pack.sh --data pretrained cifar10-jpeg cifar10-exact-subset/test.parquet mnist
    git rev-parse HEAD > .device/commit

then call the device with carry [".device"], timeout_s=595 and the command

    bash scripts/gpu_session.sh

Parts, in priority order, each a child process with its own time cap (a part that overruns is
killed, its partial output kept, and the session goes on):
  env            device, versions, packages present, GEMM rate
  nern_paper     NeRN ResNet20 h180 paper preset, one member; checkpoints every 1,000 iterations
                 into $OUT/runs, so the next lease resumes it (carry the returned folder as --resume)
  nern_speed     NeRN it/s per speed variant (eager, bf16, compiled) for ResNet20 and ResNet56
  siren_speed    zoo-building speed: SIRENs of MNIST images fitted batched (networks/s)
  encoders       encoder training throughput (networks/s)
Opt-in parts, run only when --only names them (issue 17's lease, instead of the parts above):
  zoo86_build    small_cnn_cifar10_gray medium_86 (1,536 runs x the published 86 epochs) built on the
                 device's disk (zoo_store/, git-ignored; a second call on the warm machine continues an
                 unfinished build shard by shard); its summary into $OUT/zoo_builds.json
  zoo86_<method> property prediction on it, 3 seeds (statnn, nfn_hnp, neural_graph, dwsnet, sne, mlp):
                 records into $OUT/records/property_prediction.jsonl; the weights stay on the device
  e.g. bash scripts/gpu_session.sh --budget 555 --only zoo86_build zoo86_statnn zoo86_nfn_hnp zoo86_neural_graph
  zoo86_dwsnet zoo86_sne zoo86_mlp; back here `python scripts/gpu_build_zoos.py summaries --from
  <returned>/zoo_builds.json` and `python run_bench.py merge-records <returned>/records`.
$OUT receives at most 8 files, at most two folders deep: session.log, session_summary.json
(rewritten after each part), nern_speed.json, zoo_speed.json, gpu_bench_summary.json,
records/reconstruction.jsonl, runs/<run key>/nern_ckpt.<member>.{safetensors,json}.
Back here: `python run_bench.py merge-records <returned folder>/records`.

--dry-run runs the same parts on the CPU at tiny sizes (the test suite does), writing the same files.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the device's copy of the tree is not installed

from wsbench.files import write_atomic  # noqa: E402  (stdlib only: no torch in this process)
COMMITTED_RESUME = ROOT / "leaderboards" / "gpu" / "resume"  # checkpoints an earlier lease left to continue
COMMITTED_RECORDS = ROOT / "leaderboards" / "results" / "reconstruction.jsonl"
MAX_FILES, MAX_DEPTH = 8, 2


@dataclass
class Part:
    name: str
    args: list[str]  # a python script and its arguments, run from the repository root
    cap_s: float  # at most this long; the paper run gets what the later parts do not need
    reserve_after_s: float = 0.0  # keep this much of the budget for the parts after it
    opt_in: bool = False  # runs only when --only names it
    env: dict[str, str] = field(default_factory=dict)  # set for this part's process


DRY_RUN_CAP_FACTOR = 10  # the CPU dry run checks the commands, not their speed: the device caps x 10, within
# --budget (on a busy 2-core CPU the dry encoders part took over 100 s; the device's cap is 40 s)


def parts(out: Path, dry: bool) -> list[Part]:
    """The session's parts; `dry` = the same commands at tiny sizes on the CPU."""
    dev = ["--device", "cpu"] if dry else ["--device", "cuda"]
    paper_sets = (["iterations=4", "eval_every=2", "checkpoint_every=2", "prune_sparsities=[0.0]", "val_limit=64",
                   "task.eval_limit=256"] if dry else ["checkpoint_every=1000"])
    nern_paper = ["run_bench.py", "--method", "nern", "--zoo", "cifar10_resnet", "--member", "resnet20_pretrained",
                  "--preset", "paper_resnet20_h180", *dev, "--results-dir", str(out / "records"),
                  "--runs-dir", str(out / "runs")]
    if dry:  # the zoo's tiny variant and 256 test images: building the full one scores 10,000 images 12 times (~1 min)
        nern_paper += ["--zoo-variant", "tiny"]
    for s in paper_sets:
        nern_paper += ["--set", s]
    speed = ["scripts/gpu_bench_nern.py", "--random-images", "--out", str(out / "nern_speed.json")]
    speed += (["--depths", "20", "--variants", "default", "--steps", "2", "--warmup", "1", "--skip-ordering"] if dry
              else ["--depths", "20", "56", "--variants", "default", "compile", "compile-cudagraphs", "--steps", "200",
                  "--warmup", "20"])
    siren = ["scripts/gpu_build_zoos.py", "bench", "--parts", "siren", "--json", str(out / "zoo_speed.json"), *dev]
    siren += ["--variant", "tiny", "--runs", "8", "--budget", "5"] if dry else ["--runs", "4000", "--budget", "40"]
    enc = ["scripts/gpu_bench.py", "--skip", "nern", "zoos", "--out", str(out)]
    enc += ["--batch", "4", "--steps", "1", "--device", "cpu"] if dry else ["--batch", "256", "--steps", "10"]
    slack = DRY_RUN_CAP_FACTOR if dry else 1
    # device caps of the parts after the paper run (encoders: the H200 took 23.4 s for 9 on 2026-11-30; DeepSets since)
    after = {"nern_speed": (speed, 110), "siren_speed": (siren, 55), "encoders": (enc, 40)}
    return [Part("env", ["scripts/gpu_session.py", "--env-report", str(out / "env.json")], 60 * slack),
            Part("nern_paper", nern_paper, 10_000, reserve_after_s=sum(cap for _, cap in after.values())),
            *(Part(name, args, cap * slack) for name, (args, cap) in after.items()),
            *zoo86_parts(out, dry)]


# the zoo86 parts' methods and device caps (s) for their 3 seeds; the build keeps the first three's time
ZOO86_METHODS = {"statnn": 60, "nfn_hnp": 120, "neural_graph": 120, "dwsnet": 90, "sne": 90, "mlp": 30}
ZOO86_BENCHMARK = "property_prediction-small_cnn_cifar10_gray-medium_86"


def zoo86_parts(out: Path, dry: bool) -> list[Part]:
    """Opt-in (--only zoo86_build zoo86_statnn ...): build small_cnn_cifar10_gray medium_86 (the published 86
    epochs) on the device's disk and score property prediction on it there; the records and the zoo's summary
    come back, the weights (about 275 MB) do not. The dry run builds the tiny variant and trains 1 epoch."""
    dev = ["--device", "cpu"] if dry else ["--device", "cuda"]
    # not under .device: a second call on the warm machine carries .device again (replacing it) and continues the build
    env = {"WSBENCH_ZOO_DIR": str(out.parent / f"{out.name}_zoos" if dry else ROOT / "zoo_store")}
    variant = "tiny" if dry else "medium_86"
    build = ["scripts/gpu_build_zoos.py", "build", "--zoos", "small_cnn_cifar10_gray", "--variant", variant,
             "--budget", "100000", "--out", str(out), *dev, *(["--runs", "40"] if dry else [])]
    scored = (["--task", "property_prediction", "--zoo", "small_cnn_cifar10_gray", "--zoo-variant", "tiny",
               "--set", "task.checkpoint=final", "--set", "task.epochs=1", "--seeds", "0"] if dry
              else ["--benchmark", ZOO86_BENCHMARK, "--seeds", "0", "1", "2"])
    slack = DRY_RUN_CAP_FACTOR if dry else 1
    first = sum(list(ZOO86_METHODS.values())[:3])
    return [Part("zoo86_build", build, 10_000, reserve_after_s=first, opt_in=True, env=env),
            *(Part(f"zoo86_{m}", ["run_bench.py", "--quiet", "--method", m, "--preset", "small_cnn_zoo", *scored, *dev,
                                  "--results-dir", str(out / "records")], cap * slack, opt_in=True, env=env)
              for m, cap in ZOO86_METHODS.items())]


def env_report(path: Path) -> None:
    """Device, versions, which optional packages import, and a GEMM rate (written to `path`)."""
    import torch

    rep: dict = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
                 "cuda": torch.cuda.is_available(), "threads": torch.get_num_threads(),
                 "packages": {m: _imports(m)
                              for m in ("datasets", "huggingface_hub", "pyarrow", "torch_geometric", "einops", "yaml")}}
    dev = torch.device("cuda" if rep["cuda"] else "cpu")
    if rep["cuda"]:
        p = torch.cuda.get_device_properties(0)
        rep.update(device=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                   multiprocessors=p.multi_processor_count)
    n = 8192 if rep["cuda"] else 256  # CPU (dry run): bf16 GEMMs run at ~1 GFLOP/s there, 13 of 512^2 took 2.7 s
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(n, n, device=dev, dtype=dtype)
        for i in range(13):
            if i == 3:
                _sync(dev)
                t0 = time.perf_counter()
            a @ a
        _sync(dev)
        rep[f"gemm_{str(dtype).split('.')[-1]}_tflops"] = 2 * n**3 * 10 / (time.perf_counter() - t0) / 1e12
    path.write_text(json.dumps(rep, indent=1))
    print(json.dumps(rep), flush=True)


def _imports(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:  # noqa: BLE001 - absent or broken: either way not usable
        return False


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def run_part(part: Part, timeout: float, log, env: dict[str, str]) -> dict:
    """Run one part as a child process (its own process group), output appended to the log."""
    log.write(f"\n===== {time.strftime('%H:%M:%S')} {part.name}: {' '.join(part.args)} (cap {timeout:.0f} s)\n")
    log.flush()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *part.args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    try:
        rc: int | str = proc.wait(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        rc = "timed_out"
    wall = time.perf_counter() - t0
    log.write(f"===== {time.strftime('%H:%M:%S')} {part.name}: rc {rc} after {wall:.1f} s\n")
    log.flush()
    return {"rc": rc, "wall_s": round(wall, 1), "cap_s": round(timeout, 1)}


def out_problems(out: Path) -> list[str]:
    """What would not come back from $OUT: too many files, too deep, odd names."""
    files = [p for p in out.rglob("*") if p.is_file()]
    bad = [f"{len(files)} files (at most {MAX_FILES})"] if len(files) > MAX_FILES else []
    for p in files:
        rel = p.relative_to(out)
        if len(rel.parts) - 1 > MAX_DEPTH:
            bad.append(f"{rel}: more than {MAX_DEPTH} folders down")
        if not all(c.isalnum() or c in "._-" for part in rel.parts for c in part):
            bad.append(f"{rel}: a name with characters other than letters, digits, '.', '_', '-'")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT"), help="where results go (default $OUT)")
    ap.add_argument("--budget", type=float, default=560, help="seconds for the whole session")
    ap.add_argument("--resume", help="a folder a previous session returned: its runs/ (checkpoints) are continued "
                    "(default: leaderboards/gpu/resume when it holds any)")
    ap.add_argument("--only", nargs="+", help="run only these parts")
    ap.add_argument("--dry-run", action="store_true", help="the same parts on the CPU at tiny sizes")
    ap.add_argument("--env-report", metavar="PATH", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.env_report:
        env_report(Path(a.env_report))
        return 0
    if not a.out:
        print("gpu_session: give --out or set OUT", file=sys.stderr)
        return 2
    if not os.environ.get("WSBENCH_DATA_DIR"):
        print("gpu_session: set WSBENCH_DATA_DIR (on the device: $PWD/.device/data)", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    committed = COMMITTED_RESUME if (COMMITTED_RESUME / "runs").is_dir() and not a.dry_run else None
    resume = Path(a.resume) if a.resume else committed
    if resume is not None:
        if not (resume / "runs").is_dir():
            print(f"gpu_session: {resume / 'runs'} does not exist (nothing to resume)", file=sys.stderr)
            return 2
        shutil.copytree(resume / "runs", out / "runs", dirs_exist_ok=True)
    if COMMITTED_RECORDS.is_file() and not a.dry_run:  # runs recorded already are then skipped, not redone
        (out / "records").mkdir(exist_ok=True)
        shutil.copyfile(COMMITTED_RECORDS, out / "records" / COMMITTED_RECORDS.name)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    commit_file = ROOT / ".device" / "commit"
    if commit_file.is_file():  # the device's copy of the tree has no .git
        env.setdefault("WSBENCH_GIT_COMMIT", commit_file.read_text().strip())
    summary: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "budget_s": a.budget,
                     "dry_run": a.dry_run, "resumed_from": str(resume) if resume else None, "parts": {}}
    plan = [p for p in parts(out, a.dry_run) if (p.name in a.only if a.only else not p.opt_in)]
    with open(out / "session.log", "a", buffering=1) as log:
        for i, part in enumerate(plan):
            left = a.budget - (time.perf_counter() - t_start)
            reserve = sum(p.cap_s for p in plan[i + 1:]) if part.reserve_after_s else 0.0
            cap = min(part.cap_s, left - min(reserve, part.reserve_after_s))
            if cap < 5:
                summary["parts"][part.name] = {"rc": "skipped", "why": f"{left:.0f} s of the budget left"}
            else:
                summary["parts"][part.name] = run_part(part, cap, log, {**env, **part.env})
            env_json = out / "env.json"
            if env_json.is_file():  # folded into the summary: one file fewer to come back
                summary["env"] = json.loads(env_json.read_text())
                env_json.unlink()
            summary["elapsed_s"] = round(time.perf_counter() - t_start, 1)
            summary["out_problems"] = out_problems(out)
            write_atomic(out / "session_summary.json", json.dumps(summary, indent=1, default=str))
            print(f"[session] {part.name}: {summary['parts'][part.name]}", flush=True)
    for problem in summary["out_problems"]:
        print(f"[session] WARNING: {problem}", flush=True)
    failed = [n for n, r in summary["parts"].items() if r["rc"] not in (0, "timed_out", "skipped")]
    return 1 if failed and a.dry_run else 0


if __name__ == "__main__":
    raise SystemExit(main())
