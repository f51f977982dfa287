"""What a partner observes of the write path outside the program-calculated computation: RECORD,
resends of the same transaction id, replays under an Idempotency-Key (as the call stands now),
the rejections of a reversal whose original is missing or not its own, and the transaction
lookups by id and by partner transaction id with the miles reversed per issued line.

In-process through the service the routes call (`tests/support/issue.py`), on a database of this
module's own, every clock injected.
"""

from __future__ import annotations

import functools
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from rewardmiles.collectors import service as collectors
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.db.models import IssuanceLine, Offer, Transaction
from rewardmiles.errors import ProblemError
from rewardmiles.idempotency.service import InFlightRegistry
from rewardmiles.issuance import calls
from rewardmiles.issuance.routes import run_write
from rewardmiles.ledger.verify import verify
from rewardmiles.offers import service as offers
from rewardmiles.reports import audit
from rewardmiles.settlement.worker import settle_pending
from rewardmiles.vocabulary import Endpoint
from tests.conftest import DatabaseFactory
from tests.support import data
from tests.support import issue as partner

NOW = datetime(2026, 11, 21, 2, 1, tzinfo=UTC)
AT = NOW - timedelta(seconds=5)  # the partner's transaction time of every call unless said
CLIENT = "partner-outcomes"

ALLOW = Settings.from_env({})
REJECT_NEGATIVE = Settings.from_env({}, negative_balance_policy="reject")
REJECT_UNKNOWN = Settings.from_env({}, unknown_collector_policy="reject")
ENROLL_UNKNOWN = Settings.from_env({}, unknown_collector_policy="enroll")


@pytest.fixture(scope="module")
def own_db(dialect: str, database_factory: DatabaseFactory) -> Iterator[Database]:
    database = Database.from_url(database_factory.create(dialect))
    yield database
    with database.reader() as session:
        report = verify(session, REJECT_NEGATIVE)  # no test here takes a balance below zero
    database.dispose()
    assert report.ok, report.problems


def _call(
    db: Database,
    settings: Settings,
    endpoint: Endpoint,
    body: dict[str, Any],
    *,
    key: str | None = None,
    request_id: str = "in-process",
) -> calls.Outcome:
    made = partner.build_call(
        settings, endpoint, body, client_id=CLIENT, idempotency_key=key, request_id=request_id
    )
    return partner.run(db, settings, made, now=NOW)


_raises_problem = functools.partial(pytest.raises, ProblemError)


def _lines(spec: list[tuple[str, int]]) -> list[dict[str, Any]]:
    return [{"issuanceOfferCode": code, "milesAmount": miles} for code, miles in spec]


def _event(
    sponsor: str, collector: str, spec: list[tuple[str, int]], *, original: str | None = None
) -> dict[str, Any]:
    extra: dict[str, Any] = {} if original is None else {"originalClientTransactionId": original}
    return data.event_body(
        sponsor, collector, transactionDateTime=data.iso(AT), issuances=_lines(spec), **extra
    )


def _basket(
    sponsor: str, collector: str | None, lines: list[dict[str, Any]] | None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "checkoutTransactionId": data.txn_id("b"),
        "sponsorCode": sponsor,
        "checkoutDateTime": data.iso(AT),
        "basketPreTaxAmount": 20.0,
        "basketPostTaxAmount": 20.0,
    }
    if collector is not None:
        body["collectorNumber"] = collector
    if lines is not None:
        body["issuances"] = lines
    body.update(extra)
    return body


def _program(sponsor: str, collector: str, **extra: Any) -> dict[str, Any]:
    """An ISSUE/RETURN/CALCULATE basket of one kettle at $50."""
    return {
        "checkoutTransactionId": data.txn_id("p"),
        "collectorNumber": collector,
        "sponsorCode": sponsor,
        "checkoutDateTime": data.iso(AT),
        "basketPreTaxAmount": 50.0,
        "basketPostTaxAmount": 50.0,
        "items": [{"id": "kettle", "quantity": 1, "finalAmount": 50.0}],
        **extra,
    }


def _problem(outcome: calls.Outcome, code: str, detail: str, errors: list[tuple[str, str]]) -> None:
    """A recorded rejection: 400, `code`, `detail`, (code, field) of each error, nothing kept."""
    assert outcome.status == 400, outcome.body
    assert outcome.transaction_id is None
    assert outcome.body["code"] == code
    assert outcome.body["detail"] == detail
    assert [(e["code"], e["field"]) for e in outcome.body["errors"]] == errors


def _offer(db: Database, sponsor: str, code: str, *, active: bool = True) -> None:
    with db.unit_of_work() as session:
        session.add(Offer(sponsor_code=sponsor, code=code, active=active, created_at=NOW))


def _set_status(db: Database, number: str, status: str) -> None:
    with db.unit_of_work() as session:
        collectors.set_status(session, number, status, NOW)


def _bytes(outcome: calls.Outcome) -> bytes:
    return orjson.dumps(outcome.body)


# --------------------------------------------------------------------------- RECORD


def test_record_keeps_the_lines_for_audit_and_moves_no_miles(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db, locations=["L1"])
    number = data.new_collector(own_db)
    lines = [
        {"issuanceOfferCode": "STANDARD", "milesAmount": 7, "locationCode": "L1"},
        {"issuanceOfferCode": "STANDARD", "milesAmount": 3},
    ]
    body = _basket(sponsor, number, lines)

    out = _call(own_db, ALLOW, Endpoint.RECORD, body)

    assert out.status == 200, out.body
    assert not out.replayed
    assert out.transaction_id == out.body["transactionId"]
    assert out.body["issuances"] == lines  # a RECORD line has no status: nothing was issued
    assert out.body["checkoutTransactionId"] == body["checkoutTransactionId"]
    assert data.balance(own_db, number) == 0
    with own_db.reader() as session:
        row = session.execute(
            select(
                Transaction.endpoint,
                Transaction.status,
                Transaction.http_status,
                Transaction.collector_number,
                Transaction.error_code,
                Transaction.calculation_json,
            ).where(Transaction.id == out.transaction_id)
        ).one()
        stored = session.execute(
            select(
                IssuanceLine.line_no,
                IssuanceLine.direction,
                IssuanceLine.offer_code,
                IssuanceLine.location_code,
                IssuanceLine.miles,
                IssuanceLine.status,
            )
            .where(IssuanceLine.transaction_id == out.transaction_id)
            .order_by(IssuanceLine.line_no)
        ).all()
    assert tuple(row) == ("record", "recorded", 200, number, None, None)
    assert [tuple(r) for r in stored] == [
        (0, "none", "STANDARD", "L1", 7, "recorded"),
        (1, "none", "STANDARD", None, 3, "recorded"),
    ]

    view = {**out.body, "transactionType": "RECORD"}
    assert out.transaction_id is not None
    assert partner.lookup(own_db, out.transaction_id, [sponsor]) == view
    found = partner.lookup_by_partner_id(
        own_db, sponsor, checkout_transaction_id=body["checkoutTransactionId"]
    )
    assert found == [view]


def test_record_without_collector_or_lines_is_accepted_and_its_resend_replayed(
    own_db: Database,
) -> None:
    """Even where unknown collectors are rejected: a RECORD without one checks none."""
    sponsor = data.new_sponsor(own_db)
    body = _basket(sponsor, None, None)

    first = _call(own_db, REJECT_UNKNOWN, Endpoint.RECORD, body)
    again = _call(own_db, REJECT_UNKNOWN, Endpoint.RECORD, body)

    assert first.status == 200, first.body
    assert "issuances" not in first.body
    assert "collectorNumber" not in first.body
    assert (again.status, again.transaction_id, again.replayed) == (
        200,
        first.transaction_id,
        True,
    )
    assert _bytes(again) == _bytes(first)
    assert partner.lookup_by_partner_id(
        own_db, sponsor, checkout_transaction_id=body["checkoutTransactionId"]
    ) == [{**first.body, "transactionType": "RECORD"}]


@pytest.mark.parametrize(
    ("settings", "status", "expected"),
    [
        (ALLOW, "CLOSED", ("COLLECTOR_CLOSED", "The collector's account is closed.")),
        (REJECT_UNKNOWN, None, ("COLLECTOR_NOT_FOUND", "Collector {number} is not enrolled.")),
        (REJECT_UNKNOWN, "ACTIVE", None),
        (REJECT_UNKNOWN, "ON_HOLD", None),
        (ALLOW, None, None),
        (ENROLL_UNKNOWN, None, None),
    ],
    ids=["closed", "unknown-rejected", "active", "on-hold", "unknown-pending", "unknown-enroll"],
)
def test_record_checks_its_collector_and_enrolls_nobody(
    own_db: Database, settings: Settings, status: str | None, expected: tuple[str, str] | None
) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db, status) if status else data.unknown_collector()
    body = _basket(sponsor, number, _lines([("STANDARD", 4)]))

    out = _call(own_db, settings, Endpoint.RECORD, body, request_id="req-record")

    found = partner.lookup_by_partner_id(
        own_db, sponsor, checkout_transaction_id=body["checkoutTransactionId"]
    )
    if expected is None:
        assert out.status == 200, out.body
        assert [t["transactionId"] for t in found] == [out.transaction_id]
    else:
        code, detail = expected
        _problem(out, code, detail.format(number=number), [(code, "collectorNumber")])
        assert out.body["requestId"] == "req-record"
        assert found == []
    with own_db.reader() as session:
        view = collectors.get_collector(session, number)
    if status is None:
        assert view is None  # a RECORD enrolls nobody, whatever the policy
    else:
        assert view is not None
        assert (view.status, view.balance_miles) == (status, 0)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"checkoutDateTime": data.iso(NOW - timedelta(days=31))},
            (
                "DATE_OUT_OF_RANGE",
                "checkoutDateTime is older than the backdate window (30 days).",
                [("DATE_OUT_OF_RANGE", "checkoutDateTime")],
            ),
        ),
        (
            {"checkoutDateTime": data.iso(NOW + timedelta(minutes=6))},
            (
                "DATE_OUT_OF_RANGE",
                "checkoutDateTime is more than 5 minutes in the future.",
                [("DATE_OUT_OF_RANGE", "checkoutDateTime")],
            ),
        ),
        (
            {"issuances": _lines([("STANDARD", 1), ("NOSUCH", 2)])},
            (
                "OFFER_UNKNOWN",
                "One or more offers cannot be used.",
                [("OFFER_UNKNOWN", "issuances[1].issuanceOfferCode")],
            ),
        ),
        (
            {"issuances": _lines([("NOSUCH", 2), ("RETIRED", 1)])},
            (
                "VALIDATION_FAILED",
                "One or more offers cannot be used.",
                [
                    ("OFFER_UNKNOWN", "issuances[0].issuanceOfferCode"),
                    ("OFFER_INACTIVE", "issuances[1].issuanceOfferCode"),
                ],
            ),
        ),
        (
            {
                "issuances": [
                    {"issuanceOfferCode": "STANDARD", "milesAmount": 2, "locationCode": "ZZ"}
                ]
            },
            (
                "LOCATION_UNKNOWN",
                "One or more locations are not registered.",
                [("LOCATION_UNKNOWN", "issuances[0].locationCode")],
            ),
        ),
    ],
    ids=["backdated", "future", "offer-unknown", "unknown-and-inactive", "location-unknown"],
)
def test_record_is_refused_outside_the_date_window_and_for_offers_or_locations_it_cannot_use(
    own_db: Database, change: dict[str, Any], expected: tuple[str, str, list[tuple[str, str]]]
) -> None:
    sponsor = data.new_sponsor(own_db, locations=["L1"])
    _offer(own_db, sponsor, "RETIRED", active=False)
    number = data.new_collector(own_db)
    body = _basket(sponsor, number, _lines([("STANDARD", 4)]), **change)

    out = _call(own_db, ALLOW, Endpoint.RECORD, body)

    _problem(out, *expected)
    assert (
        partner.lookup_by_partner_id(
            own_db, sponsor, checkout_transaction_id=body["checkoutTransactionId"]
        )
        == []
    )


def test_record_resent_is_a_replay_and_changed_is_a_duplicate(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    body = _basket(sponsor, number, _lines([("STANDARD", 4)]))
    first = _call(own_db, ALLOW, Endpoint.RECORD, body)
    assert first.status == 200, first.body

    again = _call(own_db, ALLOW, Endpoint.RECORD, body)
    changed = _call(
        own_db, ALLOW, Endpoint.RECORD, {**body, "issuances": _lines([("STANDARD", 5)])}
    )

    assert (again.status, again.transaction_id, again.replayed) == (
        200,
        first.transaction_id,
        True,
    )
    assert _bytes(again) == _bytes(first)
    partner_id = body["checkoutTransactionId"]
    _problem(
        changed,
        "DUPLICATE_TRANSACTION",
        f"checkoutTransactionId {partner_id} was already accepted with a different body.",
        [("DUPLICATE_TRANSACTION", "checkoutTransactionId")],
    )
    found = partner.lookup_by_partner_id(own_db, sponsor, checkout_transaction_id=partner_id)
    assert [t["transactionId"] for t in found] == [first.transaction_id]


# --------------------------------------------------------------------------- resends, replays


def test_an_event_resent_is_replayed_as_it_stands_now_and_changed_is_a_duplicate(
    own_db: Database,
) -> None:
    """The same POST/EVENT again answers what the first one has become: 202 while its collector
    is on hold, 200 with the line ISSUED once settled; even once the collector is closed."""
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db, "ON_HOLD")
    body = _event(sponsor, number, [("STANDARD", 9)])
    first = _call(own_db, ALLOW, Endpoint.POST_EVENT, body)
    assert first.status == 202, first.body

    waiting = _call(own_db, ALLOW, Endpoint.POST_EVENT, body)
    _set_status(own_db, number, "ACTIVE")
    settle_pending(own_db, ALLOW, NOW)
    settled = _call(own_db, ALLOW, Endpoint.POST_EVENT, body)
    _set_status(own_db, number, "CLOSED")
    closed = _call(own_db, ALLOW, Endpoint.POST_EVENT, body)
    changed = _call(
        own_db, ALLOW, Endpoint.POST_EVENT, {**body, "issuances": _lines([("STANDARD", 8)])}
    )

    assert (waiting.status, waiting.transaction_id, waiting.replayed) == (
        202,
        first.transaction_id,
        True,
    )
    assert _bytes(waiting) == _bytes(first)
    assert (settled.status, settled.transaction_id, settled.replayed) == (
        200,
        first.transaction_id,
        True,
    )
    assert settled.body == {
        **first.body,
        "issuances": [{**first.body["issuances"][0], "status": "ISSUED"}],
    }
    assert (closed.status, closed.replayed, _bytes(closed)) == (200, True, _bytes(settled))
    partner_id = body["clientTransactionId"]
    _problem(
        changed,
        "DUPLICATE_TRANSACTION",
        f"clientTransactionId {partner_id} was already accepted with a different body.",
        [("DUPLICATE_TRANSACTION", "clientTransactionId")],
    )
    assert data.balance(own_db, number) == 9


def test_a_keyed_call_is_replayed_as_it_stands_now_and_its_key_refuses_another_body(
    own_db: Database,
) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db, "ON_HOLD")
    key = secrets.token_hex(8)
    body = _event(sponsor, number, [("STANDARD", 6)])
    first = _call(own_db, ALLOW, Endpoint.POST_EVENT, body, key=key)
    assert first.status == 202, first.body

    waiting = _call(own_db, ALLOW, Endpoint.POST_EVENT, body, key=key)
    _set_status(own_db, number, "ACTIVE")
    settle_pending(own_db, ALLOW, NOW)
    settled = _call(own_db, ALLOW, Endpoint.POST_EVENT, body, key=key)
    with _raises_problem() as reused:
        _call(
            own_db, ALLOW, Endpoint.POST_EVENT, _event(sponsor, number, [("STANDARD", 6)]), key=key
        )

    assert (waiting.status, waiting.transaction_id, waiting.replayed) == (
        202,
        first.transaction_id,
        True,
    )
    assert _bytes(waiting) == _bytes(first)
    assert (settled.status, settled.transaction_id, settled.replayed) == (
        200,
        first.transaction_id,
        True,
    )
    assert settled.body["issuances"] == [{**first.body["issuances"][0], "status": "ISSUED"}]
    assert (reused.value.code, reused.value.status) == ("IDEMPOTENCY_KEY_REUSED", 422)
    assert data.balance(own_db, number) == 6


def test_a_keyed_rejection_is_replayed_even_after_its_cause_clears(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db, "CLOSED")
    key = secrets.token_hex(8)
    body = _event(sponsor, number, [("STANDARD", 6)])
    first = _call(own_db, ALLOW, Endpoint.POST_EVENT, body, key=key, request_id="req-1")
    _problem(
        first,
        "COLLECTOR_CLOSED",
        "The collector's account is closed.",
        [("COLLECTOR_CLOSED", "collectorNumber")],
    )
    assert first.body["requestId"] == "req-1"

    _set_status(own_db, number, "ACTIVE")
    again = _call(own_db, ALLOW, Endpoint.POST_EVENT, body, key=key, request_id="req-2")

    assert (again.status, again.transaction_id, again.replayed) == (400, None, True)
    assert _bytes(again) == _bytes(first)
    assert data.balance(own_db, number) == 0
    found = partner.lookup_by_partner_id(
        own_db, sponsor, client_transaction_id=body["clientTransactionId"]
    )
    assert found == []
    # The sponsor's audit report shows the one rejection, as answered; the replay added nothing.
    with own_db.reader() as session:
        report = audit.audit_report(
            session, sponsor, NOW.astimezone(data.PROGRAM_ZONE).date(), ALLOW.program_time_zone
        )
    rows = [
        (t["transactionType"], t["partnerTransactionId"], t["status"], t["httpStatus"])
        for t in report.transactions
    ]
    assert rows == [("POST/EVENT", body["clientTransactionId"], "rejected", 400)]
    assert report.transactions[0]["errorCode"] == "COLLECTOR_CLOSED"


def test_a_keyed_calculate_is_replayed_with_no_transaction(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db)
    _base_offer(own_db, sponsor)
    number = data.new_collector(own_db)
    key = secrets.token_hex(8)
    body = _program(sponsor, number)

    first = _call(own_db, ALLOW, Endpoint.CALCULATE, body, key=key)
    again = _call(own_db, ALLOW, Endpoint.CALCULATE, body, key=key)

    assert (first.status, first.transaction_id, first.replayed) == (200, None, False)
    assert first.body["totalMiles"] == 5
    assert (again.status, again.transaction_id, again.replayed) == (200, None, True)
    assert _bytes(again) == _bytes(first)


def test_execute_refuses_an_endpoint_that_records_no_transaction(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db)
    made = partner.build_call(
        ALLOW, Endpoint.CALCULATE, _program(sponsor, data.new_collector(own_db)), client_id=CLIENT
    )
    with pytest.raises(
        ValueError, match=r"^CALCULATE records no transaction: `execute` does not run it$"
    ):
        run_write(own_db, ALLOW, InFlightRegistry(), made, lambda: NOW)


# --------------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    ("known", "expected"),
    [(False, ("SPONSOR_UNKNOWN", "is unknown.")), (True, ("SPONSOR_INACTIVE", "is not active."))],
    ids=["unknown", "inactive"],
)
def test_a_sponsor_unknown_or_not_active_is_refused(
    own_db: Database, known: bool, expected: tuple[str, str]
) -> None:
    number = data.new_collector(own_db)
    sponsor = (
        data.new_sponsor(own_db, active=False) if known else "S" + secrets.token_hex(4).upper()
    )

    out = _call(own_db, ALLOW, Endpoint.POST_EVENT, _event(sponsor, number, [("STANDARD", 3)]))

    code, ending = expected
    _problem(out, code, f"Sponsor {sponsor} {ending}", [(code, "sponsorCode")])
    assert data.balance(own_db, number) == 0


def test_a_reversal_below_zero_names_the_miles_and_the_issuances(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    assert (
        _call(
            own_db, REJECT_NEGATIVE, Endpoint.POST_EVENT, _event(sponsor, number, [("STANDARD", 5)])
        ).status
        == 200
    )

    out = _call(
        own_db,
        REJECT_NEGATIVE,
        Endpoint.REVERSE_EVENT,
        _event(sponsor, number, [("STANDARD", 2), ("STANDARD", 4)]),
    )

    _problem(
        out,
        "INSUFFICIENT_BALANCE",
        "The reversal of 6 miles would take the balance below zero.",
        [("INSUFFICIENT_BALANCE", "issuances")],
    )
    assert data.balance(own_db, number) == 5


def _base_offer(db: Database, sponsor: str) -> None:
    """BASE: 1 mile per $10 spent."""
    with db.unit_of_work() as session:
        offers.put_offer(
            session,
            sponsor,
            "BASE",
            description="1 mile per $10",
            rule={"type": "base", "miles": 1, "perDollars": 10},
            valid_from=None,
            valid_to=None,
            locations=None,
            offer_id=None,
            now=NOW,
            replace=False,
        )


def test_a_reversal_whose_original_is_missing_or_not_its_own_is_refused(
    own_db: Database,
) -> None:
    sponsor = data.new_sponsor(own_db)
    _base_offer(own_db, sponsor)
    number = data.new_collector(own_db)
    other = data.new_collector(own_db)
    event = _event(sponsor, number, [("STANDARD", 10)])
    posted = _basket(sponsor, number, _lines([("STANDARD", 10)]))
    issued = _program(sponsor, number)
    for endpoint, body in (
        (Endpoint.POST_EVENT, event),
        (Endpoint.POST, posted),
        (Endpoint.ISSUE, issued),
    ):
        assert _call(own_db, ALLOW, endpoint, body).status == 200
    assert data.balance(own_db, number) == 25
    unknown = data.txn_id("u")
    event_field = "originalClientTransactionId"
    basket_field = "originalCheckoutTransactionId"

    def refused(endpoint: Endpoint, body: dict[str, Any]) -> tuple[str, str, str]:
        out = _call(own_db, ALLOW, endpoint, body)
        assert out.status == 400, out.body
        ((error,),) = [out.body["errors"]]
        assert error["code"] == out.body["code"]
        return out.body["code"], out.body["detail"], error["field"]

    reverse_event = functools.partial(_event, sponsor, number, [("STANDARD", 1)])
    assert refused(Endpoint.REVERSE_EVENT, reverse_event(original=unknown)) == (
        "ORIGINAL_NOT_FOUND",
        f"No accepted POST/EVENT or POST {unknown} for sponsor {sponsor}.",
        event_field,
    )
    assert refused(
        Endpoint.REVERSE,
        _basket(sponsor, number, _lines([("STANDARD", 1)]), **{basket_field: unknown}),
    ) == ("ORIGINAL_NOT_FOUND", f"No accepted POST {unknown} for sponsor {sponsor}.", basket_field)
    assert refused(
        Endpoint.REVERSE_EVENT,
        _event(sponsor, other, [("STANDARD", 1)], original=event["clientTransactionId"]),
    ) == (
        "ORIGINAL_COLLECTOR_MISMATCH",
        "The original transaction was for a different collector.",
        event_field,
    )
    issue_id = issued["checkoutTransactionId"]
    assert refused(Endpoint.REVERSE_EVENT, reverse_event(original=issue_id)) == (
        "ORIGINAL_WRONG_FAMILY",
        f"Transaction {issue_id} was issued by ISSUE; take its miles back with RETURN.",
        event_field,
    )
    post_id = posted["checkoutTransactionId"]
    assert refused(Endpoint.RETURN, _program(sponsor, number, **{basket_field: post_id})) == (
        "ORIGINAL_WRONG_FAMILY",
        f"Transaction {post_id} was issued by POST; take its miles back with REVERSE or "
        "REVERSE/EVENT.",
        basket_field,
    )
    assert data.balance(own_db, number) == 25

    # Each original, named by its own family's reversal, takes its miles back.
    returned = _call(
        own_db, ALLOW, Endpoint.RETURN, _program(sponsor, number, **{basket_field: issue_id})
    )
    assert returned.status == 200, returned.body
    assert returned.body["totalMiles"] == 5
    assert returned.body["issuances"][0]["status"] == "REVERSED"
    assert (
        _call(own_db, ALLOW, Endpoint.REVERSE_EVENT, reverse_event(original=post_id)).status == 200
    )
    assert data.balance(own_db, number) == 19


# --------------------------------------------------------------------------- lookups


def test_lookup_shows_each_issued_line_with_the_miles_reversed_from_it(
    own_db: Database,
) -> None:
    """Per offer, the miles reversed so far are shown against the ISSUED lines in line order,
    each line at most its own miles; a line still pending shows none."""
    sponsor = data.new_sponsor(own_db, review_threshold_miles=100)
    _offer(own_db, sponsor, "BONUS")
    number = data.new_collector(own_db)
    spec = [("BONUS", 200), ("STANDARD", 3), ("STANDARD", 10), ("BONUS", 5), ("BONUS", 6)]
    original_body = _event(sponsor, number, spec)
    original = _call(own_db, ALLOW, Endpoint.POST_EVENT, original_body)
    assert original.status == 202, original.body
    reversal_body = _event(
        sponsor, number, [("STANDARD", 4)], original=original_body["clientTransactionId"]
    )
    reversal = _call(own_db, ALLOW, Endpoint.REVERSE_EVENT, reversal_body)
    assert reversal.status == 200, reversal.body
    assert data.balance(own_db, number) == 20
    assert original.transaction_id is not None
    assert reversal.transaction_id is not None

    original_view = partner.lookup(own_db, original.transaction_id, [sponsor])
    reversal_view = partner.lookup(own_db, reversal.transaction_id, ["OTHER", sponsor])

    expected_lines = [dict(line) for line in original.body["issuances"]]
    assert [line["status"] for line in expected_lines] == ["PENDING"] + ["ISSUED"] * 4
    for line, reversed_miles in zip(expected_lines[1:], [3, 1, 0, 0], strict=True):
        line["milesReversed"] = reversed_miles
    assert original_view == {
        **original.body,
        "issuances": expected_lines,
        "transactionType": "POST/EVENT",
    }
    assert reversal_view == {**reversal.body, "transactionType": "REVERSE/EVENT"}
    assert reversal.body["issuances"][0]["status"] == "REVERSED"
    found = partner.lookup_by_partner_id(
        own_db, sponsor, client_transaction_id=original_body["clientTransactionId"]
    )
    assert found == [original_view]
    assert partner.lookup_by_partner_id(
        own_db, sponsor, client_transaction_id=reversal_body["clientTransactionId"]
    ) == [reversal_view]
    # Not the client's sponsor, or no such transaction: nothing.
    assert partner.lookup(own_db, original.transaction_id, ["OTHER"]) is None
    assert partner.lookup(own_db, data.txn_id("missing"), [sponsor]) is None
    assert (
        partner.lookup_by_partner_id(
            own_db, "OTHER", client_transaction_id=original_body["clientTransactionId"]
        )
        == []
    )


def test_lookup_by_checkout_id_lists_each_basket_endpoint_that_took_it(
    own_db: Database,
) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    posted = _basket(sponsor, number, _lines([("STANDARD", 4)]))
    post = _call(own_db, ALLOW, Endpoint.POST, posted)
    record = _call(own_db, ALLOW, Endpoint.RECORD, posted)
    assert (post.status, record.status) == (200, 200)

    found = partner.lookup_by_partner_id(
        own_db, sponsor, checkout_transaction_id=posted["checkoutTransactionId"]
    )

    assert found == [
        {
            **post.body,
            "issuances": [{**post.body["issuances"][0], "milesReversed": 0}],
            "transactionType": "POST",
        },
        {**record.body, "transactionType": "RECORD"},
    ]
    assert (
        partner.lookup_by_partner_id(
            own_db, sponsor, client_transaction_id=posted["checkoutTransactionId"]
        )
        == []
    )


def test_lookup_of_an_issue_that_earned_nothing_has_no_lines(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db)  # no offer with a rule: the basket earns nothing
    number = data.new_collector(own_db)
    body = _program(sponsor, number)
    issued = _call(own_db, ALLOW, Endpoint.ISSUE, body)
    assert issued.status == 200, issued.body
    assert issued.body["totalMiles"] == 0
    assert "issuances" not in issued.body
    assert issued.transaction_id is not None

    view = {**issued.body, "transactionType": "ISSUE"}
    assert partner.lookup(own_db, issued.transaction_id, [sponsor]) == view
    found = partner.lookup_by_partner_id(
        own_db, sponsor, checkout_transaction_id=body["checkoutTransactionId"]
    )
    assert found == [view]


@pytest.mark.postgres_only
def test_racing_reversals_of_an_unknown_collectors_original_never_exceed_it(
    own_db: Database,
) -> None:
    """No collector row to lock: the original's own row lock serialises its reversals, so that
    each one's bound counts the reversals accepted before it."""
    sponsor = data.new_sponsor(own_db)
    for _ in range(5):
        number = data.unknown_collector()
        original = _event(sponsor, number, [("STANDARD", 10)])
        assert _call(own_db, ALLOW, Endpoint.POST_EVENT, original).status == 202
        bodies = [
            _event(sponsor, number, [("STANDARD", 6)], original=original["clientTransactionId"])
            for _ in range(8)
        ]
        start = threading.Barrier(len(bodies))

        def reverse(body: dict[str, Any], start: threading.Barrier = start) -> calls.Outcome:
            start.wait()
            return _call(own_db, ALLOW, Endpoint.REVERSE_EVENT, body)

        with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
            outcomes = list(pool.map(reverse, bodies))

        assert sorted(o.status for o in outcomes) == [202] + [400] * 7
        refused = {o.body["code"] for o in outcomes if o.status == 400}
        assert refused == {"REVERSAL_EXCEEDS_ORIGINAL"}


@pytest.mark.postgres_only
def test_racing_resends_of_an_unknown_collectors_event_are_one_transaction(
    own_db: Database,
) -> None:
    """No collector row to lock: the resends race to the unique index; each loser runs again,
    finds the winner and replays it."""
    sponsor = data.new_sponsor(own_db)
    for _ in range(5):
        body = _event(sponsor, data.unknown_collector(), [("STANDARD", 4)])
        start = threading.Barrier(8)

        def send(_: int, body: dict[str, Any] = body, start: threading.Barrier = start) -> Any:
            start.wait()
            return _call(own_db, ALLOW, Endpoint.POST_EVENT, body)

        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(send, range(8)))

        assert [o.status for o in outcomes] == [202] * 8
        assert sorted(o.replayed for o in outcomes) == [False] + [True] * 7
        assert len({o.transaction_id for o in outcomes}) == 1
        assert {_bytes(o) for o in outcomes} == {_bytes(outcomes[0])}
