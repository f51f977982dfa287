"""A server that refuses writes (SQLSTATE 25006, read_only_sql_transaction), as a failover's old
primary does, seen by each way the service writes: the unit of work (SQLAlchemy's pool), its
pipelined writes, and the one-statement path's pool. The refusal is an outage (`is_outage`: the
API answers 503), nothing is written, and the connection is dropped with those opened before it,
so the next write connects afresh and succeeds once the server takes writes again.

Connections are made read only one by one (`SET SESSION CHARACTERISTICS AS TRANSACTION READ
ONLY`), the database's other connections untouched.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from rewardmiles.db.engine import (
    Database,
    batched_writes,
    is_outage,
    refused_as_read_only,
    write,
)
from rewardmiles.db.models import Sponsor
from tests.conftest import DatabaseFactory
from tests.support.sessions import backend_pid

pytestmark = pytest.mark.postgres_only

NOW = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)
READ_ONLY = "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"
# A write that changes nothing: a server that takes no writes refuses it all the same.
NO_OP_WRITE = b"UPDATE sponsors SET name = name WHERE false RETURNING 1"


@pytest.fixture(scope="module")
def url(dialect: str, database_factory: DatabaseFactory) -> str:
    return database_factory.create(dialect)


@pytest.fixture
def db(url: str) -> Iterator[Database]:
    database = Database.from_url(url, pool_size=2)
    yield database
    database.dispose()


def _code() -> str:
    return "R" + secrets.token_hex(4).upper()


def _add_sponsor(db: Database, code: str) -> None:
    with db.unit_of_work() as session:
        session.add(Sponsor(code=code, name=code, active=True, created_at=NOW))


def _stored(db: Database, *codes: str) -> list[str]:
    with db.reader() as session:
        return sorted(session.scalars(select(Sponsor.code).where(Sponsor.code.in_(codes))))


def _assert_refused_as_an_outage(refused: pytest.ExceptionInfo[DBAPIError]) -> None:
    assert refused_as_read_only(refused.value)
    assert is_outage(refused.value)
    assert refused.value.connection_invalidated


def test_a_unit_of_work_refused_drops_its_connection_and_those_opened_before(
    db: Database,
) -> None:
    with db.engine.connect() as writable, db.engine.connect() as read_only:
        pids = {backend_pid(writable), backend_pid(read_only)}
        read_only.execute(text(READ_ONLY))
        read_only.commit()
        read_only.close()  # first back in the pool: the next checkout takes it
    code = _code()

    with pytest.raises(DBAPIError) as refused:
        _add_sponsor(db, code)

    _assert_refused_as_an_outage(refused)
    assert _stored(db, code) == []
    with db.engine.connect() as first, db.engine.connect() as second:
        assert {backend_pid(first), backend_pid(second)}.isdisjoint(
            pids
        )  # neither old connection is reused
    _add_sponsor(db, code)
    assert _stored(db, code) == [code]


class AddSponsor:
    """Work for `run_in_unit_of_work`: adds the sponsor `code`, recording each attempt."""

    def __init__(self) -> None:
        self.code = _code()
        self.attempts: list[int] = []

    def __call__(self, session: Session, attempt: int) -> str:
        self.attempts.append(attempt)
        session.add(Sponsor(code=self.code, name=self.code, active=True, created_at=NOW))
        session.flush()
        return self.code


def test_work_refused_on_a_connection_left_read_only_runs_again_on_a_new_one(
    db: Database,
) -> None:
    with db.engine.connect() as left_read_only:  # opened while the server took no writes
        left_read_only.execute(text(READ_ONLY))
        left_read_only.commit()
    work = AddSponsor()

    assert db.run_in_unit_of_work(work) == work.code

    assert work.attempts == [1, 1]  # the same attempt again, not a lost unique race
    assert _stored(db, work.code) == [work.code]


def test_work_refused_twice_is_an_outage_and_writes_nothing(db: Database) -> None:
    connects = 0

    def read_only_session(dbapi_connection: Any, _record: Any) -> None:
        nonlocal connects
        connects += 1
        with dbapi_connection.cursor() as cursor:
            cursor.execute(READ_ONLY)
        dbapi_connection.commit()

    event.listen(db.engine, "connect", read_only_session)  # the server takes no writes
    work = AddSponsor()
    try:
        with pytest.raises(DBAPIError) as refused:
            db.run_in_unit_of_work(work)
    finally:
        event.remove(db.engine, "connect", read_only_session)

    _assert_refused_as_an_outage(refused)
    assert work.attempts == [1, 1]
    assert connects == 2  # each attempt on a new connection
    assert _stored(db, work.code) == []
    work = AddSponsor()
    assert db.run_in_unit_of_work(work) == work.code  # it takes writes again: at once
    assert work.attempts == [1]


def _add_in_a_pipeline(db: Database, codes: list[str], pids: list[int]) -> None:
    """Add sponsors `codes` by writes sent together (`batched_writes`), in a read-only
    transaction; its connection's backend pid goes to `pids`."""
    with db.unit_of_work() as session:
        pids.append(backend_pid(session.connection()))
        session.execute(text("SET TRANSACTION READ ONLY"))
        with batched_writes(session):
            for code in codes:
                values = {"code": code, "name": code, "active": True, "created_at": NOW}
                write(session, insert(Sponsor), values)


def test_writes_refused_in_a_pipeline_drop_their_connection(db: Database) -> None:
    codes = [_code(), _code()]
    pids: list[int] = []
    with pytest.raises(DBAPIError) as refused:
        _add_in_a_pipeline(db, codes, pids)

    _assert_refused_as_an_outage(refused)
    assert _stored(db, *codes) == []
    with db.engine.connect() as conn:
        assert backend_pid(conn) not in pids


def test_a_statement_refused_closes_the_pools_connections_and_the_next_connects_afresh(
    db: Database,
) -> None:
    pool = db.statement_pool(2)
    assert pool is not None

    async def scenario() -> None:
        async with pool.connection() as read_only, pool.connection() as idle:
            pids = {read_only.info.backend_pid, idle.info.backend_pid}
            await read_only.execute(READ_ONLY.encode())
        with pytest.raises(DBAPIError) as refused:
            await pool.run(NO_OP_WRITE, [])  # takes the read-only one (the last returned)
        assert refused_as_read_only(refused.value)
        assert is_outage(refused.value)
        async with pool.connection() as fresh:
            assert fresh.info.backend_pid not in pids  # the idle one was closed too
        assert await pool.run(NO_OP_WRITE, []) == []
        await pool.close()

    asyncio.run(scenario())
