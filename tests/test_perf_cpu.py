"""scripts/perf_cpu.py: each path in its own process, fractions of the GEMM rate of the same run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from data_paths import DATA_DIR
from script_loader import load_script

ROOT = Path(__file__).resolve().parents[1]


def test_perf_script_writes_fractions_of_the_gemm_rate(tmp_path):
    env = dict(os.environ, WSBENCH_DATA_DIR=str(DATA_DIR))
    out = tmp_path / "perf" / "cpu"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "perf_cpu.py"), "--paths", "gemm", "nern_rec_step", "statnn_step",
                           "--quick-gemm", "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.with_suffix(".json").read_text())
    gemm, nern = res["paths"]["gemm"], res["paths"]["nern_rec_step"]
    assert gemm["flops_per_step"] == 2 * 2048 ** 3 and gemm["gflops"] > 0
    before, after = nern["gemm_gflops_around"]  # the GEMM rate just before and after the path, in its process
    assert before > 0 and after > 0 and nern["flops_per_step"] > 0
    assert 0 < nern["fraction_of_gemm"] == nern["gflops"] / ((before + after) / 2)
    assert nern["fraction_of_first_gemm"] == nern["gflops"] / gemm["gflops"]
    assert nern["peak_rss_mb"] > 0
    stat = res["paths"]["statnn_step"]  # an encoder path: its FLOP-carrying calls replayed alone bound it
    assert stat["flops_per_step"] > 0 and 0 < stat["bound"]["seconds_per_step"] < stat["seconds_per_step"]
    assert stat["top_ops"] and all(0 < o["share"] <= 1 for o in stat["top_ops"])
    assert 0 < stat["fixed"]["seconds_per_step"]  # the same step on 2 networks: its batch-independent cost
    md = out.with_suffix(".md").read_text()
    assert "fp32 GEMM rate measured at the start of the run" in md and "nern_rec_step" in md
    assert res["command"].endswith("--quick-gemm --out " + str(out))  # the report says how few GEMMs it timed
    assert "What bounds statnn_step: its" in md and "Where statnn_step's time goes" in md
    assert "statnn_step: the same step on 2 networks" in md and "of the batch-64 step." in md


def test_update_puts_a_later_runs_paths_into_an_earlier_report(tmp_path, monkeypatch):
    """--update: the paths measured now replace the report's rows of the same name, each marked with this run's
    date, command and first GEMM rate; the other rows, the heading and the report's command stay (the measuring
    child processes are stubbed here: the test above runs real ones)."""
    perf = load_script("perf_cpu")
    def path(gflops: float) -> dict:
        return {"what": "w", "flops_per_step": 1e9, "seconds_per_step": 1 / gflops, "gflops": gflops,
                "peak_rss_mb": 500.0, "gemm_gflops_around": [90.0, 110.0]}
    earlier = {"machine": "x86_64 CPU, 2 cores", "command": "python scripts/perf_cpu.py --out cpu", "date": "2026-12-01",
               "torch": "2.x", "threads": 2, "title": "a full run",
               "paths": {"gemm": {"what": "torch.mm", "gflops": 100.0, "fraction_of_gemm": 1.0, "peak_rss_mb": 1.0,
                                  "flops_per_step": 1, "seconds_per_step": 1.0},
                         "mlp_step": {**path(5.0), "fraction_of_gemm": 0.05, "fraction_of_first_gemm": 0.05},
                         "statnn_step": {**path(6.0), "fraction_of_gemm": 0.06, "fraction_of_first_gemm": 0.06}}}
    report = tmp_path / "cpu.json"
    report.write_text(json.dumps(earlier))
    measured = {"gemm": {"what": "torch.mm", "gflops": 80.0, "peak_rss_mb": 1.0, "flops_per_step": 1,
                         "seconds_per_step": 1.0}, "statnn_step": path(8.0)}

    def child(args, **kwargs):  # noqa: ANN001, ANN003, ANN202
        return subprocess.CompletedProcess(args, 0, stdout=json.dumps(measured[args[args.index("--one") + 1]]),
                                           stderr="")

    monkeypatch.setattr(perf.subprocess, "run", child)
    monkeypatch.setenv("WSBENCH_DATA_DIR", str(DATA_DIR))
    monkeypatch.setattr(sys, "argv", ["perf_cpu.py", "--paths", "statnn_step", "--update", str(report)])
    assert perf.main() == 0
    res = json.loads(report.read_text())
    assert res["paths"]["mlp_step"] == earlier["paths"]["mlp_step"] and res["paths"]["gemm"] == earlier["paths"]["gemm"]
    assert (res["command"], res["date"], res["title"]) == (earlier["command"], earlier["date"], earlier["title"])
    statnn = res["paths"]["statnn_step"]
    assert statnn["gflops"] == 8.0 and statnn["fraction_of_gemm"] == 8.0 / 100.0 and statnn["fraction_of_first_gemm"] == 0.1
    assert statnn["rerun"]["first_gemm_gflops"] == 80.0 and statnn["rerun"]["command"].endswith("--update " + str(report))
    md = (tmp_path / "cpu.md").read_text()
    assert md.startswith("# CPU efficiency, a full run: ") and "| mlp_step: w | 5.00 |" in md
    assert "| statnn_step (rerun " in md and "| 8.0% |" in md.split("statnn_step (rerun")[1].splitlines()[0]
    assert "by `python scripts/perf_cpu.py --paths statnn_step --update " in md and "80.0 GFLOP/s" in md


def test_markdown_states_the_same_run_reference_and_the_measured_bound():
    perf = load_script("perf_cpu")
    res = {"machine": "x86_64 CPU, 2 cores", "command": "python scripts/perf_cpu.py", "date": "2026-12-01",
           "torch": "2.x", "threads": 2, "paths": {
               "gemm": {"gflops": 300.0},
               "siren_fit": {"what": "SIRENs", "gflops": 30.0, "fraction_of_gemm": 0.2, "seconds_per_step": 0.05,
                             "gemm_gflops_around": [160.0, 140.0],
                             "flops_per_step": 1.5e9, "peak_rss_mb": 100.0,
                             "reference": {"what": "autograd", "seconds_per_step": 0.1, "speedup": 2.0},
                             "bound": {"what": "sin and cos", "seconds_per_step": 0.025}},
               "small_cnn_train": {"what": "CNNs", "gflops": 20.0, "fraction_of_gemm": 0.07, "seconds_per_step": 1.0,
                                   "flops_per_step": 2e10, "peak_rss_mb": 1800.0, "references": [
                                       {"what": "eager masks", "seconds_per_step": 2.5, "speedup": 2.5},
                                       {"what": "one pass", "seconds_per_step": 1.3, "speedup": 1.3}]},
               "mlp_step": {"what": "MLP", "gflops": 5.0, "fraction_of_gemm": 0.02, "seconds_per_step": 0.002,
                            "flops_per_step": 1e7, "peak_rss_mb": 800.0,
                            "fixed": {"what": "2 networks", "seconds_per_step": 0.0015}}}}
    md = perf.markdown(res)
    assert "siren_fit: 2.00x the speed of autograd (100.0 ms/step, measured in the same process)" in md
    assert "small_cnn_train: 2.50x the speed of eager masks (2500.0 ms/step" in md
    assert "small_cnn_train: 1.30x the speed of one pass (1300.0 ms/step" in md
    assert "at most 60.0 GFLOP/s (40.0% of the GEMM rate); the path runs at 50% of that ceiling" in md  # of 150, not 300
    assert "| siren_fit: SIRENs | 30.00 | 150.0 (160, 140) | 20.0% | 10.0% | 30% NOT met |" in md
    assert "| small_cnn_train: CNNs | 20.00 | — | 7.0% | 6.7% |" in md  # no rates around it: the run's first one
    assert "At that ceiling siren_fit would be 4.00x the speed of its reference" in md
    assert "mlp_step: 2 networks: 1.5 ms, 75% of the batch-64 step." in md


def test_interleaved_reference_alternates_rounds_and_reports_the_median_ratio():
    perf = load_script("perf_cpu")
    calls: list[str] = []
    r = perf._interleaved(lambda: calls.append("ours"), lambda: calls.append("ref"), rounds=3, steps=2)
    assert calls == ["ours", "ours", "ref", "ref"] * 3
    il = r["interleaved"]
    assert len(il["ratios"]) == 3 and r["speedup"] == sorted(il["ratios"])[1]
    res = {"machine": "m", "command": "c", "date": "d", "torch": "t", "threads": 2, "paths": {
        "gemm": {"gflops": 100.0},
        "dwsnet_step": {"what": "DWSNet", "gflops": 15.0, "fraction_of_gemm": 0.15, "seconds_per_step": 0.5,
                        "flops_per_step": 7.5e9, "peak_rss_mb": 1400.0,
                        "reference": {"what": "the official", "seconds_per_step": 1.25, "speedup": 2.5,
                                      "interleaved": {"rounds": 6, "steps_per_round": 2, "ratios": [2.4, 2.5, 2.6],
                                                      "ours_seconds": [0.5], "reference_seconds": [1.25]}}}}}
    assert ("dwsnet_step: 2.50x the speed of the official (1250.0 ms/step, measured in the same process; the median "
            "of 6 rounds of 2 steps each, alternating with ours: 2.40-2.60x by round).") in perf.markdown(res)


def test_replay_records_the_counted_calls_of_a_step_with_their_shapes():
    import torch
    import torch.nn.functional as F

    replay = load_script("matmul_replay")
    lin = torch.nn.Linear(8, 4)
    q = torch.randn(2, 3, 5, 8, requires_grad=True)

    def step() -> None:
        (lin(torch.randn(6, 8)).sum() + F.scaled_dot_product_attention(q, q, q).sum()).backward()

    calls = replay.record_counted_ops(step)
    names = sorted(str(func) for func, _, _ in calls)
    # forward addmm, weight-gradient mm, attention forward and backward (the CPU kernels, which
    # torch.utils.flop_counter does not know: counted here with its CUDA formulas)
    assert names == ["aten._scaled_dot_product_flash_attention_for_cpu.default",
                     "aten._scaled_dot_product_flash_attention_for_cpu_backward.default", "aten.addmm.default",
                     "aten.mm.default"]
    addmm = next(args for func, args, _ in calls if "addmm" in str(func))
    assert [a.shape for a in addmm] == [(4,), (6, 8), (8, 4)] and addmm[2].stride == (1, 8)  # the weight, transposed
    flops = replay.count_flops(step)
    attention = 4 * 2 * 3 * 5 * 5 * 8  # QK^T and AV, 2 FLOPs per multiply-add
    assert flops == 2 * 6 * 8 * 4 * 2 + attention + int(2.5 * attention)  # linear fwd + weight grad; attention fwd, bwd
    seconds = replay.replay_seconds(calls)
    assert 0 < seconds < 1


def test_replay_counts_each_distinct_call_once_times_its_repeats(monkeypatch):
    import torch

    replay = load_script("matmul_replay")
    a, b = torch.randn(16, 16), torch.randn(16, 16)
    calls = replay.record_counted_ops(lambda: [torch.mm(a, b) for _ in range(5)])
    assert len(calls) == 5
    timed = []
    real = replay.time.perf_counter
    monkeypatch.setattr(replay.time, "perf_counter", lambda: (timed.append(1), real())[1])
    replay.replay_seconds(calls, repeats=2)
    assert len(timed) == 2 * 2  # one distinct call: two timed repeats (a start and an end each)


def test_render_rewrites_an_earlier_runs_report_with_a_title_and_refuses_bad_json(tmp_path):
    perf = load_script("perf_cpu")
    res = {"machine": "x86_64 CPU, 2 cores", "command": "python scripts/perf_cpu.py --out x", "date": "2026-12-07",
           "torch": "2.x", "threads": 2, "paths": {"gemm": {"gflops": 100.0, "fraction_of_gemm": 1.0,
                                                            "what": "torch.mm 2048x2048 fp32", "seconds_per_step": 0.2,
                                                            "peak_rss_mb": 700.0, "flops_per_step": 2 * 2048 ** 3}}}
    assert perf.markdown(res).startswith("# CPU efficiency: x86_64 CPU, 2 cores\n")
    run = tmp_path / "run.json"
    run.write_text(json.dumps(res))
    script = [sys.executable, str(ROOT / "scripts" / "perf_cpu.py")]
    proc = subprocess.run(script + ["--render", str(run), "--title", "latest full run"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = (tmp_path / "run.md").read_text()
    assert md.startswith("# CPU efficiency, latest full run: x86_64 CPU, 2 cores\n")
    assert "`python scripts/perf_cpu.py --out x`" in md  # the measuring command stays the report's
    assert json.loads(run.read_text())["title"] == "latest full run"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = subprocess.run(script + ["--render", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("perf_cpu: cannot render") and not (tmp_path / "bad.md").exists()
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run(script + ["--update", str(bad), "--paths", "statnn_step"], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, WSBENCH_DATA_DIR=str(DATA_DIR)))
    assert proc.returncode == 2 and proc.stderr.strip().startswith("perf_cpu: cannot update") and not (tmp_path / "bad.md").exists()
    assert len(proc.stderr.strip().splitlines()) == 1 and bad.read_text() == "{not json"
