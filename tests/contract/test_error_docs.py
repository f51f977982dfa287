"""docs/errors.md publishes every catalogue code with its HTTP status."""

from __future__ import annotations

from pathlib import Path

from rewardmiles.errors import PROBLEM_CODES

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def test_every_code_is_documented_with_its_status() -> None:
    rows = {
        line.split("|")[1].strip().strip("`"): line.split("|")[2].strip()
        for line in DOC.read_text().splitlines()
        if line.startswith("| `")
    }
    assert {code: str(spec.status) for code, spec in PROBLEM_CODES.items()} == rows
