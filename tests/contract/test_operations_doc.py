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


def test_metrics_are_said_to_be_served_and_nowhere_said_not_to_be() -> None:
    text = " ".join(DOC.read_text().split())
    assert "`/metrics` is not served" not in text
    assert "`GET /metrics` answers the Prometheus text format" in " ".join(
        _section("Metrics").split()
    )


def test_the_retention_section_names_every_retention_setting_and_what_is_never_purged() -> None:
    section = _section("Retention")
    names = [ENV_PREFIX + name.upper() for name in Settings.model_fields if "retention" in name]
    assert len(names) >= 2
    assert [
        n.removeprefix(ENV_PREFIX) for n in names if n.removeprefix(ENV_PREFIX) not in section
    ] == []
    for table in ("webhook deliveries", "batch_records", "ledger entries"):
        assert table in section


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
