"""`/readyz` in-process: it compares the database's revision with the migration head read once at
start, not with the migration scripts read again on every call."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from rewardmiles.app import create_app
from rewardmiles.config import Settings
from rewardmiles.db import migrate
from rewardmiles.db.engine import Database
from tests.conftest import TEST_SECRET_KEY, DatabaseFactory


def test_readyz_does_not_read_the_migration_scripts_per_call_and_still_sees_a_stale_database(
    dialect: str, database_factory: DatabaseFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = database_factory.create(dialect)
    app = create_app(
        Settings(
            database_url=url,
            embedded_worker=False,
            log_level="warning",
            secret_key=TEST_SECRET_KEY,
        )
    )
    reads = []
    original = ScriptDirectory.from_config

    def counted(*args: object, **kwargs: object) -> ScriptDirectory:
        reads.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    head = migrate.head_revision()
    db = Database.from_url(url)

    async def scenario() -> tuple[list[int], int]:
        async with app.router.lifespan_context(app):
            monkeypatch.setattr(ScriptDirectory, "from_config", counted)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ready") as client:
                statuses = [(await client.get("/readyz")).status_code for _ in range(20)]
                with db.engine.begin() as conn:
                    conn.execute(text("UPDATE alembic_version SET version_num = 'older'"))
                stale = await client.get("/readyz")
                assert "Migrations are not current" in stale.json()["detail"]
                return statuses, stale.status_code

    try:
        statuses, stale = asyncio.run(scenario())
    finally:
        with db.engine.begin() as conn:
            conn.execute(
                text("UPDATE alembic_version SET version_num = :head"),
                {"head": head},
            )
        db.dispose()
    assert statuses == [200] * 20
    assert reads == [], f"the migration scripts were read {len(reads)} times by 20 calls"
    assert stale == 503
