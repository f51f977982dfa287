"""docs/console.md, the operator's guide, covers every page of the console's navigation with a
section and a current screenshot (written by the browser tests: `make console-screenshots`)."""

from __future__ import annotations

import re
from pathlib import Path

from rewardmiles.console.web import NAVIGATION

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "console.md").read_text()


def test_every_page_of_the_navigation_has_a_section_with_a_screenshot() -> None:
    sections = dict(re.findall(r"^## ([^\n]+)\n(.*?)(?=^## |\Z)", GUIDE, re.M | re.S))
    for _, label, _ in NAVIGATION:
        assert label in sections, f"docs/console.md has no section {label!r}"
        assert re.search(r"!\[[^\]]*\]\(console/[a-z-]+\.png\)", sections[label]), label


def test_every_screenshot_the_guide_shows_is_committed_and_every_committed_one_shown() -> None:
    shown = set(re.findall(r"\]\((console/[a-z-]+\.png)\)", GUIDE))
    committed = {f"console/{p.name}" for p in (ROOT / "docs" / "console").glob("*.png")}
    assert shown == committed
    assert "console/sign-in.png" in shown
