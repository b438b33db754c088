"""Leaderboard plots as PNG bytes, byte-identical run to run.

- reconstruction tables (rows with ``acc_recon``): reconstructed accuracy versus representation
  size (bytes when every row reports ``size_bytes``, else parameters), log x, one series per
  method, one panel per zoo member (the mean over members when there are more than 6);
- tables with Kendall tau metrics (names with a ``tau`` token): bars per row with std error bars;
- other tables with accuracy metrics (``acc``/``accuracy`` tokens, higher is better), e.g. INR
  classification: bars per row with std error bars.

Figures are built with the object API (no pyplot state), under matplotlib's default style (a
user's matplotlibrc changes nothing), and saved without the Software tag.
"""
from __future__ import annotations

import io
import math
import re
import statistics
from dataclasses import dataclass
from typing import Sequence

from .tables import Row, Table

MAX_PANELS = 6
MAX_BAR_METRICS = 6
TAU = re.compile(r"(^|_)tau($|_)")
R2 = re.compile(r"(^|_)r2($|_)")
ACCURACY = re.compile(r"(^|_)(acc|accuracy|top1)($|_)")
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


@dataclass(frozen=True)
class Plot:
    filename: str
    table_slug: str
    title: str
    caption: str
    png: bytes


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def _style():
    import matplotlib.style

    return matplotlib.style.context("default")


def _ok_rows(table: Table, metric: str) -> list[Row]:
    return [r for r in table.rows if r.status == "ok" and metric in r.metrics]


def _size(row: Row, use_bytes: bool) -> float | None:
    if use_bytes:
        return row.metrics["size_bytes"].mean
    if "size_params" in row.metrics:
        return row.metrics["size_params"].mean
    return row.n_params.mean if row.n_params else None


def human_size(value: float, use_bytes: bool) -> str:
    """'250 kB', '1.5 MB' (decimal units) for bytes; '250k', '1.5M' for parameter counts."""
    for div, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, "")):
        if abs(value) >= div or div == 1.0:
            number = f"{value / div:.3g}"
            return f"{number} {prefix}B" if use_bytes else f"{number}{prefix}"
    raise AssertionError("unreachable")


def _size_axis(ax, use_bytes: bool) -> None:
    """Major ticks at 1-2-5 steps with readable labels; unlabeled minor ticks (no overlapping 3x10^5)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: human_size(v, use_bytes)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def reconstruction_plot(table: Table) -> Plot | None:
    rows = _ok_rows(table, "acc_recon")
    use_bytes = bool(rows) and all("size_bytes" in r.metrics for r in rows)
    rows = [r for r in rows if (_size(r, use_bytes) or 0) > 0]
    if not rows:
        return None
    members = sorted({r.member or "" for r in rows})
    several_presets = len({r.preset for r in rows}) > 1

    def series(r: Row) -> str:  # one curve per method (and preset, when the table mixes budgets)
        return r.method + (f" ({r.preset or 'default'})" if several_presets else "")

    panels: list[tuple[str, list[tuple[str, float, float, float]], float | None]] = []
    if len(members) <= MAX_PANELS:
        for member in members:
            mine = [r for r in rows if (r.member or "") == member]
            points = [(series(r), _size(r, use_bytes), r.metrics["acc_recon"].mean, r.metrics["acc_recon"].std or 0.0)
                      for r in mine]
            origs = [r.metrics["acc_orig"].mean for r in mine if "acc_orig" in r.metrics]
            panels.append((member or table.zoo, points, statistics.fmean(origs) if origs else None))
    else:  # mean over members of each (method, config)
        groups: dict[tuple[str, str], list[Row]] = {}
        for r in rows:
            groups.setdefault((series(r), r.config), []).append(r)
        points = [(m, statistics.fmean(_size(r, use_bytes) for r in rs),
                   statistics.fmean(r.metrics["acc_recon"].mean for r in rs), 0.0)
                  for (m, _), rs in sorted(groups.items())]
        origs = [r.metrics["acc_orig"].mean for r in rows if "acc_orig" in r.metrics]
        panels.append((f"mean over {len(members)} members", points, statistics.fmean(origs) if origs else None))
    methods = sorted({p[0] for _, pts, _ in panels for p in pts})
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    unit = "bytes" if use_bytes else "parameters"
    with _style():
        fig = _figure(5.0 * ncols + 1.6, 4.0 * nrows)
        for k, (name, points, orig) in enumerate(panels):
            ax = fig.add_subplot(nrows, ncols, k + 1)
            for j, method in enumerate(methods):
                pts = sorted((x, y, e) for m, x, y, e in points if m == method)
                if pts:
                    ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], label=method,
                                color=COLORS[j % len(COLORS)], marker=MARKERS[j % len(MARKERS)], markersize=5,
                                linewidth=1.2, capsize=2)
            if orig is not None:
                ax.axhline(orig, color="black", linestyle="--", linewidth=1, label="original")
            ax.set_xscale("log")
            _size_axis(ax, use_bytes)
            ax.set_title(name, fontsize=10)
            ax.set_xlabel(f"representation size ({unit}, log scale)")
            ax.set_ylabel("reconstructed test accuracy (%)")
            ax.grid(True, which="major", alpha=0.3)
        handles, labels = fig.axes[0].get_legend_handles_labels()
        seen = dict(zip(labels, handles))
        for ax in fig.axes[1:]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(lab, h)
        fig.legend(list(seen.values()), list(seen.keys()), loc="outside right upper", fontsize=9)
        fig.suptitle(f"Reconstruction: accuracy vs size — {table.title}", fontsize=11)
        png = _png(fig)
    return Plot(f"reconstruction_size_{table.slug}.png", table.slug, f"Reconstruction accuracy vs size ({table.title})",
                f"Reconstructed test accuracy (mean ± std over seeds) against representation size in {unit}; "
                "dashed: the original network.", png)


def _bar_label(row: Row, several_presets: bool) -> str:
    label = row.name + (f" / {row.member}" if row.member else "")
    return label + (f" ({row.preset or 'default'})" if several_presets else "")


def bar_plot(table: Table, metrics: Sequence[str], kind: str, title: str, ylabel: str) -> Plot | None:
    metrics = list(metrics)[:MAX_BAR_METRICS]
    rows = [r for r in table.rows if r.status == "ok" and any(m in r.metrics for m in metrics)]
    if not rows:
        return None
    several_presets = len({r.preset for r in rows}) > 1
    labels = [_bar_label(r, several_presets) for r in rows]
    width = 0.8 / len(metrics)
    with _style():
        fig = _figure(min(16.0, max(6.0, 0.55 * len(rows) * len(metrics) + 2.5)), 4.2)
        ax = fig.add_subplot(1, 1, 1)
        for j, metric in enumerate(metrics):
            xs = [i + (j - (len(metrics) - 1) / 2) * width for i, r in enumerate(rows) if metric in r.metrics]
            stats = [r.metrics[metric] for r in rows if metric in r.metrics]
            ax.bar(xs, [s.mean for s in stats], width=width * 0.95, yerr=[s.std or 0.0 for s in stats], capsize=3,
                   color=COLORS[j % len(COLORS)], label=metric, error_kw={"linewidth": 1})
        ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=9)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} — {table.title}", fontsize=11)
        ax.grid(True, axis="y", alpha=0.3)
        if len(metrics) > 1:
            ax.legend(fontsize=9)
        png = _png(fig)
    return Plot(f"{kind}_{table.slug}.png", table.slug, f"{title} ({table.title})",
                f"{title} per method: mean over seeds, error bars one standard deviation.", png)


def make_plots(tables: Sequence[Table]) -> list[Plot]:
    """Every plot the tables call for, in table order."""
    plots: list[Plot | None] = []
    for t in tables:
        if any("acc_recon" in r.metrics for r in t.rows):
            plots.append(reconstruction_plot(t))
            continue
        taus = [m for m in t.metrics if TAU.search(m)]
        accs = [m for m in t.metrics if ACCURACY.search(m) and not (TAU.search(m) or R2.search(m))
                and t.higher_is_better.get(m, True)]
        if taus:
            plots.append(bar_plot(t, taus, "tau", "Property prediction: Kendall τ", "Kendall τ"))
        if accs:
            inr = "inr" in f"{t.task} {t.zoo}".lower()
            title = "INR classification accuracy" if inr else "Accuracy"
            plots.append(bar_plot(t, accs, "accuracy", title, "accuracy"))
    return [p for p in plots if p is not None]
