#!/usr/bin/env python3
"""Check the leaderboard page in headless Chromium and commit-ready screenshot it.

    .venv/bin/python scripts/screenshot_leaderboard.py [--regenerate] [--out-dir leaderboards]

Loads <out-dir>/index.html in Chromium, checks that the browser sees every table and plot the
file holds and that every plot image decoded, then writes <out-dir>/screenshot.png.
Exit 0: page fine; 1: the check failed; 2: no Chromium or no page (see .ci/install-browser.sh).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsbench.errors import WsbenchError  # noqa: E402
from wsbench.leaderboard import generate_leaderboard  # noqa: E402
from wsbench.leaderboard.html_page import check_in_browser, page_counts, screenshot  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="leaderboards", help="folder with index.html (default: leaderboards)")
    parser.add_argument("--results-dir", default=None, help="records to regenerate from (default: <out-dir>/results)")
    parser.add_argument("--regenerate", action="store_true", help="run generate_leaderboard first")
    parser.add_argument("--screenshot", default=None, help="PNG to write (default: <out-dir>/screenshot.png)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    page = out_dir / "index.html"
    try:
        if args.regenerate:
            generate_leaderboard(args.results_dir or out_dir / "results", out_dir)
        if not page.is_file():
            raise WsbenchError(f"{page} does not exist; run `run_bench.py leaderboard` (or pass --regenerate)")
        tables, images, sections = page_counts(page.read_text(encoding="utf-8"))
        seen = check_in_browser(page)
        shot = screenshot(page, args.screenshot or out_dir / "screenshot.png", args.width, args.height)
    except WsbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problems = []
    if not seen.loaded:
        problems.append("the page's load handler never ran")
    if seen.tables != tables:
        problems.append(f"browser sees {seen.tables} tables, the file has {tables}")
    if seen.images != images or seen.images_decoded != images:
        problems.append(f"{seen.images_decoded} of {images} plot images decoded (browser found {seen.images})")
    if sections == 0 and not seen.empty_notice:
        problems.append("no leaderboard and no 'no records' notice")
    print(f"{page}: {seen.tables} tables, {seen.images_decoded}/{images} plots decoded, {sections} boards; "
          f"screenshot {shot}")
    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
