"""The `postgres_only` marker is enforced by the suite (tests/conftest.py), not by each test: a
test carrying it is skipped where the dialect is SQLite, before any of its fixtures is set up."""

from __future__ import annotations

import pytest


@pytest.mark.postgres_only
def test_a_test_marked_postgres_only_runs_on_postgresql_only(dialect: str) -> None:
    assert dialect == "postgresql"
