"""examples/partner_walkthrough.py runs green against a server seeded with the demo data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rewardmiles import clock, demo
from rewardmiles.db.engine import Database
from tests.conftest import DatabaseFactory, ServerFactory
from tests.support.operators import COST

ROOT = Path(__file__).resolve().parents[2]


def test_partner_walkthrough_example(
    dialect: str, database_factory: DatabaseFactory, server_factory: ServerFactory
) -> None:
    url = database_factory.create(dialect)
    db = Database.from_url(url)
    try:
        with db.unit_of_work() as session:
            demo.seed(session, clock.utc_now(), secret_hash_cost=10, password_cost=COST)
    finally:
        db.dispose()
    server = server_factory(dialect, database_url=url)
    result = subprocess.run(
        [sys.executable, "examples/partner_walkthrough.py", "--base-url", server.base_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: 8 issued, 3 reversed" in result.stdout
