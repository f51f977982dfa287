"""The failure recorder (queue, batches, drops) and its purge by the settlement worker, and the
support desk's CLI commands (`request show`, `transaction show`, `audit-log`), against a
database of this module's own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from rewardmiles import limits
from rewardmiles.cli.main import app
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.db.models import RequestFailure
from rewardmiles.errors import problem
from rewardmiles.settlement.worker import Worker
from rewardmiles.support import repository
from rewardmiles.support import service as support
from rewardmiles.support.recorder import FailureRecorder, Offered
from tests.conftest import DatabaseFactory
from tests.support import data
from tests.support.issue import call

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def url(dialect: str, database_factory: DatabaseFactory) -> str:
    return database_factory.create(dialect)


@pytest.fixture(scope="module")
def db(url: str) -> Iterator[Database]:
    database = Database.from_url(url)
    yield database
    database.dispose()


def _cli(url: str, *args: str) -> Result:
    env = {"REWARDMILES_DATABASE_URL": url, "REWARDMILES_SECRET_HASH_COST": "10"}
    return CliRunner().invoke(app, list(args), env=env)


def _failure(request_id: str, at: datetime, code: str = "FIELD_INVALID") -> Offered:
    body = problem(code, f"detail of {request_id}", request_id)
    body["errors"] = [{"code": code, "field": "issuances[0].milesAmount", "message": "x"}]
    return (
        at,
        request_id,
        "client-1",
        "POST",
        "/checkout/issuance/post/event",
        400,
        orjson.dumps(body),
    )


def _count(db: Database, prefix: str) -> int:
    with db.reader() as session:
        return int(
            session.scalar(select(func.count()).where(RequestFailure.request_id.startswith(prefix)))
            or 0
        )


def test_the_recorder_writes_what_it_queued_in_batches_and_drops_beyond_its_capacity(
    db: Database,
) -> None:
    recorder = FailureRecorder(capacity=5, batch_max=2, flush_seconds=60)
    recorder._db = db  # written by flush() here, not by its thread
    for n in range(8):
        recorder.offer(_failure(f"rec-{n}", NOW))
    assert recorder.dropped == 3  # never blocked: the three beyond the capacity are counted

    assert recorder.flush() == 5
    assert _count(db, "rec-") == 5
    with db.reader() as session:
        row = repository.failure_by_request_id(session, "rec-0")
    assert row is not None
    assert (row.code, row.field, row.detail) == (
        "FIELD_INVALID",
        "issuances[0].milesAmount",
        "detail of rec-0",
    )
    assert row.client_id == "client-1"
    with db.reader() as session:
        assert repository.failure_by_request_id(session, "rec-7") is None


def test_a_body_that_is_no_problem_document_is_kept_without_code(db: Database) -> None:
    recorder = FailureRecorder()
    recorder._db = db
    recorder.offer((NOW, "odd-1", None, "GET", "/checkout/x", 502, b"<html>bad gateway"))
    assert recorder.flush() == 1
    with db.reader() as session:
        row = repository.failure_by_request_id(session, "odd-1")
    assert row is not None
    assert (row.status, row.code, row.client_id) == (502, None, None)


def test_the_worker_purges_failures_past_the_retention_in_batches(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(request_failure_retention_days=90)
    recorder = FailureRecorder()
    recorder._db = db
    cutoff = NOW - timedelta(days=90)
    for n in range(5):
        recorder.offer(_failure(f"old-{n}", cutoff - timedelta(seconds=1 + n)))
    for n in range(2):
        recorder.offer(_failure(f"new-{n}", cutoff + timedelta(seconds=1 + n)))
    recorder.flush()
    monkeypatch.setattr(limits, "request_failures_purge_batch", 2)  # three batches: 2, 2, 1

    purged = Worker(db, settings, now=lambda: NOW).purge_request_failures()

    assert purged == 5
    assert _count(db, "old-") == 0
    assert _count(db, "new-") == 2


# --------------------------------------------------------------------------- the CLI


def test_request_show_prints_a_failure_and_fails_for_an_unknown_id(url: str, db: Database) -> None:
    recorder = FailureRecorder()
    recorder._db = db
    recorder.offer(_failure("cli-1", datetime.now(UTC)))
    recorder.flush()

    shown = _cli(url, "request", "show", "cli-1", "--json")
    assert shown.exit_code == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert (record["requestId"], record["code"], record["status"]) == (
        "cli-1",
        "FIELD_INVALID",
        400,
    )
    text = _cli(url, "request", "show", "cli-1")
    assert "FIELD_INVALID" in text.stdout
    assert "issuances[0].milesAmount" in text.stdout
    missing = _cli(url, "request", "show", "cli-none")
    assert missing.exit_code == 1
    assert "no failed partner request cli-none" in missing.stderr


def test_transaction_show_and_the_audit_log_of_a_review(url: str, db: Database) -> None:
    sponsor = data.new_sponsor(db, review_threshold_miles=100)
    number = data.new_collector(db)
    outcome = call(db, Settings(), data.event_body(sponsor, number, miles=500))
    assert outcome.status == 202, outcome.body
    transaction_id = str(outcome.transaction_id)

    shown = _cli(url, "transaction", "show", transaction_id, "--json")
    assert shown.exit_code == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["collectorNumber"] == number  # the CLI is an operator's: in full
    assert detail["lines"][0]["status"] == "pending"
    assert detail["lines"][0]["pendingReason"] == "review"
    assert _cli(url, "transaction", "show", "nope").exit_code == 1

    assert _cli(url, "pending", "reject", f"{transaction_id}:0").exit_code == 0
    logged = _cli(url, "audit-log", "--entity", "issuance_line", "--limit", "1", "--json")
    assert logged.exit_code == 0, logged.stderr
    [entry] = json.loads(logged.stdout)
    assert (entry["action"], entry["entityId"]) == ("pending.reject", f"{transaction_id}:0")
    assert entry["actor"].startswith("cli@")
    assert entry["after"] == {"errorCode": "REVIEW_REJECTED", "status": "rejected"}
    after = _cli(url, "transaction", "show", transaction_id, "--json")
    history = json.loads(after.stdout)["lines"][0]["history"]
    assert [h["status"] for h in history] == ["pending", "rejected"]
    assert "pending.reject" in _cli(url, "audit-log").stdout


def test_a_collector_number_in_a_failures_detail_is_masked_for_a_viewer(db: Database) -> None:
    recorder = FailureRecorder()
    recorder._db = db
    body = problem("COLLECTOR_NOT_FOUND", "No collector 12345678901 here.", "mask-1")
    recorder.offer((NOW, "mask-1", None, "POST", "/checkout/x", 400, orjson.dumps(body)))
    recorder.flush()
    with db.reader() as session:
        viewer = support.failed_request(session, "mask-1", "UTC", full_numbers=False)
        agent = support.failed_request(session, "mask-1", "UTC", full_numbers=True)
    assert viewer is not None
    assert agent is not None
    assert viewer["detail"] == "No collector 123*****901 here."
    assert agent["detail"] == "No collector 12345678901 here."
