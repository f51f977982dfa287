"""The unit of work's pool (PostgreSQL) replaces, at checkout, a connection the server closed
while it sat in the pool — a restart, a failover, an ended session: `pg_terminate_backend` here
— so no request is given it; a connection the server keeps is kept, even when the server has
sent it something meanwhile. (The one-statement path's pool: tests/integration/
test_one_statement_issue.py.)"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import select, text

from rewardmiles.db.engine import Database
from rewardmiles.db.models import Sponsor
from tests.conftest import DatabaseFactory
from tests.support.sessions import backend_pid, client_socket, end_sessions

pytestmark = pytest.mark.postgres_only

NOW = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def url(dialect: str, database_factory: DatabaseFactory) -> str:
    return database_factory.create(dialect)


@pytest.fixture
def db(url: str) -> Iterator[Database]:
    database = Database.from_url(url, pool_size=2)
    yield database
    database.dispose()


def test_connections_the_server_ended_are_replaced_before_a_unit_of_work_gets_one(
    db: Database,
) -> None:
    with db.engine.connect() as first, db.engine.connect() as second:
        pids = [backend_pid(first), backend_pid(second)]  # both in the pool now
        sockets = [client_socket(first), client_socket(second)]
    end_sessions(pids, sockets)
    code = "P" + secrets.token_hex(4).upper()

    with db.unit_of_work() as session:  # no error: it never gets an ended one
        session.add(Sponsor(code=code, name=code, active=True, created_at=NOW))

    with db.reader() as session:
        assert session.scalars(select(Sponsor.code).where(Sponsor.code == code)).all() == [code]
    with db.engine.connect() as first, db.engine.connect() as second:
        assert {backend_pid(first), backend_pid(second)}.isdisjoint(pids)


def test_a_connection_the_server_keeps_is_kept_even_if_it_was_sent_something(
    db: Database,
) -> None:
    with db.engine.connect() as conn:
        pid = backend_pid(conn)
        conn.execute(text("LISTEN rewardmiles_test"))
        conn.commit()
    notifier = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(notifier, autocommit=True) as other:
        other.execute("NOTIFY rewardmiles_test")  # arrives at the idle connection
    time.sleep(0.1)

    with db.engine.connect() as conn:
        assert backend_pid(conn) == pid
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
