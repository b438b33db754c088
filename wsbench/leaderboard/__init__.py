"""Leaderboards derived from result records only (see tables.py for the rules): the table model
(tables), its renderers (markdown, html_page, plots) and the writer of the folder (generate)."""
from __future__ import annotations

from .generate import check_leaderboard_output, generate_leaderboard, parity_reports
from .tables import TITLE, Provenance, Row, Stat, Table, build_tables, config_labels, version_key

__all__ = ["TITLE", "Provenance", "Row", "Stat", "Table", "build_tables", "check_leaderboard_output", "config_labels",
           "generate_leaderboard", "parity_reports", "version_key"]
