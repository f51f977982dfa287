"""Standalone `rewardmiles worker` processes settle every pending line exactly once, also when one
of them is killed mid-run (PostgreSQL: two workers claiming with SKIP LOCKED)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

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


def test_workers_settle_a_thousand_lines_exactly_once_despite_a_kill(
    dialect: str, database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    url = database_factory.create(dialect)
    db = Database.from_url(url)
    settings = Settings(database_url=url)
    sponsor = data.new_sponsor(db)
    numbers = [data.unknown_collector() for _ in range(COLLECTORS)]
    for number in numbers:
        body = data.event_body(sponsor, number)
        body["issuances"] = [
            {"issuanceOfferCode": "STANDARD", "milesAmount": MILES}
            for _ in range(LINES_PER_TRANSACTION)
        ]
        assert call(db, settings, body).status == 202
    total_lines = COLLECTORS * LINES_PER_TRANSACTION
    assert _pending(db) == total_lines
    for number in numbers:
        with db.unit_of_work() as session:
            from rewardmiles.collectors import service as collectors

            collectors.add_collector(session, number, "ACTIVE", data.now())

    workers = [_worker(url, tmp_path, "w1")]
    if dialect == "postgresql":  # SQLite has one writer: one worker is the supported setup
        workers.append(_worker(url, tmp_path, "w2"))
        time.sleep(0.5)
        workers[0].send_signal(signal.SIGKILL)
    try:
        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        while _pending(db) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _pending(db) == 0, "workers left lines pending"
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=15)
    if dialect == "postgresql":
        assert workers[1].returncode == 0  # stopped cleanly on SIGTERM

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
