"""Standalone `rewardmiles worker` processes settle every pending line exactly once, also when one
of them is killed inside its transaction (PostgreSQL: two workers claiming with SKIP LOCKED)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from rewardmiles import ledger
from rewardmiles.collectors import service as collectors_service
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.db.models import IssuanceLine, LedgerEntry
from rewardmiles.ledger.verify import verify
from tests.conftest import DatabaseFactory
from tests.support import data
from tests.support.issue import call

COLLECTORS = 200
LINES_PER_TRANSACTION = 5
MILES = 3
SETTLE_TIMEOUT_SECONDS = 90


def _worker(
    url: str, workdir: Path, name: str, log_level: str = "warning"
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "REWARDMILES_DATABASE_URL": url,
        "REWARDMILES_WORKER_POLL_SECONDS": "0.2",
        "REWARDMILES_LOG_LEVEL": log_level,
    }
    log = (workdir / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "rewardmiles", "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _pending(db: Database) -> int:
    with db.reader() as session:
        return int(
            session.execute(
                select(func.count()).where(IssuanceLine.status == "pending")
            ).scalar_one()
        )


def _pending_lines(db: Database, url: str, collectors: int) -> tuple[list[str], int]:
    """`collectors` unknown collectors with a pending transaction of 5 lines each, then enrolled:
    every line is ready to settle. Returns the numbers and the line count."""
    settings = Settings(database_url=url)
    sponsor = data.new_sponsor(db)
    numbers = [data.unknown_collector() for _ in range(collectors)]
    for number in numbers:
        body = data.event_body(sponsor, number)
        body["issuances"] = [
            {"issuanceOfferCode": "STANDARD", "milesAmount": MILES}
            for _ in range(LINES_PER_TRANSACTION)
        ]
        assert call(db, settings, body).status == 202
    total_lines = collectors * LINES_PER_TRANSACTION
    assert _pending(db) == total_lines
    for number in numbers:
        with db.unit_of_work() as session:
            collectors_service.add_collector(session, number, "ACTIVE", data.now())
    return numbers, total_lines


def _wait_for(condition: Callable[[], bool], what: str, *, poll: float = 0.2) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=15)


def _assert_settled_once(db: Database, numbers: list[str], total_lines: int) -> None:
    with db.reader() as session:
        entries = session.execute(select(func.count()).select_from(LedgerEntry)).scalar_one()
        posted = session.execute(
            select(func.count()).where(IssuanceLine.status == "posted")
        ).scalar_one()
        report = verify(session)
    assert posted == total_lines
    assert entries == 2 * total_lines
    assert report.ok, report.problems
    assert {data.balance(db, n) for n in numbers} == {MILES * LINES_PER_TRANSACTION}


def test_workers_settle_a_thousand_lines_exactly_once(
    dialect: str, database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    url = database_factory.create(dialect)
    db = Database.from_url(url)
    numbers, total_lines = _pending_lines(db, url, COLLECTORS)
    workers = [_worker(url, tmp_path, "w1")]
    if dialect == "postgresql":  # SQLite has one writer: one worker is the supported setup
        workers.append(_worker(url, tmp_path, "w2"))
    try:
        _wait_for(lambda: _pending(db) == 0, "the workers to settle every line")
    finally:
        _stop(workers)
    assert [w.returncode for w in workers] == [0] * len(workers)  # stopped cleanly on SIGTERM
    _assert_settled_once(db, numbers, total_lines)
    db.dispose()


def _lock_waiters(db: Database) -> int:
    with db.reader() as session:
        return int(
            session.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


def test_workers_settle_exactly_once_despite_a_kill_inside_a_transaction(
    dialect: str, database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    """Both workers are made to wait on a collector's row lock held here, inside their unit of
    work; one is SIGKILLed there, the lock released, a replacement started: nothing is lost and
    nothing posted twice."""
    if dialect != "postgresql":
        pytest.skip(
            "SQLite: a worker waiting on the database lock cannot be seen from outside, so a "
            "kill could not be shown to land inside its transaction"
        )
    url = database_factory.create(dialect)
    db = Database.from_url(url)
    numbers, total_lines = _pending_lines(db, url, 20)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        with db.unit_of_work() as session:
            assert ledger.lock_collector(session, numbers[len(numbers) // 2]) is not None
            workers += [_worker(url, tmp_path, "w1"), _worker(url, tmp_path, "w2")]
            _wait_for(lambda: _lock_waiters(db) == 2, "both workers to wait on the lock", poll=0.05)
            workers[0].send_signal(signal.SIGKILL)
            assert workers[0].wait(timeout=15) == -signal.SIGKILL
        workers.append(_worker(url, tmp_path, "w3", log_level="info"))
        _wait_for(lambda: _pending(db) == 0, "the other workers to settle every line")
        log = tmp_path / "w3.log"
        _wait_for(lambda: "worker_started" in log.read_text(), "the replacement to start")
    finally:
        _stop(workers)
    assert [w.returncode for w in workers[1:]] == [0, 0]  # stopped cleanly on SIGTERM
    _assert_settled_once(db, numbers, total_lines)
    db.dispose()


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_worker_stops_cleanly_on_a_signal(
    dialect: str, database_factory: DatabaseFactory, tmp_path: Path, signal_number: int
) -> None:
    worker = _worker(database_factory.create(dialect), tmp_path, "w", log_level="info")
    log = tmp_path / "w.log"
    deadline = time.monotonic() + 30
    while "worker_started" not in log.read_text() and time.monotonic() < deadline:
        assert worker.poll() is None, log.read_text()
        time.sleep(0.05)
    worker.send_signal(signal_number)
    assert worker.wait(timeout=15) == 0
