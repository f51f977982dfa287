"""Decisions about money that leave the books consistent either way, so only a test of the
decision itself can catch a wrong one: the negative-balance policy, the bounds of a reversal that
waits for its original, the in-flight key, and the Transaction Day at a Toronto evening.

In-process, on a database of this module's own, every clock injected: nothing here depends on
the hour the suite runs at.
"""

from __future__ import annotations

import functools
import io
import secrets
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from rewardmiles import limits
from rewardmiles.collectors import service as collectors
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.db.models import IssuanceLine, Offer, Transaction, WebhookDelivery
from rewardmiles.errors import PROBLEM_CODES, ProblemError
from rewardmiles.idempotency.service import InFlightRegistry
from rewardmiles.issuance import calls, service
from rewardmiles.issuance.routes import run_write
from rewardmiles.ledger.verify import verify
from rewardmiles.reports import batches
from rewardmiles.settlement import repository as settlement_repo
from rewardmiles.settlement import service as settlement
from rewardmiles.settlement.worker import settle_pending
from rewardmiles.webhooks import service as webhooks
from tests.conftest import TEST_BOX, DatabaseFactory
from tests.integration import test_one_statement_issue as one_statement
from tests.support import data
from tests.support.issue import call

# 02:00 UTC on 21 November is 21:00 on 20 November in Toronto (EST, UTC-5): the same instant
# falls on two different days depending on the zone it is read in.
TORONTO_EVENING = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
TORONTO_DAY = date(2026, 11, 20)
NOW = TORONTO_EVENING + timedelta(minutes=1)

ALLOW = Settings.from_env({})
REJECT = Settings.from_env({}, negative_balance_policy="reject")
WINDOW = timedelta(days=ALLOW.pending_window_days)


@pytest.fixture(scope="module")
def own_db(dialect: str, database_factory: DatabaseFactory) -> Iterator[Database]:
    database = Database.from_url(database_factory.create(dialect))
    yield database
    with database.reader() as session:
        report = verify(session, REJECT)  # no test of this module takes a balance below zero
    database.dispose()
    assert report.ok, report.problems


@pytest.fixture
def fresh_db(dialect: str, database_factory: DatabaseFactory) -> Iterator[Database]:
    """A database of the test's own: a settle pass reports on every collector of its database,
    so a test that counts the report's outcomes needs one that holds its lines alone."""
    database = Database.from_url(database_factory.create(dialect))
    yield database
    with database.reader() as session:
        report = verify(session, REJECT)
    database.dispose()
    assert report.ok, report.problems


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _body(
    sponsor: str,
    collector: str,
    lines: list[tuple[str, int]],
    *,
    at: datetime = TORONTO_EVENING,
    original: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "clientTransactionId": data.txn_id(),
        "collectorNumber": collector,
        "sponsorCode": sponsor,
        "transactionDateTime": _iso(at),
        "issuances": [{"issuanceOfferCode": code, "milesAmount": miles} for code, miles in lines],
    }
    if original is not None:
        body["originalClientTransactionId"] = original
    return body


# Every call of this module at NOW unless it says otherwise, as one partner client.
_call = functools.partial(call, now=NOW, client_id="money-decisions")


def _set_status(db: Database, number: str, status: str) -> None:
    with db.unit_of_work() as session:
        collectors.set_status(session, number, status, NOW)


def _settle(db: Database, settings: Settings) -> settlement.SettleReport:
    return settle_pending(db, settings, NOW)


def _line(db: Database, transaction_id: str | None, line_no: int = 0) -> tuple[str, str | None]:
    with db.reader() as session:
        row = session.execute(
            select(IssuanceLine.status, IssuanceLine.error_code).where(
                IssuanceLine.transaction_id == transaction_id, IssuanceLine.line_no == line_no
            )
        ).one()
    return row.status, row.error_code


# --------------------------------------------------------------------------- negative balance


@pytest.mark.parametrize(("miles", "accepted"), [(5, True), (6, False)])
def test_reject_policy_refuses_a_reversal_below_zero_and_allows_one_to_zero(
    own_db: Database, miles: int, accepted: bool
) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    assert _call(own_db, REJECT, _body(sponsor, number, [("STANDARD", 5)])).status == 200

    outcome = _call(own_db, REJECT, _body(sponsor, number, [("STANDARD", miles)]), reverse=True)

    if accepted:
        assert outcome.status == 200
        assert outcome.body["issuances"][0]["status"] == "REVERSED"
        assert data.balance(own_db, number) == 0
    else:
        assert outcome.status == 400
        assert outcome.body["code"] == "INSUFFICIENT_BALANCE"
        assert data.balance(own_db, number) == 5


@pytest.mark.parametrize(
    ("miles", "expected"), [(5, ("posted", None)), (6, ("rejected", "INSUFFICIENT_BALANCE"))]
)
def test_reject_policy_at_settlement_rejects_a_waiting_debit_that_would_go_below_zero(
    own_db: Database, miles: int, expected: tuple[str, str | None]
) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    assert _call(own_db, REJECT, _body(sponsor, number, [("STANDARD", 5)])).status == 200
    _set_status(own_db, number, "ON_HOLD")
    waiting = _call(own_db, REJECT, _body(sponsor, number, [("STANDARD", miles)]), reverse=True)
    assert waiting.status == 202  # nothing is posted while the hold lasts: no balance to check

    _set_status(own_db, number, "ACTIVE")
    _settle(own_db, REJECT)

    assert _line(own_db, waiting.transaction_id) == expected
    assert data.balance(own_db, number) == (0 if expected[0] == "posted" else 5)


# --------------------------------------------------------------------------- reversal bounds


def test_a_full_reversal_waiting_on_a_pending_original_posts_once_the_original_does(
    own_db: Database,
) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.unknown_collector()
    original = _body(sponsor, number, [("STANDARD", 10)])
    original_id = _call(own_db, ALLOW, original).transaction_id
    reversal = _body(sponsor, number, [("STANDARD", 10)], original=original["clientTransactionId"])
    reversal_id = _call(own_db, ALLOW, reversal, reverse=True).transaction_id
    assert _line(own_db, reversal_id) == ("pending", None)

    with own_db.unit_of_work() as session:
        collectors.add_collector(session, number, "ACTIVE", NOW)
    passes = [_settle(own_db, ALLOW) for _ in range(2)]  # the reversal may come first: it waits

    assert sum(p.posted for p in passes) == 2
    assert not any(p.rejected for p in passes)
    assert _line(own_db, original_id) == ("posted", None)
    assert _line(own_db, reversal_id) == ("posted", None)
    assert data.balance(own_db, number) == 0


def test_a_reversal_the_original_no_longer_covers_after_a_line_is_rejected_is_rejected(
    own_db: Database,
) -> None:
    """The original issues 5 + 200 (the 200 waits for review); a reversal of 6 is within 205
    and waits for it. Once the 200 is rejected, 6 is one mile more than the 5 issued."""
    sponsor = data.new_sponsor(own_db, review_threshold_miles=100)
    number = data.new_collector(own_db)
    original = _body(sponsor, number, [("STANDARD", 5), ("STANDARD", 200)])
    original_id = _call(own_db, ALLOW, original).transaction_id
    assert original_id is not None
    assert data.balance(own_db, number) == 5
    reversal = _body(sponsor, number, [("STANDARD", 6)], original=original["clientTransactionId"])
    waiting = _call(own_db, ALLOW, reversal, reverse=True)
    assert waiting.status == 202

    with own_db.unit_of_work() as session:
        settlement.reject(
            session,
            settlement.line_id(original_id, 1),
            "OFFER_INACTIVE",
            NOW,
            known_codes=list(PROBLEM_CODES),
        )
    _settle(own_db, ALLOW)

    assert _line(own_db, waiting.transaction_id) == ("rejected", "REVERSAL_EXCEEDS_ORIGINAL")
    assert data.balance(own_db, number) == 5


# --------------------------------------------------------------------------- settlement passes


def _state(
    db: Database, transaction_id: str | None, line_no: int = 0
) -> tuple[str, str | None, str | None]:
    """(status, pending reason, error code) of a line."""
    with db.reader() as session:
        row = session.execute(
            select(IssuanceLine.status, IssuanceLine.pending_reason, IssuanceLine.error_code).where(
                IssuanceLine.transaction_id == transaction_id, IssuanceLine.line_no == line_no
            )
        ).one()
    return row.status, row.pending_reason, row.error_code


def _settled_at(db: Database, transaction_id: str | None, line_no: int = 0) -> datetime | None:
    with db.reader() as session:
        return session.execute(
            select(IssuanceLine.settled_at).where(
                IssuanceLine.transaction_id == transaction_id, IssuanceLine.line_no == line_no
            )
        ).scalar_one()


def _counts(report: settlement.SettleReport) -> tuple[int, dict[str, int], int]:
    """(posted, rejected by error code, still pending) of a settle pass."""
    return report.posted, dict(report.rejected), report.still_pending


def _count_pending(db: Database) -> int:
    with db.reader() as session:
        return settlement_repo.count_pending(session)


def test_a_collector_on_hold_keeps_its_lines_waiting_under_that_reason_until_they_expire(
    fresh_db: Database,
) -> None:
    """A collector on hold is only looked at for its expired lines: those are rejected, and its
    other lines wait under `collector_on_hold`, an approved one included (never one still under
    review, nor another transaction's). Once the hold is lifted, the approved line posts."""
    db = fresh_db
    sponsor = data.new_sponsor(db, review_threshold_miles=100)
    number = data.new_collector(db, "ON_HOLD")
    long_ago = NOW - WINDOW - timedelta(days=1)
    old = _call(
        db, ALLOW, _body(sponsor, number, [("STANDARD", 5)], at=long_ago), now=long_ago
    ).transaction_id
    held = _call(db, ALLOW, _body(sponsor, number, [("STANDARD", 500), ("STANDARD", 600)]))
    other = _call(db, ALLOW, _body(sponsor, number, [("STANDARD", 700)])).transaction_id
    assert _state(db, old) == ("pending", "collector_on_hold", None)
    with db.unit_of_work() as session:
        settlement.approve(session, settlement.line_id(str(held.transaction_id), 0))
    assert _state(db, held.transaction_id, 0) == ("pending", "approved", None)
    assert _state(db, held.transaction_id, 1) == ("pending", "review", None)

    report = _settle(db, ALLOW)

    assert _counts(report) == (0, {"PENDING_EXPIRED": 1}, 3)
    assert _state(db, old) == ("rejected", None, "PENDING_EXPIRED")
    assert _state(db, held.transaction_id, 0) == ("pending", "collector_on_hold", None)
    assert _state(db, held.transaction_id, 1) == ("pending", "review", None)
    assert _state(db, other) == ("pending", "review", None)
    assert data.balance(db, number) == 0

    _set_status(db, number, "ACTIVE")
    report = _settle(db, ALLOW)

    assert _counts(report) == (1, {}, 2)
    assert _state(db, held.transaction_id, 0) == ("posted", None, None)
    assert _state(db, held.transaction_id, 1) == ("pending", "review", None)
    assert _state(db, other) == ("pending", "review", None)
    assert data.balance(db, number) == 500


def test_a_line_expires_only_once_it_has_waited_longer_than_the_pending_window(
    fresh_db: Database,
) -> None:
    db = fresh_db
    sponsor = data.new_sponsor(db, review_threshold_miles=100)
    number = data.new_collector(db)
    start = NOW - WINDOW
    waiting = _call(
        db,
        ALLOW,
        _body(sponsor, number, [("STANDARD", 500)], at=start - timedelta(minutes=1)),
        now=start,
    ).transaction_id
    approved = _call(db, ALLOW, _body(sponsor, number, [("STANDARD", 400)])).transaction_id
    with db.unit_of_work() as session:  # the collector has a line to settle: the pass looks at it
        settlement.approve(session, settlement.line_id(str(approved), 0))

    report = _settle(db, ALLOW)  # `waiting` has waited exactly the window

    assert _counts(report) == (1, {}, 1)
    assert _state(db, waiting) == ("pending", "review", None)

    report = settle_pending(db, ALLOW, NOW + timedelta(seconds=1))

    assert _counts(report) == (0, {"PENDING_EXPIRED": 1}, 0)
    assert _state(db, waiting) == ("rejected", None, "PENDING_EXPIRED")
    assert data.balance(db, number) == 400


def test_one_pass_settles_every_collector_and_its_report_counts_each_outcome(
    fresh_db: Database,
) -> None:
    """Collector A (unknown, then enrolled): two lines under review, one that posts, two
    reversals of the lines under review, which now wait for their originals. Collector B (on
    hold, then closed): two lines rejected, one under review. The pass settles what it can of
    both, records when, queues the sponsor's webhook events, and counts each outcome once."""
    db = fresh_db
    sponsor = data.new_sponsor(db, review_threshold_miles=100)
    with db.unit_of_work() as session:
        hook_id, _ = webhooks.add_webhook(
            session,
            sponsor,
            "http://127.0.0.1:9/settled",
            NOW,
            TEST_BOX,
            allow_private_targets=True,
        )
    a = data.unknown_collector()
    b = data.new_collector(db, "ON_HOLD")
    minute = 0

    def issue(number: str, miles: int, original: dict[str, Any] | None = None) -> dict[str, Any]:
        nonlocal minute
        minute += 1
        at = NOW - timedelta(minutes=30 - minute)  # in this order, oldest first
        body = _body(
            sponsor,
            number,
            [("STANDARD", miles)],
            at=at - timedelta(seconds=1),
            original=original["clientTransactionId"] if original else None,
        )
        outcome = _call(db, ALLOW, body, now=at, reverse=original is not None)
        assert outcome.status == 202, outcome.body
        body["id"] = outcome.transaction_id
        return body

    a1, a2, a3 = issue(a, 500), issue(a, 300), issue(a, 5)
    r1, r2 = issue(a, 1, original=a1), issue(a, 1, original=a2)
    b1, b2, b3 = issue(b, 5), issue(b, 6), issue(b, 400)
    assert _state(db, r1["id"]) == ("pending", "collector_unknown", None)
    with db.unit_of_work() as session:
        collectors.add_collector(session, a, "ACTIVE", NOW)
    _set_status(db, b, "CLOSED")
    assert _count_pending(db) == 8

    report = _settle(db, ALLOW)

    assert _counts(report) == (1, {"COLLECTOR_CLOSED": 2}, 5)
    assert report.settled == 3
    assert [_state(db, line["id"]) for line in (a1, a2, a3, r1, r2)] == [
        ("pending", "review", None),
        ("pending", "review", None),
        ("posted", None, None),
        ("pending", "original_pending", None),
        ("pending", "original_pending", None),
    ]
    assert [_state(db, line["id"]) for line in (b1, b2, b3)] == [
        ("rejected", None, "COLLECTOR_CLOSED"),
        ("rejected", None, "COLLECTOR_CLOSED"),
        ("pending", "review", None),
    ]
    assert [_settled_at(db, line["id"]) for line in (a3, b1, b2)] == [NOW] * 3
    assert _count_pending(db) == 5
    assert (data.balance(db, a), data.balance(db, b)) == (5, 0)
    with db.reader() as session:
        events = session.execute(
            select(
                WebhookDelivery.transaction_id,
                WebhookDelivery.created_at,
                WebhookDelivery.next_attempt_at,
            ).where(WebhookDelivery.webhook_id == hook_id)
        ).all()
    assert sorted(events) == sorted((line["id"], NOW, NOW) for line in (a3, b1, b2))


def test_a_new_pending_reason_does_not_count_towards_a_transactions_batch(
    fresh_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three lines settled per transaction: a reversal that only gets a new reason on the way
    (its original is under review) is not one of them, and no transaction settles a fourth."""
    monkeypatch.setattr(limits, "settlement_lines_per_transaction_max", 3)
    db = fresh_db
    sponsor = data.new_sponsor(db, review_threshold_miles=100)
    number = data.unknown_collector()

    def issue(minute: int, miles: int, original: str | None = None) -> tuple[str, str | None]:
        at = NOW - timedelta(minutes=10 - minute)  # in this order, oldest first
        body = _body(
            sponsor, number, [("STANDARD", miles)], at=at - timedelta(seconds=1), original=original
        )
        outcome = _call(db, ALLOW, body, now=at, reverse=original is not None)
        assert outcome.status == 202, outcome.body
        return body["clientTransactionId"], outcome.transaction_id

    original, original_id = issue(0, 500)  # under review
    issue(1, 3)
    issue(2, 3)
    _, reversal_id = issue(3, 1, original=original)
    issue(4, 3)
    issue(5, 3)
    with db.unit_of_work() as session:
        collectors.add_collector(session, number, "ACTIVE", NOW)

    transactions = 0
    real_unit_of_work = db.unit_of_work

    def counting_unit_of_work():  # type: ignore[no-untyped-def]
        nonlocal transactions
        transactions += 1
        return real_unit_of_work()

    monkeypatch.setattr(db, "unit_of_work", counting_unit_of_work)
    report = _settle(db, ALLOW)
    monkeypatch.undo()

    assert _counts(report) == (4, {}, 2)  # the original (review) and its reversal wait
    assert transactions == 2  # posted 3 | posted 1
    assert _state(db, original_id) == ("pending", "review", None)
    assert _state(db, reversal_id) == ("pending", "original_pending", None)
    assert data.balance(db, number) == 12


# --------------------------------------------------------------------------- in-flight key


def test_a_key_held_in_flight_in_this_process_gets_409_and_writes_nothing(
    own_db: Database,
) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    body = _body(sponsor, number, [("STANDARD", 7)])
    registry = InFlightRegistry()
    key = secrets.token_hex(8)

    # The first call with this key is still running when the second arrives.
    with registry.hold("money-decisions", key), pytest.raises(ProblemError) as conflict:
        _call(own_db, ALLOW, body, idempotency_key=key, registry=registry)
    assert conflict.value.code == "IDEMPOTENCY_KEY_IN_USE"
    assert conflict.value.status == 409
    assert conflict.value.headers == {"Retry-After": "1"}
    assert conflict.value.detail == (
        "A request with this Idempotency-Key is still executing; retry shortly."
    )
    with own_db.reader() as session:
        written = session.execute(
            select(func.count()).where(
                Transaction.partner_transaction_id == body["clientTransactionId"]
            )
        ).scalar_one()
    assert written == 0
    assert data.balance(own_db, number) == 0

    # Once the first call has finished, the key is free again.
    assert _call(own_db, ALLOW, body, idempotency_key=key, registry=registry).status == 200
    assert data.balance(own_db, number) == 7


# --------------------------------------------------------------------------- Toronto evening


def _offer(db: Database, sponsor: str, code: str, **validity: date) -> None:
    with db.unit_of_work() as session:
        session.add(Offer(sponsor_code=sponsor, code=code, active=True, created_at=NOW, **validity))


def test_offer_validity_is_judged_on_the_toronto_date_of_the_transaction(
    own_db: Database,
) -> None:
    """At 21:00 in Toronto on the 20th (02:00 UTC on the 21st) an offer that ends on the 20th
    still applies, and one that starts on the 21st does not yet."""
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    _offer(own_db, sponsor, "ENDS20", valid_to=TORONTO_DAY)
    _offer(own_db, sponsor, "FROM21", valid_from=TORONTO_DAY + timedelta(days=1))

    ending = _call(own_db, ALLOW, _body(sponsor, number, [("ENDS20", 4)]))
    starting = _call(own_db, ALLOW, _body(sponsor, number, [("FROM21", 3)]))

    assert ending.status == 200, ending.body
    assert ending.body["issuances"][0]["status"] == "ISSUED"
    assert starting.status == 400
    assert starting.body["code"] == "OFFER_INACTIVE"
    assert starting.body["errors"][0]["field"] == "issuances[0].issuanceOfferCode"
    assert data.balance(own_db, number) == 4


def test_a_batch_matches_a_toronto_evening_record_against_that_toronto_day(
    own_db: Database,
) -> None:
    """A log record at 21:00 Toronto on the 20th (02:00 UTC on the 21st) makes the 20th, Toronto
    time, the day whose real-time transactions the log must account for: one at 10:00 Toronto
    on the 20th is missing from the log; one on the 21st, Toronto time, is not the log's."""
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    logged = _body(sponsor, number, [("STANDARD", 10)])
    same_day = _body(sponsor, number, [("STANDARD", 11)], at=datetime(2026, 11, 20, 15, tzinfo=UTC))
    next_day = _body(sponsor, number, [("STANDARD", 12)], at=datetime(2026, 11, 21, 12, tzinfo=UTC))
    for body in (logged, same_day, next_day):
        at = datetime.fromisoformat(body["transactionDateTime"])
        assert _call(own_db, ALLOW, body, now=at + timedelta(minutes=1)).status == 200

    log = (
        "transactionType,partnerTransactionId,collectorNumber,transactionDateTime,milesAmount\n"
        f"POST/EVENT,{logged['clientTransactionId']},{number},{_iso(TORONTO_EVENING)},10\n"
    )
    with own_db.unit_of_work() as session:
        batch_id = batches.start_batch(session, sponsor, "test", False, NOW)
    batches.run_batch(own_db, ALLOW, batch_id, io.BytesIO(log.encode()), "csv", client_id="test")
    with own_db.reader() as session:
        view = batches.batch_view(session, batch_id, limit=100)
    assert view is not None

    assert view["counts"] == {"matched": 1, "missing_in_log": 1}
    assert [(r["outcome"], r["partnerTransactionId"]) for r in view["records"]] == [
        ("missing_in_log", same_day["clientTransactionId"])
    ]


def test_the_one_statement_path_judges_offer_validity_on_the_toronto_date(
    dialect: str, database_factory: DatabaseFactory
) -> None:
    """PostgreSQL's one-statement path decides from cached offers whether every line posts at
    once: the same Toronto date as the unit of work, or it writes what the rules refuse."""
    if dialect != "postgresql":
        pytest.skip("the one-statement path runs on PostgreSQL only")
    rig = one_statement.Rig(database_factory.create("postgresql"))
    try:
        _offer(rig.db, one_statement.SPONSOR, "ENDS20", valid_to=TORONTO_DAY)
        _offer(rig.db, one_statement.SPONSOR, "FROM21", valid_from=TORONTO_DAY + timedelta(days=1))

        def event(offer: str) -> calls.PartnerCall:
            return one_statement.partner_call(
                one_statement.event(
                    transactionDateTime=_iso(TORONTO_EVENING),
                    issuances=[{"issuanceOfferCode": offer, "milesAmount": 2}],
                )
            )

        def at_once(call: calls.PartnerCall) -> calls.Outcome | None:
            return rig.loop.run_until_complete(
                service.execute_at_once(
                    rig.writer, rig.db, rig.settings, rig.registry, call, now=lambda: NOW
                )
            )

        def general(call: calls.PartnerCall) -> calls.Outcome:
            return run_write(rig.db, rig.settings, rig.registry, call, lambda: NOW)

        for offer in ("ENDS20", "FROM21"):  # the first call of each loads its offer's cache
            general(event(offer))
        ending = at_once(event("ENDS20"))
        assert ending is not None  # written at once
        assert ending.status == 200
        starting = event("FROM21")
        assert at_once(starting) is None  # left to the unit of work, which refuses it
        assert general(starting).body["code"] == "OFFER_INACTIVE"
    finally:
        rig.close()
