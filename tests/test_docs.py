"""The README and docs/ stay true: every test they cite exists, every link they make leads somewhere."""

from __future__ import annotations

import re

from helpers import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_test_the_docs_cite_exists():
    defined = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", path.read_text(), re.M))
    for page in PAGES:
        cited = set(re.findall(r"`(test_\w+)(?:\[[^\]]*\])?`", page.read_text()))
        assert cited <= defined, f"{page.name} cites tests that do not exist: {sorted(cited - defined)}"


def test_every_link_in_the_docs_leads_to_a_file_of_the_project():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
