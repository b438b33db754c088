"""The static leaderboard page (index.html) and its check in a real headless Chromium.

The page is self-contained: inline CSS, plots as PNG data URIs, no network. A few lines of
inline script only record, on load, how many tables and decoded images the browser sees
(``#page-check`` attributes), so `check_in_browser` can read them back from ``--dump-dom``.
"""
from __future__ import annotations

import base64
import html
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..errors import WsbenchError
from .markdown import LEGEND, OLDER_NOTE, Grid, matrix_grid, summary_line, table_grid
from .matrix import MATRIX_INTRO, TransferMatrix, wins_line
from .tables import TITLE, Provenance, Table

if TYPE_CHECKING:
    from .plots import Plot

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:2rem auto;
max-width:1800px;padding:0 1.5rem;color:#1b1b1b;background:#fff;line-height:1.45}
h1{margin-bottom:.2rem}h2{margin-top:2.4rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.summary,.intro,.legend{color:#444;font-size:.92rem}.legend{max-width:70rem}
.scroll{overflow-x:auto;margin:.6rem 0}
table.leaderboard{border-collapse:collapse;font-size:.85rem;white-space:nowrap}
table.leaderboard th,table.leaderboard td{border:1px solid #d6d6d6;padding:.25rem .55rem;text-align:left}
table.leaderboard th{background:#f2f4f7;position:sticky;top:0}
table.leaderboard td.num,table.leaderboard th.num{text-align:right;font-variant-numeric:tabular-nums}
table.leaderboard tr:nth-child(even) td{background:#fafafa}
table.leaderboard tbody tr td.best{font-weight:700;background:#e7f5e9}
table.older{opacity:.85}
figure.plot{margin:1rem 0}figure.plot img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555}
details{margin:.5rem 0 1rem}details pre{background:#f6f8fa;padding:.6rem;overflow-x:auto;font-size:.8rem}
code{background:#f3f3f3;padding:0 .2rem;border-radius:3px}
#empty{font-size:1.1rem;padding:1rem;border:1px dashed #aaa}
"""

CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.querySelectorAll("img.plot-image"), decoded = 0;
  images.forEach(function (im) { if (im.complete && im.naturalWidth > 0) { decoded += 1; } });
  var el = document.getElementById("page-check");
  el.setAttribute("data-tables", String(document.querySelectorAll("table.leaderboard").length));
  el.setAttribute("data-images", String(images.length));
  el.setAttribute("data-images-decoded", String(decoded));
  el.setAttribute("data-loaded", "yes");
});
"""


def _inline_md(text: str) -> str:
    """The legend's markdown (`code`, **bold**) as HTML."""
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def png_size(png: bytes) -> tuple[int, int]:
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise WsbenchError("leaderboard plot is not a PNG")
    return struct.unpack(">II", png[16:24])


def html_table(grid: Grid, css_class: str) -> str:
    def th(c) -> str:
        attrs = (' class="num"' if c.numeric else "") + (f' title="{html.escape(c.title)}"' if c.title else "")
        return f"<th{attrs}>{html.escape(c.text)}</th>"

    def td(c) -> str:
        classes = " ".join(k for k, on in (("num", c.numeric), ("best", c.bold)) if on)
        attrs = (f' class="{classes}"' if classes else "") + (f' title="{html.escape(c.title)}"' if c.title else "")
        return f"<td{attrs}>{html.escape(c.text)}</td>"

    head = "<tr>" + "".join(th(c) for c in grid.headers) + "</tr>"
    body = "\n".join("<tr>" + "".join(td(c) for c in row) + "</tr>" for row in grid.rows)
    return f'<div class="scroll"><table class="{css_class}">\n<thead>{head}</thead>\n<tbody>\n{body}\n</tbody></table></div>'


def html_provenance(prov: Provenance) -> str:
    n = len(prov.commands)
    commands = html.escape("\n".join(prov.commands))
    return (f"<details><summary>How these numbers were made ({n} command{'s' * (n != 1)})</summary>\n"
            f"<pre>{commands}</pre>\n<p>Presets: {html.escape(', '.join(prov.presets))}. "
            f"Devices: {html.escape(', '.join(prov.devices))}. "
            f"Commits: {', '.join(f'<code>{html.escape(c)}</code>' for c in prov.commits)}. "
            f"Record dates: {html.escape(prov.first_date)} to {html.escape(prov.last_date)}.</p>\n</details>"
            + (f'\n<p class="warning"><strong>{html.escape(prov.mixed_zoos)}</strong></p>' if prov.mixed_zoos else "")
            + html_preset_notes(prov))


def html_preset_notes(prov: Provenance) -> str:
    if not prov.preset_notes:
        return ""
    items = "".join(f"<li><code>{html.escape(n)}</code>: {html.escape(t)}</li>" for n, t in prov.preset_notes)
    return f'\n<p class="presets">Presets:</p><ul class="presets">{items}</ul>'



def html_plot(plot: "Plot") -> str:
    width, height = png_size(plot.png)
    data = base64.b64encode(plot.png).decode("ascii")
    return (f'<figure class="plot"><img class="plot-image" src="data:image/png;base64,{data}" '
            f'alt="{html.escape(plot.title)}" width="{width}" height="{height}">'
            f"<figcaption>{html.escape(plot.caption)}</figcaption></figure>")


def render_html(tables: Sequence[Table], plots: Sequence["Plot"], source: str, n_records: int,
                parity: Sequence[tuple[str, str]] = (), perf: Sequence[tuple[str, str, str | None]] = (),
                matrices: Sequence[TransferMatrix] = ()) -> str:
    """The whole index.html; `parity`: (relative path, title) of the parity reports; `perf`:
    (relative path, title, figure or None) of the performance reports (figures linked, not embedded);
    `matrices`: the transfer matrices drawn from the tables."""
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{TITLE}</title><style>{CSS}</style></head><body>", f"<h1>{TITLE}</h1>",
             f'<p class="intro">Generated by <code>run_bench.py leaderboard</code> from <code>{esc(source)}/*.jsonl</code> '
             f"({n_records} records). Derived from the result records; do not edit by hand.</p>"]
    if not tables:
        parts.append(f'<p id="empty">No result records yet: <code>{esc(source)}/</code> has no <code>*.jsonl</code> '
                     "records. Run a benchmark (<code>run_bench.py run ...</code>), then "
                     "<code>run_bench.py leaderboard</code>.</p>")
    else:
        parts.append(f'<p class="legend">{_inline_md(LEGEND)}</p>')
        parts.append("<nav><h2>Contents</h2><ul>" + "".join(
            f'<li><a href="#{t.slug}">{esc(t.title)}</a></li>' for t in [*tables, *matrices]) + "</ul></nav>")
        if parity:
            parts.append('<p class="parity">Parity with the original implementations: ' + ", ".join(
                f'<a href="{esc(path)}">{esc(title)}</a>' for path, title in parity) + "</p>")
    by_table: dict[str, list[Plot]] = {}
    for plot in plots:
        by_table.setdefault(plot.table_slug, []).append(plot)
    for t in tables:
        parts += [f'<section class="board" id="{t.slug}">', f"<h2>{esc(t.title)}</h2>",
                  f'<p class="summary">{esc(summary_line(t, t.provenance))}</p>',
                  html_table(table_grid(t), "leaderboard")]
        parts += [html_plot(p) for p in by_table.get(t.slug, [])]
        parts.append(html_provenance(t.provenance))
        if t.older_rows and t.older_provenance:
            parts += [f"<h3>Older versions ({esc(t.title)})</h3>",
                      f'<p class="summary">{esc(summary_line(t, t.older_provenance, older=True))}. '
                      f"{esc(OLDER_NOTE)}</p>",
                      html_table(table_grid(t, older=True), "leaderboard older"), html_provenance(t.older_provenance)]
        parts.append("</section>")
    for m in matrices:
        sources = ", ".join(f'<a href="#{esc(slug)}">{esc(slug)}</a>' for slug in m.source_slugs)
        parts += [f'<section class="board matrix" id="{esc(m.slug)}">', f"<h2>{esc(m.title)}</h2>",
                  f'<p class="summary">{esc(MATRIX_INTRO)}</p>', html_table(matrix_grid(m), "leaderboard matrix"),
                  f'<p class="summary">{esc(wins_line(m))}</p>', f'<p class="summary">Commands and provenance: {sources}.</p>',
                  "</section>"]
    if perf:
        parts.append('<section class="perf" id="performance"><h2>Performance on the machines that ran it</h2>')
        for path, title, figure in perf:
            parts.append(f'<p><a href="{esc(path)}">{esc(title)}</a></p>')
            if figure:
                parts.append(f'<figure><img class="perf-image" src="{esc(figure)}" alt="{esc(title)}"></figure>')
        parts.append("</section>")
    parts += ['<div id="page-check" hidden></div>', f"<script>{CHECK_SCRIPT}</script>", "</body></html>", ""]
    return "\n".join(parts)


# ---------------------------------------------------------------- headless browser check

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars")


@dataclass(frozen=True)
class BrowserCheck:
    """What Chromium saw: tables, plot images and how many of them decoded."""

    loaded: bool
    tables: int
    images: int
    images_decoded: int
    sections: int
    empty_notice: bool


class _DomCounter(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.check: dict[str, str] = {}
        self.tables = self.images = self.sections = 0
        self.empty_notice = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        self.tables += tag == "table" and "leaderboard" in classes
        self.images += tag == "img" and "plot-image" in classes
        self.sections += tag == "section" and "board" in classes
        self.empty_notice |= a.get("id") == "empty"
        if a.get("id") == "page-check":
            self.check = a


def page_counts(page_html: str) -> tuple[int, int, int]:
    """(leaderboard tables, plot images, board sections) in the HTML text itself, for comparison
    with what the browser reports."""
    counter = _DomCounter()
    counter.feed(page_html)
    return counter.tables, counter.images, counter.sections


def find_chromium() -> str | None:
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run_chromium(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    binary = find_chromium()
    if binary is None:
        raise WsbenchError("no Chromium found (looked for " + ", ".join(BROWSER_NAMES) + "); "
                           "install it with .ci/install-browser.sh")
    with tempfile.TemporaryDirectory(prefix="wsbench-chromium-") as profile:
        cmd = [binary, *BROWSER_FLAGS, f"--user-data-dir={profile}", *args]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise WsbenchError(f"Chromium did not finish within {timeout:.0f} s: {' '.join(cmd)}") from None


def check_in_browser(index_html: str | os.PathLike, timeout: float = 120.0) -> BrowserCheck:
    """Load the page in headless Chromium and count what its DOM holds after the load event."""
    url = Path(index_html).resolve().as_uri()
    proc = _run_chromium(["--virtual-time-budget=5000", "--dump-dom", url], timeout)
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise WsbenchError(f"Chromium could not load {url} (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    counter = _DomCounter()
    counter.feed(proc.stdout)
    c = counter.check
    return BrowserCheck(c.get("data-loaded") == "yes", int(c.get("data-tables", "0")), int(c.get("data-images", "0")),
                        int(c.get("data-images-decoded", "0")), counter.sections, counter.empty_notice)


def screenshot(index_html: str | os.PathLike, out_png: str | os.PathLike, width: int = 1400, height: int = 2400,
               timeout: float = 120.0) -> Path:
    """Screenshot of the page (the first width x height pixels), written atomically."""
    out = Path(out_png).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.png")
    url = Path(index_html).resolve().as_uri()
    proc = _run_chromium([f"--screenshot={tmp}", f"--window-size={width},{height}", "--virtual-time-budget=5000", url],
                         timeout)
    if proc.returncode != 0 or not tmp.exists() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        raise WsbenchError(f"Chromium made no screenshot of {url} (exit {proc.returncode}): "
                           f"{proc.stderr.strip()[-500:]}")
    os.replace(tmp, out)
    return out
