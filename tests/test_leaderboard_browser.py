"""The leaderboard page in a real headless Chromium: tables and plots are there and decode.

Skips when no Chromium is installed (install it with .ci/install-browser.sh).
"""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from test_leaderboard import sample_records, write_results
from wsbench.leaderboard import generate_leaderboard
from wsbench.leaderboard.html_page import check_in_browser, find_chromium, page_counts, screenshot

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason="no Chromium on PATH (chromium/chromium-browser); run .ci/install-browser.sh")


def test_browser_sees_every_table_and_decodes_every_plot(tmp_path: Path):
    generate_leaderboard(write_results(tmp_path / "results", sample_records()), tmp_path)
    page = tmp_path / "index.html"
    tables, images, sections = page_counts(page.read_text(encoding="utf-8"))
    assert (tables, images, sections) == (4, 3, 3)
    seen = check_in_browser(page)
    assert seen.loaded, "the page's load handler did not run"
    assert (seen.tables, seen.images, seen.images_decoded, seen.sections) == (tables, images, images, sections)
    assert not seen.empty_notice

    shot = screenshot(page, tmp_path / "screenshot.png", width=1000, height=1400)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1000, 1400)
    colours = image.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # not a blank page: text, table borders and plots


def test_browser_shows_the_empty_notice(tmp_path: Path):
    (tmp_path / "results").mkdir()  # an empty store (a missing one is refused)
    generate_leaderboard(tmp_path / "results", tmp_path)
    seen = check_in_browser(tmp_path / "index.html")
    assert seen.loaded and seen.empty_notice
    assert (seen.tables, seen.images, seen.sections) == (0, 0, 0)
