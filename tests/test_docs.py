"""The README is an entry point and the docs say what is: the README leads with the two
commands and stays short, every relative link resolves, and the pages speak of the product,
not of the history of its making (dates appear only as data in result rows)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HISTORY = re.compile(r"\bsessions?\b|\bissues? ?#?\d+|\bthe issue\b", re.I)
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")  # a date is data in a result row, nowhere else
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_readme_leads_with_the_two_commands_and_is_short():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    first_block = text.split("```")[1]
    assert "make run" in first_block and "make test" in first_block


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path):
    missing = [
        target
        for target in LINK.findall(page.read_text())
        if not re.match(r"[a-z]+://|mailto:", target) and not (page.parent / target).exists()
    ]
    assert missing == [], f"{page.name}: links to missing files {missing}"


def _history(line: str) -> bool:
    return bool(HISTORY.search(line) or (DATE.search(line) and not line.startswith("|")))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_pages_speak_of_the_product_not_its_history(page: Path):
    hits = [line for line in page.read_text().splitlines() if _history(line)]
    assert hits == [], f"{page.name}: {hits[:3]}"


def test_the_history_check_finds_history():
    for line in ("the second session", "fixed in issue 16", "since 2026-12-02", "as the issue"):
        assert _history(line), line
    assert not _history("a sessionless flow at R = 0.6 (seed 2)")
    assert not _history("| kprune 25d66b52604e | 2026-12-02 | 0.6 | 0.8400 |")  # a result row
