"""Leaderboard cells (number formatting, one grid per table) and the markdown page.

The grid is shared with the HTML page, so both show the same text in the same cells.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from .matrix import MATRIX_INTRO, TransferMatrix, wins_line
from .tables import TITLE, Provenance, Row, Stat, Table

if TYPE_CHECKING:
    from .plots import Plot

LEGEND = (
    "Cells are mean ± sample standard deviation over seeds (no ± with one seed); `Seeds` is the number "
    "of distinct seeds (a re-run seed counts once, newest record). ↑ higher is better, ↓ lower is better; "
    "**bold** marks the best mean of a column, within each zoo member (ties all bold; no bold when all "
    "rows agree). `Scored` (shown where rows differ in it) is the number of test items the metrics "
    "come from. `Params` is the size of "
    "the representation or model the record reports; `Wall` is the wall-clock time of the run that "
    "produced the row (one run may score several members or variants). Records from an older task, zoo "
    "or method version, or made on another build of the zoo (another content digest), are listed apart and "
    "never compared."
)


@dataclass(frozen=True)
class Cell:
    text: str
    bold: bool = False
    numeric: bool = False
    title: str = ""  # tooltip in HTML


@dataclass(frozen=True)
class Grid:
    headers: tuple[Cell, ...]
    rows: tuple[tuple[Cell, ...], ...]


def format_number(value: float, decimals: int | None) -> str:
    if decimals is None:
        return "0" if value == 0 else f"{value:.3g}"
    return f"{value:,.{decimals}f}"


def _decimals(value: float) -> int | None:
    a = abs(value)
    return 0 if a >= 1000 else 1 if a >= 100 else 2 if a >= 1 else 3 if a >= 0.01 else None


def format_stat(stat: Stat, integer: bool = False, scale: float | None = None) -> str:
    """'91.23 ± 0.41' with decimals fitted to the magnitude of `scale` (a column's largest |mean|;
    default: this mean), so a column shares its decimals; integers with thousands commas."""
    decimals = 0 if integer else _decimals(abs(stat.mean) if scale is None else scale)
    text = format_number(stat.mean, decimals)
    if stat.std is not None and (stat.std > 0 or not integer):
        text += " ± " + format_number(stat.std, decimals if decimals is not None else None)
    return text


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def metric_header(table: Table, metric: str, older: bool = False) -> Cell:
    up = table.higher_is_better.get(metric, True)
    return Cell(f"{metric} {'↑' if up else '↓'}", numeric=True,
                title=f"{metric}: {'higher' if up else 'lower'} is better")


def table_grid(table: Table, older: bool = False) -> Grid:
    """Header and body cells of a table (older=True: the older-versions table, with version columns)."""
    rows: Sequence[Row] = table.older_rows if older else table.rows
    metrics = table.older_metrics if older else table.metrics
    best = {} if older else table.best()
    has_member = any(r.member for r in rows)
    has_bytes = any(r.n_bytes for r in rows)
    has_notes = any(r.status != "ok" for r in rows)
    has_eval = len({r.n_eval for r in rows if r.status == "ok"}) > 1  # scored on different numbers of items
    has_content = older and any(r.zoo_digest for r in rows)
    headers = [Cell("Task v"), Cell("Zoo v")] if older else []
    headers += [Cell("Zoo content", title="the zoo build's content digest (first 8 hex digits)")] if has_content else []
    headers += [Cell("Member", title="zoo member the row scores")] if has_member else []
    headers += [Cell("Method"), Cell("Config"), Cell("Preset", title="budget preset of the run")]
    headers += [Cell("Seeds", numeric=True)]
    headers += [Cell("Scored", numeric=True, title="items the metrics are computed on")] if has_eval else []
    headers += [metric_header(table, m) for m in metrics]
    headers += [Cell("Params", numeric=True)] + ([Cell("Bytes", numeric=True)] if has_bytes else [])
    headers += [Cell("Wall", numeric=True), Cell("Device")] + ([Cell("Notes")] if has_notes else [])
    scales = {m: max(abs(r.metrics[m].mean) for r in rows if m in r.metrics and r.status == "ok") for m in metrics
              if any(m in r.metrics and r.status == "ok" for r in rows)}
    body = []
    for i, row in enumerate(rows):
        cells = [Cell(str(row.task_version)), Cell(row.zoo_version)] if older else []
        cells += [Cell((row.zoo_digest or "")[:8])] if has_content else []
        cells += [Cell(row.member or "")] if has_member else []
        cells += [Cell(row.method), Cell(row.config), Cell(row.preset or "default")]
        cells.append(Cell(str(len(row.seeds)), numeric=True, title="seeds: " + ", ".join(map(str, row.seeds))))
        if has_eval:
            cells.append(Cell("–" if row.n_eval is None or row.status != "ok" else f"{row.n_eval:,}", numeric=True))
        for m in metrics:
            if row.status != "ok":
                cells.append(Cell("n/a", numeric=True))
            elif m not in row.metrics:
                cells.append(Cell("–", numeric=True))
            else:
                stat = row.metrics[m]
                text = format_stat(stat, scale=scales[m]) + (f" (n={stat.n})" if stat.n != len(row.seeds) else "")
                cells.append(Cell(text, bold=i in best.get(m, set()), numeric=True))
        cells.append(Cell(format_stat(row.n_params, integer=True) if row.n_params else "–", numeric=True))
        if has_bytes:
            cells.append(Cell(format_stat(row.n_bytes, integer=True) if row.n_bytes else "–", numeric=True))
        cells += [Cell(format_seconds(row.wall_s.mean), numeric=True), Cell(", ".join(row.devices))]
        if has_notes:
            cells.append(Cell(f"not applicable: {row.reason}" if row.status != "ok" else ""))
        body.append(tuple(cells))
    return Grid(tuple(headers), tuple(body))


def matrix_grid(matrix: TransferMatrix) -> Grid:
    short, best = matrix.short_names, matrix.best()
    headers = [Cell("Trained on"), Cell("Method"), Cell("Preset", title="budget preset of the run")]
    headers += [Cell(f"→ {short[z]}", numeric=True, title=f"{matrix.metric} on the test split of {z}")
                for z in matrix.zoos]
    body = []
    for i, row in enumerate(matrix.rows):
        cells = [Cell(short[row.train_zoo]), Cell(row.method), Cell(row.preset or "default")]
        for zoo in matrix.zoos:
            stat = row.cells.get(zoo)
            text = "–" if stat is None else format_stat(stat, scale=0.5) + (" (n=1)" if stat.n == 1 else "")
            title = "in-distribution (its own zoo's test split)" if zoo == row.train_zoo else ""
            cells.append(Cell(text, bold=(i, zoo) in best, numeric=True, title=title))
        body.append(tuple(cells))
    return Grid(tuple(headers), tuple(body))



OLDER_NOTE = ("Not comparable with the table above: an older task, zoo or method version, or another build of the "
              "zoo (content digest) than the table's newest records.")


def summary_line(table: Table, prov: Provenance, older: bool = False) -> str:
    versions = "" if older else f"task v{table.task_version} · zoo v{table.zoo_version} · "
    if table.benchmark and not older:
        versions = f"benchmark {table.benchmark} (run_bench.py --benchmark {table.benchmark} --method M) · " + versions
    stale = (f" · STALE: the zoo card is now v{table.card_version}; these records predate it (rerun)"
             if table.stale and not older else "")
    return (f"{versions}{prov.n_records} record{'s' * (prov.n_records != 1)} · "
            f"preset: {', '.join(prov.presets)} · device: {', '.join(prov.devices)}{stale}")


# ---------------------------------------------------------------- markdown


def _md_escape(text: str) -> str:
    # records can come from the Hub: no raw HTML from their fields reaches the page
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("*", "\\*")
            .replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def markdown_table(grid: Grid) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    lines = [line([_md_escape(c.text) for c in grid.headers]),
             line(["---:" if c.numeric else "---" for c in grid.headers])]
    for row in grid.rows:
        lines.append(line([f"**{_md_escape(c.text)}**" if c.bold and c.text else _md_escape(c.text) for c in row]))
    return lines


def markdown_provenance(prov: Provenance) -> list[str]:
    n = len(prov.commands)
    lines = [f"<details><summary>How these numbers were made ({n} command{'s' * (n != 1)})</summary>", "",
             "```"] + [c.replace("`", "'") for c in prov.commands] + ["```", ""]  # no fence breaks out
    lines.append(f"Presets: {_md_escape(', '.join(prov.presets))}. Devices: {_md_escape(', '.join(prov.devices))}. "
                 f"Commits: {', '.join(f'`{_md_escape(c)}`' for c in prov.commits)}. "
                 f"Record dates: {prov.first_date} to {prov.last_date}.")
    warning = [f"**{_md_escape(prov.mixed_zoos)}**", ""] if prov.mixed_zoos else []
    return lines + ["", "</details>", ""] + warning + preset_notes_markdown(prov)


def preset_notes_markdown(prov: Provenance) -> list[str]:
    """What each preset of the table is (parity run, CPU schedule, paper configuration...)."""
    if not prov.preset_notes:
        return []
    return ["Presets:", ""] + [f"- `{_md_escape(name)}`: {_md_escape(text)}" for name, text in prov.preset_notes] + [""]


def render_markdown(tables: Sequence[Table], plots: Sequence["Plot"], source: str, n_records: int,
                    parity: Sequence[tuple[str, str]] = (), perf: Sequence[tuple[str, str, str | None]] = (),
                    matrices: Sequence[TransferMatrix] = ()) -> str:
    """The whole leaderboards/README.md; `parity`: (relative path, title) of the parity reports;
    `perf`: (relative path, title, figure or None) of the performance reports; `matrices`: the
    transfer matrices drawn from the tables."""
    out = [f"# {TITLE}", "",
           f"Generated by `run_bench.py leaderboard` from `{source}/*.jsonl` ({n_records} records). "
           "Do not edit by hand: this file, `index.html` (the same tables with plots, viewable offline) "
           "and `plots/` are derived from the result records.", ""]
    if not tables:
        out += [f"No result records yet: `{source}/` has no `*.jsonl` records. Run a benchmark "
                "(`run_bench.py run ...`), then `run_bench.py leaderboard`.", ""]
        return "\n".join(out)
    out += [LEGEND, "", "## Contents", ""]
    out += [f"- [{t.title}](#{t.slug})" for t in tables] + [f"- [{m.title}](#{m.slug})" for m in matrices]
    out += (["- [Performance](#performance)"] if perf else []) + [""]
    if parity:
        out += ["Parity with the original implementations (reruns of their reference measurements):", ""]
        out += [f"- [{_md_escape(title)}]({path})" for path, title in parity] + [""]
    by_table: dict[str, list[Plot]] = {}
    for plot in plots:
        by_table.setdefault(plot.table_slug, []).append(plot)
    for t in tables:
        out += [f'<a id="{t.slug}"></a>', "", f"## {_md_escape(t.title)}", "", _md_escape(summary_line(t, t.provenance)), ""]
        out += markdown_table(table_grid(t)) + [""]
        for plot in by_table.get(t.slug, []):
            out += [f"![{plot.title}](plots/{plot.filename})", "", f"*{plot.caption}*", ""]
        out += markdown_provenance(t.provenance)
        if t.older_rows and t.older_provenance:
            out += [f"### Older versions ({_md_escape(t.title)})", "", _md_escape(summary_line(t, t.older_provenance, older=True)),
                    "", OLDER_NOTE, ""]
            out += markdown_table(table_grid(t, older=True)) + [""] + markdown_provenance(t.older_provenance)
    for m in matrices:
        out += markdown_matrix(m)
    if perf:
        out += ['<a id="performance"></a>', "", "## Performance on the machines that ran it", ""]
        for path, title, figure in perf:
            out += [f"- [{_md_escape(title)}]({path})", ""] + ([f"![{_md_escape(title)}]({figure})", ""] if figure else [])
    return "\n".join(out)


def markdown_matrix(matrix: TransferMatrix) -> list[str]:
    sources = ", ".join(f"[{slug}](#{slug})" for slug in matrix.source_slugs)
    return ([f'<a id="{matrix.slug}"></a>', "", f"## {_md_escape(matrix.title)}", "", MATRIX_INTRO, ""]
            + markdown_table(matrix_grid(matrix)) + ["", _md_escape(wins_line(matrix)), "",
                                                     f"Commands and provenance: {sources}.", ""])
