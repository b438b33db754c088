"""scripts/scale_curves.py: points in fresh processes through the real builders, fits and projections."""
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


@pytest.mark.skipif(not (DATA_DIR / "mnist").is_dir(), reason="needs the MNIST data")
def test_scale_script_measures_points_and_writes_its_report(tmp_path):
    env = dict(os.environ, WSBENCH_DATA_DIR=str(DATA_DIR), WSBENCH_ZOO_DIR=str(tmp_path / "zoos"))
    out = tmp_path / "perf" / "scale"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "scale_curves.py"), "--sizes", "12", "24",
                           "--paths", "siren_build", "--siren-steps", "2", "--out", str(out),
                           "--perf", str(tmp_path / "none.json")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.with_suffix(".json").read_text())
    siren = res["paths"]["siren_build"]
    assert [p["networks"] for p in siren] == [12, 24]  # 12 train images: 11 train + 1 val members
    assert all(p["peak_rss_mib"] > 0 and p["seconds_at_recipe"] > p["fit_s"] for p in siren)
    assert res["projections"][0]["what"].startswith("siren_mnist full") and "h200_minutes" not in res["projections"][0]
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "## Projections for the full zoos (not measured)" in out.with_suffix(".md").read_text()

    # measuring another path keeps the first one's points, with the command that measured them (each point is a
    # process of its own: the second path is measured at one size only)
    again = subprocess.run([sys.executable, str(ROOT / "scripts" / "scale_curves.py"), "--sizes", "16",
                            "--paths", "statnn_epoch", "--out", str(out), "--perf", str(tmp_path / "none.json")],
                           env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    res2 = json.loads(out.with_suffix(".json").read_text())
    assert res2["paths"]["siren_build"] == siren and [p["networks"] for p in res2["paths"]["statnn_epoch"]] == [16]
    assert res2["measured"]["siren_build"]["command"] == res["command"] != res2["command"]
    assert f"Measured {res['date']} by `{res['command']}`" in out.with_suffix(".md").read_text()


def test_projections_use_the_fitted_time_and_the_perf_rates():
    mod = load_script("scale_curves")
    assert mod.linear_fit([1, 2, 3], [3, 5, 7]) == pytest.approx((1.0, 2.0))
    res = {"paths": {"siren_build": [{"networks": 1000, "seconds_at_recipe": 100.0},
                                     {"networks": 2000, "seconds_at_recipe": 200.0}]}}
    perf = {"paths": {"siren_fit": {"flops_per_step": 400 * 1e6, "fraction_of_gemm": 0.5},
                      "small_cnn_train": {"flops_per_step": 1e9, "seconds_per_step": 1.0, "image_passes_per_s": 1000.0,
                                          "fraction_of_gemm": 0.1}}}
    siren, cnn = mod.projections(res, perf)
    assert siren["cpu_hours"] == pytest.approx(70_000 * 0.1 / 3600)
    assert siren["h200_minutes"] == pytest.approx(1e6 * 1000 * 70_000 / (67e12 * 0.5) / 60)
    passes = 30_000 * 86 * (0.1 + 0.25 + 0.5 + 1.0) / 4 * 50_000
    assert cnn["cpu_hours"] == pytest.approx(passes / 1000 / 3600)
    assert cnn["h200_minutes"] == pytest.approx(passes * 1e6 / (67e12 * 0.1) / 60)


def test_a_remeasured_path_drops_its_old_points_and_the_others_keep_theirs(tmp_path):
    mod = load_script("scale_curves")
    old = {"date": "2026-12-01", "command": "python scripts/scale_curves.py --sizes 12",
           "paths": {"siren_build": [{"networks": 12}], "statnn_epoch": [{"networks": 12}], "retired_path": [{}]},
           "what": {"siren_build": "SIRENs", "statnn_epoch": "StatNN", "retired_path": "gone"},
           "measured": {"statnn_epoch": {"date": "2026-11-30", "command": "older"}}}
    (tmp_path / "scale.json").write_text(json.dumps(old))
    kept = mod._previous(str(tmp_path / "scale"), ["statnn_epoch"])
    assert kept["paths"] == {"siren_build": [{"networks": 12}]} and kept["what"] == {"siren_build": "SIRENs"}
    assert kept["measured"] == {"siren_build": {"date": "2026-12-01", "command": old["command"]}}
    kept = mod._previous(str(tmp_path / "scale"), ["siren_build"])
    assert kept["measured"]["statnn_epoch"] == {"date": "2026-11-30", "command": "older"}
    assert mod._previous(str(tmp_path / "absent"), []) == {}
