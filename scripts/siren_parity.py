#!/usr/bin/env python
"""Are the SIRENs of a built zoo like the published DWSNets MNIST INRs? Weight statistics and PSNR.

    WSBENCH_DATA_DIR=../shared/data python scripts/siren_parity.py --zoo siren_mnist --variant small \
        [--out leaderboards/parity/siren_mnist]   # writes <out>.json and <out>.md

Per tensor: the average over its entries of the per-entry standard deviation across the zoo's
training INRs (the quantity DWSNets' statistics file holds), and the mean fit PSNR, each against
the figures measured on the published INRs (../shared/papers/dwsnet-facts.md, INR data). A tensor
passes within 15 %, the PSNR within 20-30 dB (the published INRs average 24.3 dB).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsbench.files import write_report  # noqa: E402
from wsbench.zoo_store import open_zoo  # noqa: E402

# measured on the published DWSNets MNIST INRs and their statistics file (see the module docstring)
PUBLISHED_STD = {"layers.0.weight": 0.063, "layers.0.bias": 0.021, "layers.1.weight": 0.018,
                 "layers.1.bias": 0.011, "layers.2.weight": 0.118}
PUBLISHED_PSNR_DB = 24.3
STD_TOLERANCE = 0.15
PSNR_RANGE_DB = (20.0, 30.0)


def weight_statistics(zoo, split: str = "train") -> dict[str, float]:
    """Per tensor: mean over entries of the per-entry std across the split's networks."""
    ws = zoo.weights(split=split)
    return {k: float(t.double().std(dim=0).mean()) for k, t in ws.tensors.items()}


def compare(zoo) -> dict:
    stats = weight_statistics(zoo)
    psnr = zoo.members["psnr"]
    rows = {k: {"ours": stats[k], "published": ref, "ratio": stats[k] / ref,
                "within_tolerance": abs(stats[k] / ref - 1) <= STD_TOLERANCE}
            for k, ref in PUBLISHED_STD.items()}
    psnr_ok = PSNR_RANGE_DB[0] <= float(psnr.mean()) <= PSNR_RANGE_DB[1]
    return {"zoo": zoo.name, "zoo_version": zoo.version, "variant": zoo.card.variant,
            "recipe": {k: zoo.card.recipe.get(k) for k in ("steps", "lr", "init", "stop_psnr")},
            "n_train_inrs": int((zoo.members["split"] == "train").sum()), "tensors": rows,
            "unpublished_tensors": {k: v for k, v in stats.items() if k not in PUBLISHED_STD},
            "psnr_db": {"mean": float(psnr.mean()), "p05": float(psnr.quantile(0.05)),
                        "p95": float(psnr.quantile(0.95)), "published_mean": PUBLISHED_PSNR_DB,
                        "within_range": psnr_ok},
            "passes": psnr_ok and all(r["within_tolerance"] for r in rows.values())}


def markdown(res: dict, command: str) -> str:
    lines = [f"# SIREN zoo vs the published DWSNets MNIST INRs: {res['zoo']} {res['zoo_version']} ({res['variant']})", "",
             f"`{command}`", "",
             f"Recipe: {json.dumps(res['recipe'])}; {res['n_train_inrs']} training INRs. Per-tensor average of the "
             f"per-entry std across INRs (published: measured on the DWSNets MNIST INRs), tolerance "
             f"{STD_TOLERANCE:.0%}:", "",
             "| tensor | ours | published | ratio | ok |", "|---|---:|---:|---:|---|"]
    for k, r in res["tensors"].items():
        lines.append(f"| {k} | {r['ours']:.4f} | {r['published']:.3f} | {r['ratio']:.2f} | "
                     f"{'yes' if r['within_tolerance'] else 'NO'} |")
    p = res["psnr_db"]
    lines += ["", f"PSNR: mean {p['mean']:.1f} dB (5-95 %: {p['p05']:.1f}-{p['p95']:.1f}); published INRs "
              f"{p['published_mean']} dB; range {PSNR_RANGE_DB[0]:.0f}-{PSNR_RANGE_DB[1]:.0f} dB: "
              f"{'yes' if p['within_range'] else 'NO'}.", "",
              f"Overall: {'PASSES' if res['passes'] else 'DOES NOT PASS'}.", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zoo", default="siren_mnist")
    ap.add_argument("--variant", default="small")
    ap.add_argument("--out", help="write <out>.json and <out>.md")
    a = ap.parse_args()
    res = compare(open_zoo(a.zoo, variant=a.variant))
    command = f"python scripts/siren_parity.py --zoo {a.zoo} --variant {a.variant}"
    print(markdown(res, command))
    if a.out:
        write_report(f"{a.out}.json", {**res, "command": command}, markdown(res, command))
    return 0 if res["passes"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
