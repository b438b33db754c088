"""Writing the leaderboard folder: README.md, index.html and plots/*.png from the records, only into
a folder that is new, empty or a leaderboard this command wrote (its README's first line tells)."""
from __future__ import annotations

import os
from pathlib import Path

from .. import files
from ..errors import DataError, WsbenchError
from ..results import read_records
from .html_page import render_html
from .markdown import render_markdown
from .matrix import build_matrices
from .plots import make_plots
from .tables import TITLE, build_tables

def write_atomic(path: Path, data: bytes) -> None:
    """files.write_atomic, with a failure reported as one user-facing line."""
    try:
        files.write_atomic(path, data)
    except OSError as exc:
        raise WsbenchError(f"cannot write leaderboard file {path}: {exc.strerror or exc}") from None


def folder_reports(out_dir: Path, folder: str) -> list[tuple[str, str, str | None]]:
    """(path relative to out_dir, title, figure path or None) of every <folder>/*.md beside the
    leaderboard: the title is its first heading, the figure a .png of the same name."""
    reports = []
    for md in sorted((out_dir / folder).glob("*.md")):
        first = md.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
        title = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else md.stem
        png = md.with_suffix(".png")
        reports.append((f"{folder}/{md.name}", title, f"{folder}/{png.name}" if png.is_file() else None))
    return reports


def parity_reports(out_dir: Path) -> list[tuple[str, str]]:
    """(path relative to out_dir, title) of every parity/*.md beside the leaderboard (first heading)."""
    return [(path, title) for path, title, _ in folder_reports(out_dir, "parity")]


def generate_leaderboard(results_dir: str | os.PathLike = "leaderboards/results",
                         out_dir: str | os.PathLike = "leaderboards") -> list[Path]:
    """Regenerate README.md, index.html and plots/*.png in out_dir from results_dir/*.jsonl.

    PNGs in out_dir/plots that no current table produces are removed. Returns the written paths.
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if not results_dir.is_dir():  # a typo must not turn into an empty leaderboard over the real one
        raise DataError(f"--results-dir {results_dir} is not a folder of result records")
    check_leaderboard_output(out_dir)
    for folder in (out_dir, out_dir / "plots"):  # what a killed earlier run left half-written
        files.sweep_leftovers(folder)
    records = read_records(results_dir)
    tables = build_tables(records)
    plots = make_plots(tables)
    source = Path(os.path.relpath(results_dir, out_dir)).as_posix()
    written = []
    plot_dir = out_dir / "plots"
    for plot in plots:
        write_atomic(plot_dir / plot.filename, plot.png)
        written.append(plot_dir / plot.filename)
    if plot_dir.is_dir():
        keep = {p.filename for p in plots}
        for stale in sorted(plot_dir.glob("*.png")):
            if stale.name not in keep:
                stale.unlink()
    parity, perf, matrices = parity_reports(out_dir), folder_reports(out_dir, "perf"), build_matrices(tables)
    for name, text in (("README.md", render_markdown(tables, plots, source, len(records), parity, perf, matrices)),
                       ("index.html", render_html(tables, plots, source, len(records), parity, perf, matrices))):
        write_atomic(out_dir / name, text.encode("utf-8"))
        written.append(out_dir / name)
    return written




def check_leaderboard_output(out_dir: Path) -> None:
    """The leaderboard replaces README.md and index.html in out_dir and prunes plots/*.png: refused when
    those exist and were not written by this command (its README's first line tells); other files in
    out_dir (results/, parity/, perf/) are never touched."""
    files.check_folder_path(out_dir, "--out")
    if not out_dir.exists():
        return
    readme = out_dir / "README.md"
    replaced = [p for p in (readme, out_dir / "index.html", out_dir / "plots") if p.exists()]
    if not replaced:
        return
    try:
        ours = readme.is_file() and readme.read_text(encoding="utf-8").split("\n", 1)[0].strip() == f"# {TITLE}"
    except (OSError, UnicodeDecodeError):
        ours = False
    if not ours:
        raise DataError(f"--out {out_dir} holds {', '.join(p.name for p in replaced)} that are not a wsbench "
                        f"leaderboard's (they would be replaced); choose a new or empty folder")
