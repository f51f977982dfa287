"""Settlement of pending lines (SPEC §3.6), in-process on a database of this module's own."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from rewardmiles import clock, limits
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.db.models import IssuanceLine, Transaction
from rewardmiles.errors import PROBLEM_CODES
from rewardmiles.issuance import keyed
from rewardmiles.ledger.verify import verify
from rewardmiles.settlement import service as settlement
from rewardmiles.settlement.service import ReviewError
from rewardmiles.settlement.worker import settle_pending
from tests.conftest import DatabaseFactory
from tests.support import data
from tests.support.issue import call


@pytest.fixture(scope="module")
def own_db(dialect: str, database_factory: DatabaseFactory) -> Iterator[Database]:
    database = Database.from_url(database_factory.create(dialect))
    yield database
    with database.reader() as session:
        report = verify(session)
    database.dispose()
    assert report.ok, report.problems


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


def _line(
    db: Database, transaction_id: str, line_no: int = 0
) -> tuple[str, str | None, str | None]:
    with db.reader() as session:
        row = session.execute(
            select(IssuanceLine.status, IssuanceLine.pending_reason, IssuanceLine.error_code).where(
                IssuanceLine.transaction_id == transaction_id, IssuanceLine.line_no == line_no
            )
        ).one()
    return row.status, row.pending_reason, row.error_code


def _transaction_status(db: Database, transaction_id: str) -> str:
    with db.reader() as session:
        return str(
            session.execute(
                select(Transaction.status).where(Transaction.id == transaction_id)
            ).scalar_one()
        )


def _settle(db: Database, settings: Settings, *, days_later: int = 0) -> settlement.SettleReport:
    return settle_pending(db, settings, clock.utc_now() + timedelta(days=days_later))


def _set_status(db: Database, number: str, status: str) -> None:
    from rewardmiles.collectors import service as collectors

    with db.unit_of_work() as session:
        collectors.set_status(session, number, status, clock.utc_now())


def _enrol(db: Database, number: str) -> None:
    from rewardmiles.collectors import service as collectors

    with db.unit_of_work() as session:
        collectors.add_collector(session, number, "ACTIVE", clock.utc_now())


def test_unknown_collector_line_posts_once_the_collector_is_enrolled(
    own_db: Database, settings: Settings
) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.unknown_collector()
    outcome = call(own_db, settings, data.event_body(sponsor, number, miles=12))
    assert outcome.status == 202
    transaction_id = str(outcome.transaction_id)

    _settle(own_db, settings)
    assert _line(own_db, transaction_id) == ("pending", "collector_unknown", None)

    _enrol(own_db, number)
    report = _settle(own_db, settings)

    assert report.posted >= 1
    assert _line(own_db, transaction_id) == ("posted", None, None)
    assert _transaction_status(own_db, transaction_id) == "posted"
    assert data.balance(own_db, number) == 12
    with own_db.reader() as session:
        replay = keyed.render_current(session, transaction_id, replayed=True)
    assert replay.status == 200
    assert replay.body["issuances"][0]["status"] == "ISSUED"

    _settle(own_db, settings)  # settling again changes nothing
    assert data.balance(own_db, number) == 12


def test_on_hold_line_posts_when_the_hold_is_lifted(own_db: Database, settings: Settings) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db, "ON_HOLD")
    transaction_id = str(
        call(own_db, settings, data.event_body(sponsor, number, miles=5)).transaction_id
    )
    _settle(own_db, settings)
    assert _line(own_db, transaction_id)[0] == "pending"
    _set_status(own_db, number, "ACTIVE")
    _settle(own_db, settings)
    assert _line(own_db, transaction_id)[0] == "posted"
    assert data.balance(own_db, number) == 5


def test_collector_closed_meanwhile_rejects_the_line(own_db: Database, settings: Settings) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db, "ON_HOLD")
    transaction_id = str(
        call(own_db, settings, data.event_body(sponsor, number, miles=5)).transaction_id
    )
    _set_status(own_db, number, "CLOSED")
    _settle(own_db, settings)
    assert _line(own_db, transaction_id) == ("rejected", None, "COLLECTOR_CLOSED")
    assert _transaction_status(own_db, transaction_id) == "posted"
    assert data.balance(own_db, number) == 0
    with own_db.reader() as session:
        replay = keyed.render_current(session, transaction_id, replayed=True)
    assert replay.status == 200
    assert replay.body["issuances"][0] == {
        "issuanceOfferCode": "STANDARD",
        "milesAmount": 5,
        "status": "REJECTED",
        "errorCode": "COLLECTOR_CLOSED",
    }


def test_line_pending_past_the_window_expires_and_not_before(
    own_db: Database, settings: Settings
) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.unknown_collector()
    transaction_id = str(
        call(own_db, settings, data.event_body(sponsor, number, miles=5)).transaction_id
    )

    _settle(own_db, settings, days_later=settings.pending_window_days - 1)
    assert _line(own_db, transaction_id)[0] == "pending"

    _settle(own_db, settings, days_later=settings.pending_window_days + 1)
    assert _line(own_db, transaction_id) == ("rejected", None, "PENDING_EXPIRED")


def test_review_line_waits_for_approval_then_posts(own_db: Database, settings: Settings) -> None:
    sponsor = data.new_sponsor(own_db, review_threshold_miles=100)
    number = data.new_collector(own_db)
    transaction_id = str(
        call(own_db, settings, data.event_body(sponsor, number, miles=500)).transaction_id
    )
    _settle(own_db, settings)
    assert _line(own_db, transaction_id) == ("pending", "review", None)
    assert any(v.transaction_id == transaction_id for v in _pending(own_db, sponsor))

    with own_db.unit_of_work() as session:
        settlement.approve(session, settlement.line_id(transaction_id, 0))
    _settle(own_db, settings)

    assert _line(own_db, transaction_id)[0] == "posted"
    assert data.balance(own_db, number) == 500
    with pytest.raises(ReviewError), own_db.unit_of_work() as session:
        settlement.approve(session, settlement.line_id(transaction_id, 0))


def test_review_line_rejected_by_the_operator(own_db: Database, settings: Settings) -> None:
    sponsor = data.new_sponsor(own_db, review_threshold_miles=100)
    number = data.new_collector(own_db)
    transaction_id = str(
        call(own_db, settings, data.event_body(sponsor, number, miles=500)).transaction_id
    )
    line = settlement.line_id(transaction_id, 0)
    with pytest.raises(ReviewError), own_db.unit_of_work() as session:
        settlement.reject(
            session, line, "NOT_A_CODE", clock.utc_now(), known_codes=list(PROBLEM_CODES)
        )
    rejected_at = clock.utc_now()
    with own_db.unit_of_work() as session:
        settlement.reject(
            session, line, "OFFER_INACTIVE", rejected_at, known_codes=list(PROBLEM_CODES)
        )
    assert _line(own_db, transaction_id) == ("rejected", None, "OFFER_INACTIVE")
    with own_db.reader() as session:
        settled_at = session.execute(
            select(IssuanceLine.settled_at).where(IssuanceLine.transaction_id == transaction_id)
        ).scalar_one()
    assert settled_at == rejected_at
    assert _transaction_status(own_db, transaction_id) == "posted"
    assert data.balance(own_db, number) == 0


def test_approving_or_rejecting_a_line_touches_no_other_transactions_line(
    own_db: Database, settings: Settings
) -> None:
    sponsor = data.new_sponsor(own_db, review_threshold_miles=100)
    number = data.new_collector(own_db)
    first, second = (
        str(call(own_db, settings, data.event_body(sponsor, number, miles=500)).transaction_id)
        for _ in range(2)
    )  # two transactions, each with a line 0 held for review

    with own_db.unit_of_work() as session:
        settlement.approve(session, settlement.line_id(first, 0))
    assert _line(own_db, first) == ("pending", "approved", None)
    assert _line(own_db, second) == ("pending", "review", None)

    with own_db.unit_of_work() as session:
        settlement.reject(
            session,
            settlement.line_id(second, 0),
            "REVIEW_REJECTED",
            clock.utc_now(),
            known_codes=list(PROBLEM_CODES),
        )
    assert _line(own_db, second) == ("rejected", None, "REVIEW_REJECTED")
    assert _line(own_db, first) == ("pending", "approved", None)

    _settle(own_db, settings)
    assert _line(own_db, first)[0] == "posted"
    assert data.balance(own_db, number) == 500


def test_review_refuses_a_line_not_under_review_and_a_malformed_line_id(
    own_db: Database, settings: Settings
) -> None:
    sponsor = data.new_sponsor(own_db, review_threshold_miles=100)
    number = data.new_collector(own_db)
    body = data.event_body(
        sponsor,
        number,
        issuances=[
            {"issuanceOfferCode": "STANDARD", "milesAmount": 5},
            {"issuanceOfferCode": "STANDARD", "milesAmount": 500},
        ],
    )
    transaction_id = str(call(own_db, settings, body).transaction_id)
    assert _line(own_db, transaction_id, 0) == ("posted", None, None)
    assert _line(own_db, transaction_id, 1) == ("pending", "review", None)

    def refused(text: str, message: str) -> None:
        with pytest.raises(ReviewError, match=message), own_db.unit_of_work() as session:
            settlement.approve(session, text)
        with pytest.raises(ReviewError, match=message), own_db.unit_of_work() as session:
            settlement.reject(
                session, text, "REVIEW_REJECTED", clock.utc_now(), known_codes=list(PROBLEM_CODES)
            )

    # line 0 posted at once, line 2 does not exist: neither is pending review
    for text in (settlement.line_id(transaction_id, 0), settlement.line_id(transaction_id, 2)):
        refused(text, f"^line {re.escape(text)} is not pending review$")
    for text in (
        transaction_id,
        f"{transaction_id}:",
        f"{transaction_id}:x",
        f"{transaction_id}:-1",
    ):
        refused(text, f"^line id {re.escape(repr(text))} must look like TRANSACTION_ID:LINE_NO$")

    assert _line(own_db, transaction_id, 0) == ("posted", None, None)
    assert _line(own_db, transaction_id, 1) == ("pending", "review", None)
    assert data.balance(own_db, number) == 5


def test_review_comes_before_the_hold(own_db: Database, settings: Settings) -> None:
    sponsor = data.new_sponsor(own_db, review_threshold_miles=100)
    number = data.new_collector(own_db, "ON_HOLD")
    transaction_id = str(
        call(own_db, settings, data.event_body(sponsor, number, miles=500)).transaction_id
    )
    _set_status(own_db, number, "ACTIVE")
    _settle(own_db, settings)
    assert _line(own_db, transaction_id) == ("pending", "review", None)


def test_reversal_of_a_pending_original_settles_after_it(
    own_db: Database, settings: Settings
) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.unknown_collector()
    original = data.event_body(sponsor, number, miles=10)
    original_id = str(call(own_db, settings, original).transaction_id)
    reversal = data.event_body(
        sponsor, number, miles=4, originalClientTransactionId=original["clientTransactionId"]
    )
    reversal_outcome = call(own_db, settings, reversal, reverse=True)
    assert reversal_outcome.status == 202
    assert reversal_outcome.body["issuances"][0]["status"] == "PENDING"

    _enrol(own_db, number)
    _settle(own_db, settings)
    _settle(own_db, settings)

    assert _line(own_db, original_id)[0] == "posted"
    assert _line(own_db, str(reversal_outcome.transaction_id))[0] == "posted"
    assert data.balance(own_db, number) == 6


@pytest.mark.parametrize("miles", [50, 1])  # 1: nothing of the offer is left issued, not 1 mile
def test_reversal_waiting_on_an_original_that_is_rejected_is_rejected(
    own_db: Database, settings: Settings, miles: int
) -> None:
    sponsor = data.new_sponsor(own_db, review_threshold_miles=100)
    number = data.new_collector(own_db)
    original = data.event_body(sponsor, number, miles=500)
    original_id = str(call(own_db, settings, original).transaction_id)
    reversal = data.event_body(
        sponsor, number, miles=miles, originalClientTransactionId=original["clientTransactionId"]
    )
    reversal_id = str(call(own_db, settings, reversal, reverse=True).transaction_id)
    assert _line(own_db, reversal_id) == ("pending", "original_pending", None)

    with own_db.unit_of_work() as session:
        settlement.reject(
            session,
            settlement.line_id(original_id, 0),
            "OFFER_INACTIVE",
            clock.utc_now(),
            known_codes=list(PROBLEM_CODES),
        )
    _settle(own_db, settings)

    assert _line(own_db, reversal_id) == ("rejected", None, "REVERSAL_EXCEEDS_ORIGINAL")
    assert data.balance(own_db, number) == 0


def _pending(db: Database, sponsor: str) -> list[settlement.PendingView]:
    with db.reader() as session:
        return settlement.list_pending(session, sponsor)


def _two_line_body(sponsor: str, number: str, at: datetime) -> dict[str, Any]:
    return data.event_body(
        sponsor,
        number,
        transactionDateTime=data.iso(at - timedelta(seconds=1)),
        issuances=[
            {"issuanceOfferCode": "STANDARD", "milesAmount": 1},
            {"issuanceOfferCode": "STANDARD", "milesAmount": 2},
        ],
    )


def test_pending_lines_are_listed_oldest_first_then_by_line_id(
    own_db: Database, settings: Settings
) -> None:
    """Transactions processed out of the order of their ids, two of them at the same moment:
    listed by processed time, then transaction id, then line number; `limit` takes the first."""
    sponsor = data.new_sponsor(own_db)
    number = data.unknown_collector()
    base = clock.utc_now() - timedelta(hours=1)
    issued = []
    for minutes in (5, 3, 0, 4, 1, 2, 2):
        at = base + timedelta(minutes=minutes)
        outcome = call(own_db, settings, _two_line_body(sponsor, number, at), now=at)
        assert outcome.status == 202
        issued.append((at, str(outcome.transaction_id)))
    expected = [(transaction_id, n) for _, transaction_id in sorted(issued) for n in (0, 1)]

    listed = _pending(own_db, sponsor)

    assert [(v.transaction_id, v.line_no) for v in listed] == expected
    assert [v.line_id for v in listed] == [f"{t}:{n}" for t, n in expected]
    assert [(v.miles, v.reason, v.collector_number) for v in listed] == [
        (1 + n, "collector_unknown", number) for _, n in expected
    ]
    with own_db.reader() as session:
        first = settlement.list_pending(session, sponsor, limit=3)
    assert [(v.transaction_id, v.line_no) for v in first] == expected[:3]


def test_worker_purges_idempotency_keys_past_the_retention_window(
    own_db: Database, settings: Settings
) -> None:
    from sqlalchemy import func, insert

    from rewardmiles.db.models import IdempotencyKey
    from rewardmiles.settlement.worker import Worker

    now = clock.utc_now()
    with own_db.unit_of_work() as session:
        for age_days, key in ((settings.idempotency_retention_days + 1, "old"), (1, "young")):
            session.execute(
                insert(IdempotencyKey).values(
                    client_id="purge-test",
                    key=key,
                    fingerprint="f",
                    transaction_id=None,
                    response_status=400,
                    response_json="{}",
                    created_at=now - timedelta(days=age_days),
                )
            )
    assert Worker(own_db, settings).purge_idempotency_keys() >= 1
    with own_db.reader() as session:
        left = (
            session.execute(
                select(IdempotencyKey.key).where(IdempotencyKey.client_id == "purge-test")
            )
            .scalars()
            .all()
        )
        assert session.execute(select(func.count()).select_from(IdempotencyKey)).scalar_one() >= 1
    assert left == ["young"]


def test_a_large_backlog_settles_in_short_transactions(
    own_db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collector with more pending lines than one transaction settles is finished in one pass,
    over several transactions, each holding the collector's lock for a bounded batch."""
    monkeypatch.setattr(limits, "settlement_lines_per_transaction_max", 10)
    sponsor = data.new_sponsor(own_db, review_threshold_miles=50)
    number = data.unknown_collector()
    for _ in range(24):
        assert call(own_db, settings, data.event_body(sponsor, number, miles=3)).status == 202
    held = call(own_db, settings, data.event_body(sponsor, number, miles=60))  # review: stays
    assert held.status == 202
    _enrol(own_db, number)

    transactions = 0
    real_unit_of_work = own_db.unit_of_work

    def counting_unit_of_work():  # type: ignore[no-untyped-def]
        nonlocal transactions
        transactions += 1
        return real_unit_of_work()

    monkeypatch.setattr(own_db, "unit_of_work", counting_unit_of_work)
    report = _settle(own_db, settings)
    monkeypatch.undo()

    assert report.posted == 24
    assert report.still_pending == 1  # the line under review, counted once
    assert transactions == 3  # 10 + 10 + 4
    assert data.balance(own_db, number) == 72
    assert _line(own_db, str(held.transaction_id)) == ("pending", "review", None)


def test_at_most_a_thousand_pending_lines_are_listed_unless_asked(
    own_db: Database, settings: Settings
) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.unknown_collector()
    lines = [{"issuanceOfferCode": "STANDARD", "milesAmount": 1}] * 48
    for _ in range(21):  # 1,008 lines
        body = data.event_body(sponsor, number, issuances=lines)
        assert call(own_db, settings, body).status == 202

    listed = _pending(own_db, sponsor)

    with own_db.reader() as session:
        everything = settlement.list_pending(session, sponsor, limit=2000)
    assert len(everything) == 1008
    assert listed == everything[:1000]


def test_a_failing_purge_is_logged_and_stops_neither_the_other_purges_nor_the_worker(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rewardmiles.settlement.worker import Worker

    worker = Worker(db, Settings(), poll_seconds=0.01)
    ran: list[str] = []

    def fails() -> int:
        ran.append("idempotency")
        raise RuntimeError("database away")

    def noting(name: str) -> Callable[[], int]:
        def purge() -> int:
            ran.append(name)
            return 0

        return purge

    monkeypatch.setattr(worker, "purge_idempotency_keys", fails)
    monkeypatch.setattr(worker, "purge_request_failures", noting("failures"))
    monkeypatch.setattr(worker, "purge_operator_sessions", noting("sessions"))
    worker.purge()
    assert ran == ["idempotency", "failures", "sessions"]
    # In the loop too: the thread survives a failing purge and goes on settling.
    passes: list[int] = []
    real_settle = worker.settle_once

    def counted() -> Any:
        passes.append(1)
        return real_settle()

    monkeypatch.setattr(worker, "settle_once", counted)
    monkeypatch.setattr(worker.dispatcher, "start_thread", lambda: None)
    monkeypatch.setattr(worker.dispatcher, "stop", lambda: None)
    worker.start_thread()
    try:
        deadline = time.monotonic() + 10
        while len(passes) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(passes) >= 3
        assert worker._thread is not None
        assert worker._thread.is_alive()
    finally:
        worker.stop()
