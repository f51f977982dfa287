"""The README's first steps work for a newcomer: another port, a fresh demo database."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_readme_says_how_to_serve_on_another_port() -> None:
    assert re.search(r"make run PORT=\d+", README)
    run = re.search(r"^run:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert run, "Makefile has no run target"
    assert "--port $(PORT)" in run.group(1)


def test_readme_says_how_to_start_from_a_fresh_demo_database() -> None:
    assert "rm -f rewardmiles.db rewardmiles.db-wal rewardmiles.db-shm" in README
    assert "fresh demo database" in README
    # The development key is written beside the database (docs/operations.md): it goes too.
    assert "rm -f rewardmiles.db rewardmiles.db-wal rewardmiles.db-shm rewardmiles.db.key" in README
