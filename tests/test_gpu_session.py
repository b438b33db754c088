"""The GPU lease's one command (scripts/gpu_session.py), dry-run on the CPU exactly as on the device:
without `datasets` and `huggingface_hub` (absent there), every part succeeding, every result in
$OUT within the device's limits (8 files, two folders deep), a timeout recorded, not fatal."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_paths import DATA_DIR
from script_loader import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


@pytest.fixture
def without_hub_packages(tmp_path: Path) -> dict[str, str]:
    """An environment in which `import datasets` / `import huggingface_hub` fail, as on the device."""
    stubs = tmp_path / "stubs"
    for name in ("datasets", "huggingface_hub"):
        (stubs / name).mkdir(parents=True)
        (stubs / name / "__init__.py").write_text("raise ImportError('absent on the GPU machine')\n")
    return dict(os.environ, PYTHONPATH=str(stubs), WSBENCH_DATA_DIR=str(DATA_DIR))


@pytest.mark.skipif(not (DATA_DIR / "pretrained").is_dir(), reason="needs the data mirror")
def test_dry_run_of_the_lease_command(tmp_path, without_hub_packages):
    out = tmp_path / "OUT"
    proc = subprocess.run([sys.executable, str(SCRIPTS / "gpu_session.py"), "--dry-run", "--out", str(out)],
                          cwd=ROOT, env=without_hub_packages, capture_output=True, text=True, timeout=600)
    log = (out / "session.log").read_text() if (out / "session.log").exists() else ""
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + log[-3000:]
    summary = json.loads((out / "session_summary.json").read_text())
    assert {n: r["rc"] for n, r in summary["parts"].items()} == {
        "env": 0, "nern_paper": 0, "nern_speed": 0, "siren_speed": 0, "encoders": 0}
    assert summary["env"]["packages"]["datasets"] is False and summary["env"]["packages"]["huggingface_hub"] is False
    assert summary["out_problems"] == []
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert len(files) <= 8 and all(len(Path(f).parts) <= 3 for f in files), files
    assert {"session.log", "session_summary.json", "nern_speed.json", "zoo_speed.json", "gpu_bench_summary.json",
            "records/reconstruction.jsonl"} <= set(files)
    assert sum(f.startswith("runs/") and Path(f).name == "nern_ckpt.resnet20_pretrained.safetensors" for f in files) == 1
    records = [json.loads(line) for line in (out / "records" / "reconstruction.jsonl").read_text().splitlines()]
    assert records and {r["method"] for r in records} == {"nern"}
    assert {r["preset"] for r in records} == {"paper_resnet20_h180"}
    speed = json.loads((out / "nern_speed.json").read_text())
    assert speed["steps"]["20/default"]["it_per_s"] > 0
    assert json.loads((out / "zoo_speed.json").read_text())["siren"]["fitted"] > 0
    encoders = json.loads((out / "gpu_bench_summary.json").read_text())["encoders"]
    assert encoders and not [k for k, v in encoders.items() if "error" in v]


@pytest.mark.skipif(not (DATA_DIR / "cifar10-jpeg").is_dir(), reason="needs the data mirror")
def test_dry_run_of_the_opt_in_zoo86_parts(tmp_path, without_hub_packages):
    """The issue-17 lease (--only zoo86_*): the zoo is built where WSBENCH_ZOO_DIR points for those parts
    (never into $OUT), property prediction is scored on it, and the records and the zoo's summary come back."""
    out = tmp_path / "OUT"
    only = ["zoo86_build", "zoo86_statnn"]
    proc = subprocess.run([sys.executable, str(SCRIPTS / "gpu_session.py"), "--dry-run", "--out", str(out),
                           "--only", *only], cwd=ROOT, env=without_hub_packages, capture_output=True, text=True,
                          timeout=600)
    log = (out / "session.log").read_text() if (out / "session.log").exists() else ""
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + log[-3000:]
    summary = json.loads((out / "session_summary.json").read_text())
    assert {n: r["rc"] for n, r in summary["parts"].items()} == dict.fromkeys(only, 0)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert set(files) == {"session.log", "session_summary.json", "zoo_builds.json",
                          "records/property_prediction.jsonl"}, files
    assert "small_cnn_cifar10_gray-tiny" in json.loads((out / "zoo_builds.json").read_text())
    records = [json.loads(line) for line in (out / "records" / "property_prediction.jsonl").read_text().splitlines()]
    assert [(r["method"], r["zoo_variant"], r["status"]) for r in records] == [("statnn", "tiny", "ok")]
    assert "tau" in records[0]["metrics"]
    assert (tmp_path / "OUT_zoos").is_dir()


def test_zoo86_parts_run_only_when_named():
    gpu_session = load_script("gpu_session")
    every = gpu_session.parts(Path("/nonexistent/OUT"), dry=False)
    zoo86 = [p for p in every if p.name.startswith("zoo86_")]
    assert zoo86 and all(p.opt_in for p in zoo86) and not any(p.opt_in for p in every if p not in zoo86)
    build = next(p for p in zoo86 if p.name == "zoo86_build")
    assert "medium_86" in build.args and build.env["WSBENCH_ZOO_DIR"].endswith("zoo_store")
    assert all(gpu_session.ZOO86_BENCHMARK in p.args for p in zoo86 if p is not build)


def test_a_part_that_overruns_is_killed_and_recorded(tmp_path):
    session = load_script("gpu_session")
    with open(tmp_path / "log", "w") as log:
        r = session.run_part(session.Part("sleeper", ["-c", "print('started', flush=True); import time; "
                                                            "time.sleep(60)"], 60), 1.5, log, dict(os.environ))
    assert r["rc"] == "timed_out" and r["wall_s"] < 20
    text = (tmp_path / "log").read_text()
    assert "started" in text and "rc timed_out" in text


def test_bench_subscript_timeout_is_caught(tmp_path):
    bench = load_script("gpu_bench")
    out_json = tmp_path / "partial.json"
    out_json.write_text('{"measured": 1}')  # what the child wrote before it was stopped
    r = bench.run_script(["-c", "import time; time.sleep(60)"], out_json, 1)
    assert r["rc"] == "timed_out" and r["result"] == {"measured": 1}


def test_out_problems_names_what_would_not_come_back(tmp_path):
    session = load_script("gpu_session")
    assert session.out_problems(tmp_path) == []
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c" / "deep.json").write_text("{}")
    (tmp_path / "odd name.txt").write_text("")
    for i in range(8):
        (tmp_path / f"f{i}").write_text("")
    problems = session.out_problems(tmp_path)
    assert any("10 files" in p for p in problems)
    assert any("deep.json" in p and "folders down" in p for p in problems)
    assert any("odd name.txt" in p for p in problems)


@pytest.mark.parametrize("script", ["gpu_session.py", "gpu_bench_nern.py", "gpu_build_zoos.py"])
def test_data_only_from_wsbench_data_dir(tmp_path, script):
    env = {k: v for k, v in os.environ.items() if k != "WSBENCH_DATA_DIR"}
    args = {"gpu_session.py": ["--out", str(tmp_path)], "gpu_bench_nern.py": ["--depths", "20"],
            "gpu_build_zoos.py": ["bench", "--device", "cpu"]}[script]
    proc = subprocess.run([sys.executable, str(SCRIPTS / script), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "WSBENCH_DATA_DIR" in proc.stderr.strip().splitlines()[-1]
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.skipif(not (DATA_DIR / "mnist").is_dir(), reason="needs the data mirror")
def test_zoo_build_mode_returns_one_file_and_summaries_are_written_here(tmp_path):
    env = dict(os.environ, WSBENCH_DATA_DIR=str(DATA_DIR), WSBENCH_ZOO_DIR=str(tmp_path / "store"))
    out = tmp_path / "OUT"
    build = subprocess.run([sys.executable, str(SCRIPTS / "gpu_build_zoos.py"), "build", "--device", "cpu", "--zoos",
                            "siren_mnist", "--variant", "tiny", "--out", str(out)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    assert [p.name for p in out.iterdir()] == ["zoo_builds.json"]
    summaries = tmp_path / "summaries"
    write = subprocess.run([sys.executable, str(SCRIPTS / "gpu_build_zoos.py"), "summaries", "--from",
                            str(out / "zoo_builds.json"), "--summaries", str(summaries)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert write.returncode == 0, write.stderr
    assert sorted(p.name for p in summaries.iterdir()) == ["siren_mnist-tiny.json", "siren_mnist-tiny.md"]
    assert json.loads((summaries / "siren_mnist-tiny.json").read_text())["zoo"] == "siren_mnist"
