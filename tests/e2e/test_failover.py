"""PostgreSQL failover as a partner sees it, through a real server.

- A URL may name several servers; libpq tries them in turn, and with
  `target_session_attrs=read-write` takes the first that accepts writes. Here the first is a
  closed port: the server starts (migrations, keys), issues and answers lookups through the
  second, in each of the three ways the servers may be written.
- A connection the database closed while it sat in a pool (a restart or a failover ends every
  session) is replaced before a call is given it: the calls after the restart cost nothing.
- A server that takes no writes (SQLSTATE 25006, read_only_sql_transaction: a failover's old
  primary, now a standby or fenced off) is an outage: every write is answered 503
  `SERVICE_UNAVAILABLE` with `Retry-After`, never 500, and writes nothing; once the database
  takes writes again, the partner's retry with the same key is applied, once, without a restart.
  The database's new sessions are made read only (`ALTER DATABASE … SET
  default_transaction_read_only`) and its open ones ended, as a failover ends them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from rewardmiles.db.engine import Database
from rewardmiles.db.models import IdempotencyKey, Transaction
from tests.conftest import PG_ADMIN_URL, DatabaseFactory, ServerFactory
from tests.support import data
from tests.support.partner import Partner
from tests.support.problems import assert_problem
from tests.support.servers import FORMS, two_servers
from tests.support.sessions import end_sessions, sessions_of, wait_until_closed_by_server

pytestmark = pytest.mark.postgres_only


def _statements_sent(base_url: str) -> float:
    """How many statements the group commit has sent (the one-statement path), from /metrics."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    match = re.search(r"^rewardmiles_group_commit_batch_size_count (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize("form", FORMS)
def test_a_server_that_is_down_is_passed_over_for_the_next(
    dialect: str, database_factory: DatabaseFactory, server_factory: ServerFactory, form: str
) -> None:
    url = database_factory.create("postgresql")
    db = Database.from_url(url)
    sponsor, client_id, secret, collector = data.new_partner(db)
    server = server_factory("postgresql", database_url=two_servers(url, form))
    partner = Partner(server.base_url, client_id, secret)
    try:
        # The process's first call runs as a unit of work (the synchronous pool) and caches the
        # sponsor; the next is written by the one-statement path (the asynchronous pool).
        for miles, statements in ((7, 0), (5, 1)):
            body = data.event_body(sponsor, collector, miles=miles)
            posted = partner.post_event(body, key=str(uuid.uuid4()))
            assert posted.status_code == 200, posted.text
            assert _statements_sent(server.base_url) == statements
        found = partner.http.get(
            f"/checkout/issuance/transactions/{posted.json()['transactionId']}",
            headers={"Authorization": f"Bearer {partner.token}"},
        )
        assert found.status_code == 200, found.text
        assert found.json()["clientTransactionId"] == body["clientTransactionId"]
        assert data.balance(db, collector) == 12
        assert "database_error" not in server.log()
    finally:
        partner.close()
        db.dispose()


def test_sessions_the_database_ended_cost_no_call(
    dialect: str, database_factory: DatabaseFactory, server_factory: ServerFactory
) -> None:
    url = database_factory.create("postgresql")
    db = Database.from_url(url)
    sponsor, client_id, secret, collector = data.new_partner(db)
    db.dispose()
    server = server_factory("postgresql", database_url=url)
    partner = Partner(server.base_url, client_id, secret)
    try:
        for miles in (1, 2):  # a unit of work, then a statement: both pools hold connections
            assert partner.post_event(data.event_body(sponsor, collector, miles=miles)).is_success
        end_sessions(sessions_of(str(make_url(url).database)))  # a restart, as the API sees it
        wait_until_closed_by_server(server.process.pid)

        posted = partner.post_event(data.event_body(sponsor, collector, miles=3))
        found = partner.http.get(
            f"/checkout/issuance/transactions/{posted.json().get('transactionId')}",
            headers={"Authorization": f"Bearer {partner.token}"},
        )

        assert posted.status_code == 200, posted.text
        assert found.status_code == 200, found.text
        assert _statements_sent(server.base_url) == 2
        assert "database_error" not in server.log()
    finally:
        partner.close()


@contextmanager
def _read_only(url: str) -> Iterator[None]:
    """The database of `url` takes no writes in its new sessions until the block ends; the
    sessions open now (a server's pooled connections) are ended first, as a failover ends
    them. Sessions opened inside the block stay read only after it, as a standby's do."""
    name = make_url(url).database
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        try:
            end_sessions(sessions_of(str(name)))
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')


def _stored(url: str, body: dict[str, Any], client_id: str) -> tuple[int, int]:
    """(transactions of `body`'s id, idempotency keys of `client_id`), read afresh."""
    db = Database.from_url(url, pool_size=1)
    try:
        with db.reader() as session:
            transactions = session.execute(
                select(func.count()).where(
                    Transaction.partner_transaction_id == body["clientTransactionId"]
                )
            ).scalar_one()
            keys = session.execute(
                select(func.count()).where(IdempotencyKey.client_id == client_id)
            ).scalar_one()
    finally:
        db.dispose()
    return int(transactions), int(keys)


@pytest.mark.parametrize("one_statement", [True, False], ids=["statement", "unit-of-work"])
def test_a_database_that_takes_no_writes_is_503_and_the_retry_lands_once_it_does(
    dialect: str,
    database_factory: DatabaseFactory,
    server_factory: ServerFactory,
    one_statement: bool,
) -> None:
    url = database_factory.create("postgresql")
    db = Database.from_url(url)
    sponsor, client_id, secret, collector = data.new_partner(db)
    db.dispose()
    server = server_factory(
        "postgresql",
        database_url=url,
        env={"REWARDMILES_ONE_STATEMENT_ISSUE": str(one_statement).lower()},
    )
    partner = Partner(server.base_url, client_id, secret)
    try:
        warm = partner.post_event(data.event_body(sponsor, collector, miles=1))
        assert warm.status_code == 200, warm.text  # the sponsor is cached: the path is chosen
        body = data.event_body(sponsor, collector, miles=9)
        key = str(uuid.uuid4())
        with _read_only(url):
            for _ in range(3):
                refused = partner.post_event(body, key=key)
                assert_problem(refused, 503, "SERVICE_UNAVAILABLE")
                assert refused.headers["retry-after"] == "1"
            assert _stored(url, body, client_id) == (0, 1)  # only the warm-up's key
            assert "ReadOnlySqlTransaction" in server.log()  # refused as read only, not lost
        accepted = partner.post_event(body, key=key)
        assert accepted.status_code == 200, accepted.text
        assert partner.post_event(body, key=key).headers.get("idempotent-replayed") == "true"
        assert _stored(url, body, client_id) == (1, 2)
        # Each call after the warm-up (3 refused, the one applied, its replay) took the path
        # chosen: a statement each, or none.
        assert _statements_sent(server.base_url) == (5 if one_statement else 0)
        assert "request_failed" not in server.log(), "a refused write escaped as a 500"
    finally:
        partner.close()
