"""`/readyz` in-process: it compares the database's revision with the migration head read once at
start, not with the migration scripts read again on every call."""

from __future__ import annotations

import asyncio

import httpx
import psycopg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import make_url

from rewardmiles.db import migrate
from rewardmiles.db.engine import Database
from tests.conftest import PG_ADMIN_URL, DatabaseFactory
from tests.support.apps import in_process_app
from tests.support.sessions import client_socket, end_sessions, sessions_of


def test_readyz_does_not_read_the_migration_scripts_per_call_and_still_sees_a_stale_database(
    dialect: str, database_factory: DatabaseFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = database_factory.create(dialect)
    app = in_process_app(url)
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


@pytest.mark.postgres_only
def test_readyz_is_503_while_the_database_takes_no_writes_and_recovers_by_itself(
    dialect: str, database_factory: DatabaseFactory
) -> None:
    """A failover's old primary, as the API sees it: the database's sessions become read only
    (new ones by setting; the pool's old ones ended by the server). `/readyz` answers 503 while
    so, and 200 again once the database takes writes — on the probe's own: the connections
    opened while read only stay read only, so the probe empties the pool, and no partner write
    has to fail first."""
    url = database_factory.create(dialect)
    name = make_url(url).database
    app = in_process_app(url)

    def read_only(on: bool) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            setting = "SET default_transaction_read_only = on" if on else "RESET ALL"
            admin.execute(f'ALTER DATABASE "{name}" {setting}')

    async def scenario() -> list[tuple[int, str]]:
        answers = []
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ready") as client:

                async def probe() -> None:
                    answer = await client.get("/readyz")
                    answers.append((answer.status_code, answer.json().get("detail", "")))

                await probe()
                read_only(True)
                with app.state.ctx.db.engine.connect() as pooled:  # the probe's, in the pool
                    sockets = [client_socket(pooled)]
                end_sessions(sessions_of(str(name)), sockets)
                # Connections opened meanwhile by other requests, back in the pool, read only.
                opened = [app.state.ctx.db.engine.connect() for _ in range(3)]
                for conn in opened:
                    conn.execute(text("SELECT 1"))
                    conn.close()
                await probe()
                await probe()
                read_only(False)
                await probe()
        return answers

    try:
        answers = asyncio.run(scenario())
    finally:
        read_only(False)
    assert [status for status, _ in answers] == [200, 503, 503, 200]
    assert answers[1][1] == "The database takes no writes (a failover under way?)."
