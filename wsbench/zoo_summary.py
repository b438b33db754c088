"""A built zoo in a page: member counts, metric distributions and checksums of its files.

Built zoos are too large for the repository; their summaries are committed instead
(`zoos/summaries/<name>-<variant>.{json,md}`), so that anyone who rebuilds a zoo from its card can
check that they got the same members (counts, metric distributions, sha256 of the weight files).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .files import write_atomic
from .manifest import sha256_file

METRICS = ("test_acc", "train_acc", "gen_gap", "test_loss", "train_loss", "test_acc_exact", "psnr", "mse")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _stats(s: pd.Series) -> dict[str, float | int]:
    s = pd.to_numeric(s, errors="coerce").astype(float)
    finite = s[np.isfinite(s.to_numpy())]
    out: dict[str, float | int] = {"count": int(len(finite)), "missing": int(len(s) - len(finite))}
    if len(finite):
        out.update(mean=float(finite.mean()), std=float(finite.std(ddof=0)), min=float(finite.min()),
                   max=float(finite.max()), **{f"p{int(q * 100):02d}": float(finite.quantile(q)) for q in QUANTILES})
    return out


def summarize_zoo(zoo) -> dict[str, Any]:
    """JSON-ready summary of a loaded Zoo."""
    m = zoo.members
    counts: dict[str, Any] = {"members": int(len(m)), "by_split": m["split"].value_counts().sort_index().to_dict(),
                              "by_group": m["group"].value_counts().sort_index().to_dict(),
                              "by_group_and_split": {g: d["split"].value_counts().sort_index().to_dict()
                                                     for g, d in m.groupby("group")}}
    if "run_id" in m:
        counts["runs"] = int(m["run_id"].nunique())
        if "epoch" in m:
            counts["by_epoch"] = {int(k): int(v) for k, v in m["epoch"].value_counts().sort_index().items()}
    if "diverged" in m:
        div = m[m["diverged"].astype(bool)]
        counts["diverged_members"] = int(len(div))
        if "run_id" in m:
            counts["diverged_runs"] = int(div["run_id"].nunique())
    if "label" in m:
        counts["by_label"] = {int(k): int(v) for k, v in m["label"].value_counts().sort_index().items()}
    metrics = {c: _stats(m[c]) for c in METRICS if c in m}
    by_epoch = {}
    if "epoch" in m and "test_acc" in m:
        by_epoch = {int(e): _stats(d["test_acc"]) for e, d in m.groupby("epoch")}
    files = {}
    for p in sorted(zoo.root.rglob("*")):
        rel = p.relative_to(zoo.root).as_posix()
        if p.is_file() and (rel == "members.parquet" or rel.startswith("weights/")):
            files[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    card = zoo.card
    return {"zoo": card.name, "version": card.version, "variant": card.variant, "kind": card.kind,
            "dataset": card.dataset, "builder": card.builder,
            "archs": {g: {"arch": a["arch"], "kwargs": a.get("kwargs", {})} for g, a in card.archs.items()},
            "counts": counts, "metrics": metrics, "test_acc_by_epoch": by_epoch, "files": files,
            "build_stats": card.recipe.get("build_stats", {})}


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def summary_markdown(s: dict[str, Any]) -> str:
    lines = [f"# {s['zoo']} ({s['variant']}), version {s['version']}", "",
             f"{s['kind']} zoo on {s['dataset']}, builder `{s['builder']}`; "
             f"{s['counts']['members']} members" + (f" from {s['counts']['runs']} runs" if "runs" in s["counts"] else "")
             + (f", {s['counts'].get('diverged_runs', s['counts'].get('diverged_members'))} diverged"
                if s["counts"].get("diverged_members") else "") + ".", "",
             "| group | arch | kwargs | " + " | ".join(sorted(s["counts"]["by_split"])) + " |",
             "|---|---|---|" + "---:|" * len(s["counts"]["by_split"])]
    for g, a in s["archs"].items():
        per = s["counts"]["by_group_and_split"].get(g, {})
        lines.append(f"| {g} | {a['arch']} | `{json.dumps(a['kwargs'], sort_keys=True)}` | "
                     + " | ".join(str(per.get(k, 0)) for k in sorted(s["counts"]["by_split"])) + " |")
    if s["metrics"]:
        cols = ["count", "mean", "std", "min", "p05", "p50", "p95", "max"]
        lines += ["", "| metric | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for k, st in s["metrics"].items():
            lines.append(f"| {k} | " + " | ".join(_fmt(st.get(c, "")) for c in cols) + " |")
    if s["test_acc_by_epoch"]:
        lines += ["", "| epoch | members | test_acc mean | p05 | p50 | p95 |", "|---:|---:|---:|---:|---:|---:|"]
        for e, st in s["test_acc_by_epoch"].items():
            lines.append(f"| {e} | {st['count']} | " + " | ".join(_fmt(st.get(c, "")) for c in ("mean", "p05", "p50", "p95")) + " |")
    lines += ["", "| file | bytes | sha256 |", "|---|---:|---|"]
    lines += [f"| {f} | {d['bytes']:,} | `{d['sha256']}` |" for f, d in s["files"].items()]
    if s["build_stats"]:
        lines += ["", "Build: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in s["build_stats"].items())]
    return "\n".join(lines) + "\n"


def write_summary(zoo, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write `<name>-<variant>.json` and `.md` into out_dir (atomically); returns both paths."""
    return write_summary_files(summarize_zoo(zoo), out_dir)


def write_summary_files(s: dict[str, Any], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """The two files of a summary made elsewhere (e.g. one that came back from a GPU lease)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{s['zoo']}-{s['variant']}"
    js, md = out / f"{stem}.json", out / f"{stem}.md"
    write_atomic(js, json.dumps(s, indent=1, sort_keys=True, default=str) + "\n")
    write_atomic(md, summary_markdown(s))
    return js, md
