"""The rules of the write path (SPEC §3) in-process: every partner endpoint that records a
transaction, run through the service entry point its route calls (`tests.support.issue`), on a
database of this module's own, at a pinned Toronto-evening instant.

What a partner observes is asserted: the problem's code, the field at fault and the exact detail
of each refusal (and the rejected transaction it leaves), the response body, the lines' statuses
and pending reasons, the ledger entries and the balance after each call. Every test has a sponsor
of its own, so its offers and locations reach no other test.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from rewardmiles.collectors import service as collectors
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.db.models import Collector, IssuanceLine, LedgerEntry, Offer, Transaction
from rewardmiles.errors import PROBLEM_CODES
from rewardmiles.issuance import calls
from rewardmiles.ledger.verify import verify
from rewardmiles.offers import service as offers
from rewardmiles.vocabulary import Endpoint
from tests.conftest import DatabaseFactory
from tests.support import data
from tests.support.issue import partner_call

POST, POST_EVENT, REVERSE, REVERSE_EVENT = (
    Endpoint.POST,
    Endpoint.POST_EVENT,
    Endpoint.REVERSE,
    Endpoint.REVERSE_EVENT,
)
RECORD, ISSUE = Endpoint.RECORD, Endpoint.ISSUE

# 02:00 UTC on 21 November is 21:00 on 20 November in Toronto (EST, UTC-5): an offer's dates and
# the Transaction Day are read in the program time zone, where it is still the 20th.
TORONTO_EVENING = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
TORONTO_DAY = date(2026, 11, 20)
NOW = TORONTO_EVENING + timedelta(minutes=1)
PROCESSED = "2026-11-20T21:01:00.000-05:00"  # NOW, as the responses' transactionDateTime

PENDING_POLICY = Settings.from_env({})  # the defaults: unknown collectors wait, 30 days back
REJECT_UNKNOWN = Settings.from_env({}, unknown_collector_policy="reject")
ENROLL_UNKNOWN = Settings.from_env({}, unknown_collector_policy="enroll")
WEEK_BACK = Settings.from_env({}, backdate_days_max=7)


@pytest.fixture(scope="module")
def own_db(dialect: str, database_factory: DatabaseFactory) -> Iterator[Database]:
    database = Database.from_url(database_factory.create(dialect))
    yield database
    with database.reader() as session:
        report = verify(session, PENDING_POLICY)
    database.dispose()
    assert report.ok, report.problems


# Every call of this module at NOW unless it says otherwise, as one partner client.
_call = functools.partial(partner_call, now=NOW, client_id="write-rules")

Line = tuple[str, int] | tuple[str, int, str]


def _issuances(lines: list[Line]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        issuance: dict[str, Any] = {"issuanceOfferCode": line[0], "milesAmount": line[1]}
        if len(line) == 3:
            issuance["locationCode"] = line[2]
        out.append(issuance)
    return out


def event(
    sponsor: str,
    collector: str,
    lines: list[Line],
    *,
    at: datetime = TORONTO_EVENING,
    original: str | None = None,
) -> dict[str, Any]:
    """A POST/EVENT (with `original`, a REVERSE/EVENT) body dated `at`."""
    extra: dict[str, Any] = {} if original is None else {"originalClientTransactionId": original}
    return data.event_body(
        sponsor, collector, transactionDateTime=data.iso(at), issuances=_issuances(lines), **extra
    )


def basket(
    sponsor: str, collector: str | None, lines: list[Line] | None, *, at: datetime = TORONTO_EVENING
) -> dict[str, Any]:
    """A POST/REVERSE/RECORD basket body dated `at` (RECORD: collector and lines optional)."""
    body: dict[str, Any] = {
        "checkoutTransactionId": data.txn_id("b"),
        "sponsorCode": sponsor,
        "checkoutDateTime": data.iso(at),
        "basketPreTaxAmount": 24.97,
        "basketPostTaxAmount": 24.97,
    }
    if collector is not None:
        body["collectorNumber"] = collector
    if lines is not None:
        body["issuances"] = _issuances(lines)
    return body


def refused(
    db: Database,
    endpoint: Endpoint,
    body: dict[str, Any],
    settings: Settings = PENDING_POLICY,
    *,
    now: datetime = NOW,
) -> tuple[str, str, list[tuple[str, str | None, str]]]:
    """(code, detail, [(code, field, message)]) of the 400 a partner gets; checks the problem's
    shape and that the refusal was recorded as a rejected transaction with nothing else."""
    outcome = _call(db, settings, endpoint, body, now=now)
    assert outcome.status == 400, outcome.body
    assert outcome.transaction_id is None
    problem = outcome.body
    code = problem["code"]
    assert problem["type"] == f"/problems/{code}"
    assert problem["title"] == PROBLEM_CODES[code].title
    assert problem["status"] == 400
    assert problem["requestId"] == "test"
    errors = [(e["code"], e.get("field"), e["message"]) for e in problem["errors"]]
    id_field = "clientTransactionId" if "clientTransactionId" in body else "checkoutTransactionId"
    with db.reader() as session:
        rows = session.execute(
            select(Transaction).where(
                Transaction.sponsor_code == body["sponsorCode"],
                Transaction.partner_transaction_id == body[id_field],
            )
        ).scalars()
        recorded = [(t.status, t.http_status, t.error_code, t.endpoint, t.id) for t in rows]
        assert len(recorded) == 1
        status, http_status, error_code, endpoint_value, transaction_id = recorded[0]
        lines = session.execute(
            select(IssuanceLine).where(IssuanceLine.transaction_id == transaction_id)
        ).all()
    assert (status, http_status, error_code, endpoint_value) == (
        "rejected",
        400,
        code,
        endpoint.value,
    )
    assert lines == []
    return code, problem["detail"], errors


def accepted(
    db: Database,
    endpoint: Endpoint,
    body: dict[str, Any],
    status: int = 200,
    settings: Settings = PENDING_POLICY,
    **kw: Any,
) -> calls.Outcome:
    outcome = _call(db, settings, endpoint, body, **kw)
    assert outcome.status == status, outcome.body
    assert outcome.transaction_id is not None
    assert outcome.body["transactionId"] == outcome.transaction_id
    assert outcome.body["transactionDateTime"] == PROCESSED
    return outcome


def lines_of(db: Database, transaction_id: str | None) -> list[tuple[Any, ...]]:
    """(line no, direction, offer, location, miles, status, pending reason, error code, settled)."""
    with db.reader() as session:
        rows = session.execute(
            select(
                IssuanceLine.line_no,
                IssuanceLine.direction,
                IssuanceLine.offer_code,
                IssuanceLine.location_code,
                IssuanceLine.miles,
                IssuanceLine.status,
                IssuanceLine.pending_reason,
                IssuanceLine.error_code,
                IssuanceLine.settled_at,
            )
            .where(IssuanceLine.transaction_id == transaction_id)
            .order_by(IssuanceLine.line_no)
        ).all()
    return [tuple(r) for r in rows]


def entries_of(db: Database, transaction_id: str | None) -> list[tuple[Any, ...]]:
    """(line no, account kind, account code, miles, posted at) of a transaction's entries."""
    with db.reader() as session:
        rows = session.execute(
            select(
                LedgerEntry.line_no,
                LedgerEntry.account_kind,
                LedgerEntry.account_code,
                LedgerEntry.amount_miles,
                LedgerEntry.posted_at,
            ).where(LedgerEntry.transaction_id == transaction_id)
        ).all()
    return sorted(tuple(r) for r in rows)


def transaction_of(db: Database, transaction_id: str | None) -> Transaction:
    with db.reader() as session:
        row = session.get(Transaction, transaction_id)
        assert row is not None
        session.expunge(row)
    return row


def collector_row(db: Database, number: str) -> tuple[str, int, datetime, datetime] | None:
    with db.reader() as session:
        row = session.get(Collector, number)
        return (
            None if row is None else (row.status, row.balance_miles, row.created_at, row.updated_at)
        )


def credit(collector: str, sponsor: str, line_no: int, miles: int) -> list[tuple[Any, ...]]:
    """The entry pair of a posted line at NOW: +miles to the collector, -miles to the sponsor."""
    return [
        (line_no, "collector", collector, miles, NOW),
        (line_no, "sponsor", sponsor, -miles, NOW),
    ]


def add_offer(db: Database, sponsor: str, code: str, **validity: date) -> None:
    with db.unit_of_work() as session:
        session.add(Offer(sponsor_code=sponsor, code=code, active=True, created_at=NOW, **validity))


def disable_offer(db: Database, sponsor: str, code: str) -> None:
    with db.unit_of_work() as session:
        offers.disable_offer(session, sponsor, code)


def set_status(db: Database, number: str, status: str) -> None:
    with db.unit_of_work() as session:
        collectors.set_status(session, number, status, NOW)


# --------------------------------------------------------------------------- what is written


def test_an_accepted_event_answers_and_writes_each_line_with_its_status_and_entries(
    own_db: Database,
) -> None:
    """A line at the review threshold posts, one mile above it waits for review; the body echoes
    the request with each line's status, the rows hold what was asked."""
    sponsor = data.new_sponsor(own_db, locations=["L1", "L2"], review_threshold_miles=100)
    number = data.new_collector(own_db)
    body = event(sponsor, number, [("STANDARD", 100, "L1"), ("STANDARD", 101, "L2")])

    outcome = accepted(own_db, POST_EVENT, body, 202)

    tid = outcome.transaction_id
    assert outcome.body == {
        "clientTransactionId": body["clientTransactionId"],
        "collectorNumber": number,
        "sponsorCode": sponsor,
        "issuances": [
            {
                "issuanceOfferCode": "STANDARD",
                "milesAmount": 100,
                "locationCode": "L1",
                "status": "ISSUED",
            },
            {
                "issuanceOfferCode": "STANDARD",
                "milesAmount": 101,
                "locationCode": "L2",
                "status": "PENDING",
            },
        ],
        "transactionDateTime": PROCESSED,
        "transactionId": tid,
    }
    assert lines_of(own_db, tid) == [
        (0, "credit", "STANDARD", "L1", 100, "posted", None, None, NOW),
        (1, "credit", "STANDARD", "L2", 101, "pending", "review", None, None),
    ]
    assert entries_of(own_db, tid) == credit(number, sponsor, 0, 100)
    assert data.balance(own_db, number) == 100
    row = transaction_of(own_db, tid)
    assert (row.status, row.http_status, row.error_code, row.endpoint) == (
        "pending",
        202,
        None,
        "post_event",
    )
    assert (row.sponsor_code, row.collector_number, row.original_transaction_id) == (
        sponsor,
        number,
        None,
    )
    assert row.partner_transaction_id == body["clientTransactionId"]
    assert (row.partner_datetime, row.processed_at, row.client_id) == (
        TORONTO_EVENING,
        NOW,
        "write-rules",
    )
    assert orjson.loads(row.response_json) == outcome.body
    assert orjson.loads(row.request_json) == body


def test_a_basket_whose_lines_all_post_answers_200_and_is_posted(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    body = basket(sponsor, number, [("STANDARD", 8), ("STANDARD", 3, "ANY1")])

    outcome = accepted(own_db, POST, body)

    tid = outcome.transaction_id
    assert outcome.body["issuances"] == [
        {"issuanceOfferCode": "STANDARD", "milesAmount": 8, "status": "ISSUED"},
        {
            "issuanceOfferCode": "STANDARD",
            "milesAmount": 3,
            "locationCode": "ANY1",
            "status": "ISSUED",
        },
    ]
    assert lines_of(own_db, tid) == [
        (0, "credit", "STANDARD", None, 8, "posted", None, None, NOW),
        (1, "credit", "STANDARD", "ANY1", 3, "posted", None, None, NOW),
    ]
    assert entries_of(own_db, tid) == sorted(
        credit(number, sponsor, 0, 8) + credit(number, sponsor, 1, 3)
    )
    assert transaction_of(own_db, tid).status == "posted"
    assert data.balance(own_db, number) == 11


def test_a_record_stores_its_lines_without_a_status_and_moves_no_miles(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    body = basket(sponsor, number, [("STANDARD", 8)])

    outcome = accepted(own_db, RECORD, body)

    tid = outcome.transaction_id
    assert outcome.body["issuances"] == [{"issuanceOfferCode": "STANDARD", "milesAmount": 8}]
    assert lines_of(own_db, tid) == [(0, "none", "STANDARD", None, 8, "recorded", None, None, None)]
    assert entries_of(own_db, tid) == []
    row = transaction_of(own_db, tid)
    assert (row.status, row.http_status, row.collector_number) == ("recorded", 200, number)
    assert data.balance(own_db, number) == 0


def test_a_record_without_lines_or_collector_answers_without_issuances(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db)
    body = basket(sponsor, None, None)

    outcome = accepted(own_db, RECORD, body)

    assert outcome.body == {
        "checkoutTransactionId": body["checkoutTransactionId"],
        "sponsorCode": sponsor,
        "checkoutDateTime": body["checkoutDateTime"],
        "basketPreTaxAmount": 24.97,
        "basketPostTaxAmount": 24.97,
        "transactionDateTime": PROCESSED,
        "transactionId": outcome.transaction_id,
    }
    assert lines_of(own_db, outcome.transaction_id) == []
    row = transaction_of(own_db, outcome.transaction_id)
    assert (row.status, row.collector_number, row.partner_datetime) == (
        "recorded",
        None,
        TORONTO_EVENING,
    )


def test_a_record_is_refused_an_inactive_offer_and_a_closed_collector(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db)
    add_offer(own_db, sponsor, "OLD")
    disable_offer(own_db, sponsor, "OLD")
    number = data.new_collector(own_db, "CLOSED")

    assert refused(own_db, RECORD, basket(sponsor, None, [("OLD", 8)])) == (
        "OFFER_INACTIVE",
        "One or more offers cannot be used.",
        [
            (
                "OFFER_INACTIVE",
                "issuances[0].issuanceOfferCode",
                "Offer OLD is not active on 2026-11-20.",
            )
        ],
    )
    assert refused(own_db, RECORD, basket(sponsor, number, [("STANDARD", 8)])) == (
        "COLLECTOR_CLOSED",
        "The collector's account is closed.",
        [("COLLECTOR_CLOSED", "collectorNumber", "The collector's account is closed.")],
    )


def test_an_issue_that_earns_nothing_is_accepted_without_issuances(own_db: Database) -> None:
    """The program path through the same rules and write: no rule-bearing offer applies, so no
    line is computed and the body carries none."""
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    body = basket(sponsor, number, None)
    body["items"] = [{"id": "kettle", "quantity": 1, "finalAmount": 24.97}]

    outcome = accepted(own_db, ISSUE, body)

    assert "issuances" not in outcome.body
    assert outcome.body["totalMiles"] == 0
    assert lines_of(own_db, outcome.transaction_id) == []
    assert transaction_of(own_db, outcome.transaction_id).status == "posted"
    assert data.balance(own_db, number) == 0


def test_an_issue_posts_the_lines_its_offers_compute(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    with own_db.unit_of_work() as session:
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
    body = basket(sponsor, number, None)
    body["items"] = [{"id": "kettle", "quantity": 1, "finalAmount": 24.97}]

    outcome = accepted(own_db, ISSUE, body)

    assert [
        (i["issuanceOfferCode"], i["milesAmount"], i["status"]) for i in outcome.body["issuances"]
    ] == [("BASE", 2, "ISSUED")]
    assert lines_of(own_db, outcome.transaction_id) == [
        (0, "credit", "BASE", None, 2, "posted", None, None, NOW)
    ]
    assert entries_of(own_db, outcome.transaction_id) == credit(number, sponsor, 0, 2)
    assert data.balance(own_db, number) == 2


# --------------------------------------------------------------------------- the collector


def test_an_unknown_collector_is_refused_where_the_program_rejects_unknown_ones(
    own_db: Database,
) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.unknown_collector()

    assert refused(
        own_db, POST_EVENT, event(sponsor, number, [("STANDARD", 8)]), REJECT_UNKNOWN
    ) == (
        "COLLECTOR_NOT_FOUND",
        f"Collector {number} is not enrolled.",
        [("COLLECTOR_NOT_FOUND", "collectorNumber", f"Collector {number} is not enrolled.")],
    )
    assert collector_row(own_db, number) is None


def test_an_unknown_collector_waits_under_the_default_policy_and_is_not_enrolled(
    own_db: Database,
) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.unknown_collector()

    outcome = accepted(own_db, POST_EVENT, event(sponsor, number, [("STANDARD", 8)]), 202)

    assert outcome.body["issuances"][0]["status"] == "PENDING"
    assert lines_of(own_db, outcome.transaction_id) == [
        (0, "credit", "STANDARD", None, 8, "pending", "collector_unknown", None, None)
    ]
    assert entries_of(own_db, outcome.transaction_id) == []
    assert collector_row(own_db, number) is None


def test_an_unknown_collector_is_enrolled_active_and_credited_under_the_enroll_policy(
    own_db: Database,
) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.unknown_collector()

    outcome = accepted(
        own_db, POST_EVENT, event(sponsor, number, [("STANDARD", 8)]), settings=ENROLL_UNKNOWN
    )

    assert outcome.body["issuances"][0]["status"] == "ISSUED"
    assert entries_of(own_db, outcome.transaction_id) == credit(number, sponsor, 0, 8)
    assert collector_row(own_db, number) == ("ACTIVE", 8, NOW, NOW)


def test_a_collector_enrolled_by_a_line_under_review_opens_at_zero(own_db: Database) -> None:
    """Nothing posts, so the new account is exactly as enrolled; its line waits for review (the
    collector, enrolled, is no reason to wait)."""
    sponsor = data.new_sponsor(own_db, review_threshold_miles=10)
    number = data.unknown_collector()

    outcome = accepted(
        own_db, POST_EVENT, event(sponsor, number, [("STANDARD", 11)]), 202, ENROLL_UNKNOWN
    )

    assert lines_of(own_db, outcome.transaction_id) == [
        (0, "credit", "STANDARD", None, 11, "pending", "review", None, None)
    ]
    assert collector_row(own_db, number) == ("ACTIVE", 0, NOW, NOW)


def test_a_closed_collector_is_refused_and_keeps_its_balance(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    accepted(own_db, POST_EVENT, event(sponsor, number, [("STANDARD", 8)]))
    set_status(own_db, number, "CLOSED")

    assert refused(own_db, POST_EVENT, event(sponsor, number, [("STANDARD", 5)])) == (
        "COLLECTOR_CLOSED",
        "The collector's account is closed.",
        [("COLLECTOR_CLOSED", "collectorNumber", "The collector's account is closed.")],
    )
    assert data.balance(own_db, number) == 8


def test_a_collector_on_hold_waits_and_review_comes_before_the_hold(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db, review_threshold_miles=10)
    number = data.new_collector(own_db, "ON_HOLD")

    outcome = accepted(
        own_db, POST_EVENT, event(sponsor, number, [("STANDARD", 10), ("STANDARD", 11)]), 202
    )

    assert [i["status"] for i in outcome.body["issuances"]] == ["PENDING", "PENDING"]
    assert lines_of(own_db, outcome.transaction_id) == [
        (0, "credit", "STANDARD", None, 10, "pending", "collector_on_hold", None, None),
        (1, "credit", "STANDARD", None, 11, "pending", "review", None, None),
    ]
    assert data.balance(own_db, number) == 0


# --------------------------------------------------------------------------- the date window


FUTURE = "{} is more than 5 minutes in the future."
OLD = "{} is older than the backdate window (7 days)."


@pytest.mark.parametrize(
    ("endpoint", "field"), [(POST_EVENT, "transactionDateTime"), (POST, "checkoutDateTime")]
)
def test_the_date_window_admits_its_edges_and_refuses_a_millisecond_beyond(
    own_db: Database, endpoint: Endpoint, field: str
) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    build = event if endpoint is POST_EVENT else basket
    latest = NOW + timedelta(minutes=5)
    earliest = NOW - timedelta(days=7)
    ms = timedelta(milliseconds=1)

    for at in (latest, earliest):
        accepted(
            own_db, endpoint, build(sponsor, number, [("STANDARD", 1)], at=at), settings=WEEK_BACK
        )
    for at, detail in ((latest + ms, FUTURE), (earliest - ms, OLD)):
        message = detail.format(field)
        assert refused(
            own_db, endpoint, build(sponsor, number, [("STANDARD", 1)], at=at), WEEK_BACK
        ) == (
            "DATE_OUT_OF_RANGE",
            message,
            [("DATE_OUT_OF_RANGE", field, message)],
        )
    assert data.balance(own_db, number) == 2


# --------------------------------------------------------------------------- offers and locations


def test_an_offer_is_usable_from_its_first_to_its_last_toronto_day(own_db: Database) -> None:
    """At 21:00 on the 20th in Toronto, offers starting or ending on the 20th apply; one that
    ended on the 19th or starts on the 21st (the UTC date) does not."""
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    add_offer(own_db, sponsor, "FROM20", valid_from=TORONTO_DAY)
    add_offer(own_db, sponsor, "UNTIL20", valid_to=TORONTO_DAY)
    add_offer(own_db, sponsor, "UNTIL19", valid_to=TORONTO_DAY - timedelta(days=1))
    add_offer(own_db, sponsor, "FROM21", valid_from=TORONTO_DAY + timedelta(days=1))

    outcome = accepted(own_db, POST_EVENT, event(sponsor, number, [("FROM20", 2), ("UNTIL20", 3)]))
    assert [i["status"] for i in outcome.body["issuances"]] == ["ISSUED", "ISSUED"]

    assert refused(
        own_db, POST_EVENT, event(sponsor, number, [("STANDARD", 1), ("UNTIL19", 1), ("FROM21", 1)])
    ) == (
        "OFFER_INACTIVE",
        "One or more offers cannot be used.",
        [
            (
                "OFFER_INACTIVE",
                "issuances[1].issuanceOfferCode",
                "Offer UNTIL19 is not active on 2026-11-20.",
            ),
            (
                "OFFER_INACTIVE",
                "issuances[2].issuanceOfferCode",
                "Offer FROM21 is not active on 2026-11-20.",
            ),
        ],
    )
    assert data.balance(own_db, number) == 5


def test_an_unknown_offer_is_refused_and_with_an_inactive_one_the_code_is_general(
    own_db: Database,
) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    add_offer(own_db, sponsor, "OLD")
    disable_offer(own_db, sponsor, "OLD")

    assert refused(own_db, POST, basket(sponsor, number, [("STANDARD", 1), ("NOPE", 1)])) == (
        "OFFER_UNKNOWN",
        "One or more offers cannot be used.",
        [
            (
                "OFFER_UNKNOWN",
                "issuances[1].issuanceOfferCode",
                f"Sponsor {sponsor} has no offer NOPE.",
            )
        ],
    )
    assert refused(own_db, POST_EVENT, event(sponsor, number, [("OLD", 1), ("NOPE", 1)])) == (
        "VALIDATION_FAILED",
        "One or more offers cannot be used.",
        [
            (
                "OFFER_INACTIVE",
                "issuances[0].issuanceOfferCode",
                "Offer OLD is not active on 2026-11-20.",
            ),
            (
                "OFFER_UNKNOWN",
                "issuances[1].issuanceOfferCode",
                f"Sponsor {sponsor} has no offer NOPE.",
            ),
        ],
    )
    assert data.balance(own_db, number) == 0


def test_a_location_must_be_registered_where_the_sponsor_registers_any(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db, locations=["L1"])
    number = data.new_collector(own_db)

    outcome = accepted(
        own_db, POST_EVENT, event(sponsor, number, [("STANDARD", 1), ("STANDARD", 2, "L1")])
    )
    assert lines_of(own_db, outcome.transaction_id) == [
        (0, "credit", "STANDARD", None, 1, "posted", None, None, NOW),
        (1, "credit", "STANDARD", "L1", 2, "posted", None, None, NOW),
    ]

    message = f"Location L2 is not registered for sponsor {sponsor}."
    assert refused(
        own_db,
        POST_EVENT,
        event(sponsor, number, [("STANDARD", 1), ("STANDARD", 1, "L1"), ("STANDARD", 1, "L2")]),
    ) == (
        "LOCATION_UNKNOWN",
        "One or more locations are not registered.",
        [("LOCATION_UNKNOWN", "issuances[2].locationCode", message)],
    )
    assert data.balance(own_db, number) == 3


def test_any_location_is_accepted_where_the_sponsor_registers_none(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)

    outcome = accepted(own_db, POST_EVENT, event(sponsor, number, [("STANDARD", 4, "SHOP9")]))

    assert lines_of(own_db, outcome.transaction_id) == [
        (0, "credit", "STANDARD", "SHOP9", 4, "posted", None, None, NOW)
    ]
    assert data.balance(own_db, number) == 4


# --------------------------------------------------------------------------- reversals


def test_a_reversal_of_an_original_takes_back_an_offer_disabled_since(own_db: Database) -> None:
    """Offer state applies to new credits only: a reversal naming its original takes back what
    the original issued; one naming none is a new debit and the offer must be usable."""
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    add_offer(own_db, sponsor, "GONE")
    original = event(sponsor, number, [("GONE", 5), ("STANDARD", 10)])
    original_id = accepted(own_db, POST_EVENT, original).transaction_id
    disable_offer(own_db, sponsor, "GONE")

    reversal = event(sponsor, number, [("GONE", 5)], original=original["clientTransactionId"])
    outcome = accepted(own_db, REVERSE_EVENT, reversal)

    assert outcome.body["issuances"] == [
        {"issuanceOfferCode": "GONE", "milesAmount": 5, "status": "REVERSED"}
    ]
    assert lines_of(own_db, outcome.transaction_id) == [
        (0, "debit", "GONE", None, 5, "posted", None, None, NOW)
    ]
    assert entries_of(own_db, outcome.transaction_id) == [
        (0, "collector", number, -5, NOW),
        (0, "sponsor", sponsor, 5, NOW),
    ]
    assert transaction_of(own_db, outcome.transaction_id).original_transaction_id == original_id
    assert data.balance(own_db, number) == 10

    assert refused(own_db, REVERSE_EVENT, event(sponsor, number, [("GONE", 1)])) == (
        "OFFER_INACTIVE",
        "One or more offers cannot be used.",
        [
            (
                "OFFER_INACTIVE",
                "issuances[0].issuanceOfferCode",
                "Offer GONE is not active on 2026-11-20.",
            )
        ],
    )
    assert data.balance(own_db, number) == 10


def test_a_reversal_is_bounded_per_offer_by_what_the_original_issued(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    add_offer(own_db, sponsor, "A")
    add_offer(own_db, sponsor, "B")
    original = basket(sponsor, number, [("A", 10), ("B", 5)])
    accepted(own_db, POST, original)
    named = original["checkoutTransactionId"]

    def reverse(lines: list[Line]) -> dict[str, Any]:
        body = basket(sponsor, number, lines)
        body["originalCheckoutTransactionId"] = named
        return body

    def exceeds(i: int, code: str, issued: int, already: int, would: int) -> tuple[str, str, str]:
        return (
            "REVERSAL_EXCEEDS_ORIGINAL",
            f"issuances[{i}].milesAmount",
            f"Offer {code}: {issued} miles issued on the original, {already} already reversed; "
            f"this request would reverse {would}.",
        )

    detail = "The reversal exceeds what the original issued."
    # Two lines of one offer count together; each offer against its own miles.
    assert refused(own_db, REVERSE, reverse([("A", 6), ("B", 5), ("A", 5)])) == (
        "REVERSAL_EXCEEDS_ORIGINAL",
        detail,
        [exceeds(2, "A", 10, 0, 11)],
    )
    # An offer the original did not issue has nothing to take back.
    assert refused(own_db, REVERSE, reverse([("STANDARD", 1)])) == (
        "REVERSAL_EXCEEDS_ORIGINAL",
        detail,
        [exceeds(0, "STANDARD", 0, 0, 1)],
    )
    first = accepted(own_db, REVERSE, reverse([("A", 4), ("B", 1)]))
    assert [i["status"] for i in first.body["issuances"]] == ["REVERSED", "REVERSED"]
    assert data.balance(own_db, number) == 10

    assert refused(own_db, REVERSE, reverse([("A", 7), ("B", 5)])) == (
        "REVERSAL_EXCEEDS_ORIGINAL",
        detail,
        [exceeds(0, "A", 10, 4, 7), exceeds(1, "B", 5, 1, 5)],
    )
    last = accepted(own_db, REVERSE, reverse([("A", 6), ("B", 4)]))
    assert lines_of(own_db, last.transaction_id) == [
        (0, "debit", "A", None, 6, "posted", None, None, NOW),
        (1, "debit", "B", None, 4, "posted", None, None, NOW),
    ]
    assert data.balance(own_db, number) == 0


def test_a_reversal_of_an_offer_still_pending_on_the_original_waits_for_it(
    own_db: Database,
) -> None:
    sponsor = data.new_sponsor(own_db, review_threshold_miles=50)
    number = data.new_collector(own_db)
    add_offer(own_db, sponsor, "BIG")
    original = event(sponsor, number, [("STANDARD", 10), ("BIG", 60)])
    accepted(own_db, POST_EVENT, original, 202)

    reversal = event(
        sponsor, number, [("STANDARD", 4), ("BIG", 60)], original=original["clientTransactionId"]
    )
    outcome = accepted(own_db, REVERSE_EVENT, reversal, 202)

    assert [i["status"] for i in outcome.body["issuances"]] == ["REVERSED", "PENDING"]
    assert lines_of(own_db, outcome.transaction_id) == [
        (0, "debit", "STANDARD", None, 4, "posted", None, None, NOW),
        (1, "debit", "BIG", None, 60, "pending", "review", None, None),
    ]
    assert data.balance(own_db, number) == 6


# --------------------------------------------------------------------------- the same id again


def refused_again(db: Database, body: dict[str, Any]) -> tuple[str, str, list[tuple[Any, ...]]]:
    """The 400 of a call whose id an accepted transaction holds (its rejection is recorded
    besides the accepted one)."""
    outcome = _call(db, PENDING_POLICY, POST_EVENT, body)
    assert outcome.status == 400, outcome.body
    errors = [(e["code"], e.get("field"), e["message"]) for e in outcome.body["errors"]]
    return outcome.body["code"], outcome.body["detail"], errors


def test_the_same_body_again_is_a_replay_and_another_body_a_duplicate(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    body = event(sponsor, number, [("STANDARD", 8)])
    first = accepted(own_db, POST_EVENT, body)

    again = _call(own_db, PENDING_POLICY, POST_EVENT, body)

    assert (again.status, again.replayed, again.transaction_id) == (200, True, first.transaction_id)
    assert again.body == first.body
    assert data.balance(own_db, number) == 8

    changed = {**body, "issuances": _issuances([("STANDARD", 9)])}
    message = f"clientTransactionId {body['clientTransactionId']} was already accepted with a different body."
    assert refused_again(own_db, changed) == (
        "DUPLICATE_TRANSACTION",
        message,
        [("DUPLICATE_TRANSACTION", "clientTransactionId", message)],
    )
    assert data.balance(own_db, number) == 8


def test_the_same_body_replays_even_once_a_rule_would_refuse_it(own_db: Database) -> None:
    """The collector closed since the call was accepted: the same call again still gets its
    answer, another body under the same id the duplicate's refusal, not the closed account's."""
    sponsor = data.new_sponsor(own_db)
    number = data.new_collector(own_db)
    body = event(sponsor, number, [("STANDARD", 8)])
    first = accepted(own_db, POST_EVENT, body)
    set_status(own_db, number, "CLOSED")

    again = _call(own_db, PENDING_POLICY, POST_EVENT, body)

    assert (again.status, again.replayed, again.transaction_id) == (200, True, first.transaction_id)
    assert again.body == first.body
    changed = {**body, "issuances": _issuances([("STANDARD", 9)])}
    assert refused_again(own_db, changed)[0] == "DUPLICATE_TRANSACTION"
    assert data.balance(own_db, number) == 8
