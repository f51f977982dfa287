"""Database faults under live traffic (PostgreSQL): the API answers 503 with Retry-After (never a
wrong 2xx, never a 500), recovers by itself, and retries with the same Idempotency-Key land once.

The database is taken away through a TCP proxy (`tests/support/tcpproxy.py`): every open
connection is reset and new ones are refused for a while, which is what a PostgreSQL restart looks
like from the API. A held row lock plus a short `statement_timeout` gives the timeout case.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from rewardmiles.db.engine import Database
from rewardmiles.db.models import Transaction
from tests.conftest import TEST_HASH_COST, DatabaseFactory, ServerFactory, assert_ledger_balanced
from tests.support import data
from tests.support.partner import POST_EVENT, fetch_token
from tests.support.problems import assert_problem
from tests.support.server import start_server
from tests.support.tcpproxy import TcpProxy

DEFINITIVE = {200, 201}
RETRYABLE = {503}
OUTAGE_SECONDS = 2.0


@pytest.fixture
def pg_only(dialect: str) -> None:
    if dialect != "postgresql":
        pytest.skip("database restarts and statement timeouts are PostgreSQL faults")


@dataclass
class Traffic:
    """Partners that retry every call with the same key and body until it is answered."""

    base_url: str
    token: str
    sponsor: str
    collectors: list[str]
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    acknowledged: dict[str, tuple[str, int]] = field(
        default_factory=dict
    )  # txn id → (collector, miles)
    unexpected: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def issue_once(self, http: httpx.Client, n: int) -> None:
        collector = self.collectors[n % len(self.collectors)]
        miles = 1 + n % 7
        body = data.event_body(self.sponsor, collector, miles=miles)
        headers = {"Authorization": f"Bearer {self.token}", "Idempotency-Key": str(uuid.uuid4())}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                response = http.post(POST_EVENT, json=body, headers=headers)
            except httpx.TransportError:
                with self.lock:
                    self.transport_errors += 1
                time.sleep(0.1)
                continue
            with self.lock:
                self.statuses[response.status_code] += 1
            if response.status_code in DEFINITIVE:
                with self.lock:
                    self.acknowledged[body["clientTransactionId"]] = (collector, miles)
                return
            if response.status_code not in RETRYABLE:
                with self.lock:
                    self.unexpected.append(f"{response.status_code} {response.text[:300]}")
                return
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "SERVICE_UNAVAILABLE"
            time.sleep(float(response.headers.get("retry-after", "1")) / 4)
        with self.lock:
            self.unexpected.append("no answer within 60 s")

    def run(self, worker: int) -> None:
        n = worker * 1_000_000
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            while not self.stop.is_set():
                self.issue_once(http, n)
                n += 1


def _via_proxy(url: str, proxy: TcpProxy) -> str:
    return (
        make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    )


class Fault(Protocol):
    name: str

    def begin(self) -> None: ...

    def end(self) -> None: ...


class ProxyOutage:
    """Every connection reset, new ones refused, until `end`."""

    name = "proxy outage"

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy

    def begin(self) -> None:
        self.proxy.outage()

    def end(self) -> None:
        self.proxy.restore()


class PostgresRestart:
    """A real `pg_ctlcluster stop` / `start` of the machine's PostgreSQL (opt-in: it disturbs
    every other user of that server)."""

    name = "postgresql restart"

    def __init__(self) -> None:
        self.version = sorted(os.listdir("/etc/postgresql"))[-1]

    def _ctl(self, action: str) -> None:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, "main", action],
            check=True,
            timeout=60,
        )

    def begin(self) -> None:
        self._ctl("stop")

    def end(self) -> None:
        self._ctl("start")


def _traffic_through_faults(
    database_url: str, direct_url: str, workdir: Path, fault: Fault, outages: int = 2
) -> None:
    """Four partner threads against two API processes while `fault` strikes `outages` times;
    then every acknowledged call is stored once, balances match, and the ledger verifies."""
    db = Database.from_url(direct_url)
    sponsor = data.new_sponsor(db)
    client_id, secret = data.new_client(db, [sponsor])
    collectors = [data.new_collector(db) for _ in range(20)]
    db.dispose()
    server = start_server(
        database_url,
        "postgresql",
        workdir,
        # One client sends all the traffic, as fast as the service answers: no rate limit, so
        # every answer is about the database.
        env={
            "REWARDMILES_SECRET_HASH_COST": TEST_HASH_COST,
            "REWARDMILES_RATE_LIMIT_PER_SECOND": "0",
        },
        workers=2,
    )
    try:
        traffic = Traffic(
            server.base_url, fetch_token(server.base_url, client_id, secret), sponsor, collectors
        )
        threads = [threading.Thread(target=traffic.run, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        try:
            for _ in range(outages):  # more than one: recovery is not a one-off
                time.sleep(2)
                fault.begin()
                time.sleep(OUTAGE_SECONDS / 2)
                ready = httpx.get(f"{server.base_url}/readyz", timeout=10)
                assert ready.status_code == 503, ready.text
                time.sleep(OUTAGE_SECONDS / 2)
                fault.end()
            time.sleep(2)
        finally:
            traffic.stop.set()
            for thread in threads:
                thread.join(90)
        assert httpx.get(f"{server.base_url}/readyz", timeout=10).status_code == 200
        assert "request_failed" not in server.log(), "a database fault escaped as a 500"
    finally:
        server.stop()

    print(
        f"\n{fault.name} x{outages}: statuses {dict(traffic.statuses)}, "
        f"transport errors {traffic.transport_errors}, acknowledged {len(traffic.acknowledged)}"
    )
    assert traffic.unexpected == []
    assert set(traffic.statuses) <= DEFINITIVE | RETRYABLE, traffic.statuses
    assert traffic.statuses[503] > 0, "the outage was not seen: the test proved nothing"
    assert len(traffic.acknowledged) > 50

    db = Database.from_url(direct_url)
    with db.reader() as session:
        rows = session.execute(
            select(Transaction.partner_transaction_id, func.count())
            .where(Transaction.sponsor_code == sponsor)
            .group_by(Transaction.partner_transaction_id)
        ).all()
    stored: dict[str, int] = {str(k): int(v) for k, v in rows}
    assert set(stored) == set(traffic.acknowledged), "a transaction was lost or appeared unasked"
    assert all(count == 1 for count in stored.values()), "a transaction was stored twice"
    expected: Counter[str] = Counter()
    for collector, miles in traffic.acknowledged.values():
        expected[collector] += miles
    assert {c: data.balance(db, c) for c in collectors} == {c: expected[c] for c in collectors}
    db.dispose()
    assert_ledger_balanced(direct_url)


def test_database_outage_mid_traffic_gives_503_then_recovers_without_a_restart(
    pg_only: None, database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    direct_url = database_factory.create("postgresql")
    proxy = TcpProxy("127.0.0.1", 5432).start()
    try:
        _traffic_through_faults(
            _via_proxy(direct_url, proxy), direct_url, tmp_path, ProxyOutage(proxy)
        )
    finally:
        proxy.close()
    assert proxy.connections_reset > 0


@pytest.mark.skipif(
    os.environ.get("REWARDMILES_TEST_PG_RESTART") != "1",
    reason="restarts the machine's PostgreSQL: opt in with REWARDMILES_TEST_PG_RESTART=1 "
    "(make reliability)",
)
def test_a_real_postgresql_restart_mid_traffic(
    pg_only: None, database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    url = database_factory.create("postgresql")
    _traffic_through_faults(url, url, tmp_path, PostgresRestart())


def test_a_statement_timeout_is_503_and_the_retry_lands_once(
    pg_only: None, database_factory: DatabaseFactory, server_factory: ServerFactory
) -> None:
    url = database_factory.create("postgresql")
    db = Database.from_url(url)
    sponsor, client_id, secret, collector = data.new_partner(db)
    server = server_factory(
        "postgresql",
        database_url=url,
        env={"REWARDMILES_DATABASE_STATEMENT_TIMEOUT_MS": "300"},
    )
    token = fetch_token(server.base_url, client_id, secret)
    body = data.event_body(sponsor, collector, miles=9)
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}

    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as blocker:
        # Another session holds the collector's row: the issue waits, then times out.
        blocker.execute("SELECT 1 FROM collectors WHERE number = %s FOR UPDATE", (collector,))
        started = time.monotonic()
        refused = httpx.post(f"{server.base_url}{POST_EVENT}", json=body, headers=headers)
        assert time.monotonic() - started < 5
        assert_problem(refused, 503, "SERVICE_UNAVAILABLE")
        assert refused.headers["retry-after"] == "1"
        blocker.rollback()

    accepted = httpx.post(f"{server.base_url}{POST_EVENT}", json=body, headers=headers)
    assert accepted.status_code in DEFINITIVE, accepted.text
    replay = httpx.post(f"{server.base_url}{POST_EVENT}", json=body, headers=headers)
    assert replay.status_code == accepted.status_code
    assert replay.headers.get("idempotent-replayed") == "true"
    with db.reader() as session:
        count = session.execute(
            select(func.count()).where(
                Transaction.partner_transaction_id == body["clientTransactionId"]
            )
        ).scalar_one()
    assert count == 1
    assert data.balance(db, collector) == 9
    db.dispose()
