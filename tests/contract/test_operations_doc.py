"""docs/operations.md tells an operator what the service does today, no more and no less."""

from __future__ import annotations

import re
from pathlib import Path

from rewardmiles.config import ENV_PREFIX, Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _section(title: str) -> str:
    text = DOC.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"docs/operations.md has no '## {title}' section"
    return match.group(1)


def test_rate_limiting_is_not_called_unbuilt() -> None:
    text = " ".join(DOC.read_text().split()).lower()
    for sentence in re.split(r"(?<=\.) ", text):
        if "not yet built" in sentence or "not built" in sentence:
            assert "429" not in sentence, sentence
            assert "rate limit" not in sentence, sentence


def test_metrics_are_said_not_to_be_served() -> None:
    text = " ".join(DOC.read_text().split())
    assert "`/metrics` is not served" in text


def test_the_rate_limit_section_names_every_rate_limit_setting() -> None:
    section = _section("Rate limits")
    names = [
        ENV_PREFIX + name.upper()
        for name in Settings.model_fields
        if "rate_limit" in name or name.startswith("redis_")
    ]
    assert len(names) >= 5
    assert [n for n in names if n not in section] == []
    for fact in ("429", "RATE_LIMITED", "Retry-After", "/oauth/token", "GCRA"):
        assert fact in section
