"""The program-calculated use cases (docs/offers.md) in-process: CALCULATE, ISSUE and RETURN run
through the service entry points their routes call (`tests.support.issue.partner_call`), on a
database of this module's own, every clock injected.

What a partner observes is asserted: the computed lines (offer, miles, contributing items,
location, status), the totals, the problems and the field at fault, the balance after each call.
Every test has a sponsor of its own, so its offers reach no other test.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.db.models import Transaction
from rewardmiles.errors import PROBLEM_CODES, BusinessRuleError, ProblemError
from rewardmiles.http.partner_json import json_object_of
from rewardmiles.http.validation import validate_body
from rewardmiles.idempotency.service import InFlightRegistry
from rewardmiles.issuance import calculated, lookups
from rewardmiles.issuance.schemas import FIELD_CODES, FIELD_RULES, CalculateRequest, program_command
from rewardmiles.ledger.verify import verify
from rewardmiles.offers import engine
from rewardmiles.offers import service as offers
from rewardmiles.offers.rules import parse_rule
from rewardmiles.settlement import service as settlement
from rewardmiles.settlement.worker import settle_pending
from rewardmiles.vocabulary import Endpoint
from tests.conftest import DatabaseFactory
from tests.support import data
from tests.support.issue import partner_call

CALCULATE, ISSUE, RETURN = Endpoint.CALCULATE, Endpoint.ISSUE, Endpoint.RETURN

# 02:00 UTC on 21 November is 21:00 on 20 November in Toronto: the checkout's offers are those
# valid on the 20th.
NOW = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
CHECKOUT = NOW - timedelta(seconds=5)
TORONTO_DAY = date(2026, 11, 20)
PROCESSED = "2026-11-20T21:00:00.000-05:00"  # NOW, as the responses' transactionDateTime

SETTINGS = Settings.from_env({})
ORIGINAL = "originalCheckoutTransactionId"

BASE = {"type": "base", "miles": 1, "perDollars": 10}
PRODUCE = {"type": "item", "departments": ["produce"], "milesPerUnit": 5, "minQuantity": 2}
SPRING = {"type": "coupon", "coupon": "SPRING25", "miles": 25, "minSpend": 50}


@pytest.fixture(scope="module")
def own_db(dialect: str, database_factory: DatabaseFactory) -> Iterator[Database]:
    database = Database.from_url(database_factory.create(dialect))
    yield database
    with database.reader() as session:
        report = verify(session, SETTINGS)
    database.dispose()
    assert report.ok, report.problems


def item(item_id: str, final: float, quantity: int = 1, **fields: Any) -> dict[str, Any]:
    return {"id": item_id, "quantity": quantity, "finalAmount": final, **fields}


APPLES = item("apples", 7.50, 3, departmentId="produce", name="Apple")
KETTLE = item("kettle", 50.00, departmentId="home", categoryId="small-appliances")


def _amount(items: tuple[dict[str, Any], ...]) -> float:
    return float(sum((Decimal(str(i["finalAmount"])) for i in items), Decimal(0)))


def basket(
    sponsor: str, collector: str, *items: dict[str, Any], **overrides: Any
) -> dict[str, Any]:
    amount = _amount(items)
    body: dict[str, Any] = {
        "checkoutTransactionId": data.txn_id("p"),
        "collectorNumber": collector,
        "sponsorCode": sponsor,
        "checkoutDateTime": data.iso(CHECKOUT),
        "basketPreTaxAmount": amount,
        "basketPostTaxAmount": amount,
        "items": list(items),
    }
    body.update(overrides)
    return body


def returning(
    sponsor: str, collector: str, original: str, *items: dict[str, Any], **overrides: Any
) -> dict[str, Any]:
    return basket(sponsor, collector, *items, **{ORIGINAL: original, **overrides})


# Every call of this module at NOW, as one partner client.
_call = functools.partial(partner_call, now=NOW, client_id="program-calculated")


def run(
    db: Database,
    endpoint: Endpoint,
    body: dict[str, Any],
    status: int = 200,
    settings: Settings = SETTINGS,
    **kw: Any,
) -> dict[str, Any]:
    outcome = _call(db, settings, endpoint, body, **kw)
    assert outcome.status == status, outcome.body
    return outcome.body


def refused(
    db: Database, endpoint: Endpoint, body: dict[str, Any], settings: Settings = SETTINGS
) -> dict[str, Any]:
    """The problem a partner gets: ISSUE and RETURN answer (and record) a 400; CALCULATE without
    a key raises the rule, which its route renders as the 400."""
    if endpoint is CALCULATE:
        with pytest.raises(BusinessRuleError) as rule:
            _call(db, settings, endpoint, body)
        return {
            "code": rule.value.code,
            "detail": rule.value.detail,
            "errors": [e.as_dict() for e in rule.value.errors],
        }
    outcome = _call(db, settings, endpoint, body)
    assert outcome.status == 400, outcome.body
    assert outcome.transaction_id is None
    return {
        "code": outcome.body["code"],
        "detail": outcome.body["detail"],
        "errors": outcome.body.get("errors", []),
    }


def field_error(code: str, field: str, message: str) -> dict[str, str]:
    return {"code": code, "field": field, "message": message}


def lines(out: dict[str, Any]) -> list[tuple[Any, ...]]:
    """(offer code, miles, contributing items, status) of each line of a response."""
    return [
        (
            ln["issuanceOfferCode"],
            ln["milesAmount"],
            ln.get("contributingItemIds"),
            ln.get("status"),
        )
        for ln in out.get("issuances", [])
    ]


def new_shop(db: Database, *, locations: list[str] | None = None, **sponsor: Any) -> str:
    return data.new_sponsor(db, locations=locations, **sponsor)


def offer(
    db: Database,
    sponsor: str,
    code: str,
    rule: dict[str, Any] | None,
    *,
    description: str | None = None,
    offer_id: str | None = None,
    valid_from: date | None = None,
    valid_to: date | None = None,
    locations: list[str] | None = None,
    replace: bool = False,
) -> None:
    with db.unit_of_work() as session:
        offers.put_offer(
            session,
            sponsor,
            code,
            description=description if description is not None else f"Offer {code}",
            rule=rule,
            valid_from=valid_from,
            valid_to=valid_to,
            locations=locations,
            offer_id=offer_id,
            now=NOW,
            replace=replace,
        )


def standard_offers(db: Database, sponsor: str) -> None:
    offer(db, sponsor, "BASE", BASE, description="1 mile per $10", offer_id="501")
    offer(db, sponsor, "PRODUCE", PRODUCE, description="5 miles per produce item", offer_id="502")
    offer(db, sponsor, "SPRING", SPRING, description="25 miles with SPRING25")


def disable(db: Database, sponsor: str, code: str) -> None:
    with db.unit_of_work() as session:
        offers.disable_offer(session, sponsor, code)


def transactions_of(db: Database, sponsor: str) -> list[tuple[str, str, int, str | None]]:
    """(endpoint, status, HTTP status, error code) of the sponsor's stored transactions, sorted
    (every call of this module is processed at the same moment)."""
    with db.reader() as session:
        rows = session.execute(
            select(
                Transaction.endpoint,
                Transaction.status,
                Transaction.http_status,
                Transaction.error_code,
            ).where(Transaction.sponsor_code == sponsor)
        ).all()
    return sorted((row[0], row[1], row[2], row[3]) for row in rows)


def transaction_count(db: Database, sponsor: str) -> int:
    with db.reader() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Transaction)
                .where(Transaction.sponsor_code == sponsor)
            )
            or 0
        )


# The lines of 3 apples (produce), a kettle and the SPRING25 coupon under the standard offers.
EXPECTED_LINES = [
    {
        "contributingItemIds": ["apples", "kettle"],
        "issuanceOfferCode": "BASE",
        "milesAmount": 5,
        "offerDescription": "1 mile per $10",
        "offerId": "501",
    },
    {
        "contributingItemIds": ["apples"],
        "issuanceOfferCode": "PRODUCE",
        "milesAmount": 15,
        "offerDescription": "5 miles per produce item",
        "offerId": "502",
    },
    {
        "contributingItemIds": ["apples", "kettle"],
        "issuanceOfferCode": "SPRING",
        "milesAmount": 25,
        "offerDescription": "25 miles with SPRING25",
    },
]


# --------------------------------------------------------------------------- CALCULATE


def test_calculate_previews_the_offers_and_records_nothing(own_db: Database) -> None:
    sponsor = new_shop(own_db)
    standard_offers(own_db, sponsor)
    collector = data.new_collector(own_db)
    body = basket(sponsor, collector, APPLES, KETTLE, coupon=["SPRING25"])

    outcome = _call(own_db, SETTINGS, CALCULATE, body)

    assert outcome.status == 200
    assert outcome.transaction_id is None
    assert not outcome.replayed
    assert outcome.body == {
        "basketPostTaxAmount": 57.5,
        "basketPreTaxAmount": 57.5,
        "checkoutDateTime": data.iso(CHECKOUT),
        "checkoutTransactionId": body["checkoutTransactionId"],
        "collectorNumber": collector,
        "coupon": ["SPRING25"],
        "issuances": EXPECTED_LINES,
        "items": [
            {
                "departmentId": "produce",
                "finalAmount": 7.5,
                "id": "apples",
                "name": "Apple",
                "quantity": 3,
            },
            {
                "categoryId": "small-appliances",
                "departmentId": "home",
                "finalAmount": 50.0,
                "id": "kettle",
                "quantity": 1,
            },
        ],
        "sponsorCode": sponsor,
        "totalMiles": 45,
        "transactionDateTime": PROCESSED,
    }
    # The echo in alphabetical order, the processing time after it (as a response is written).
    keys = list(outcome.body)
    assert keys == [*sorted(keys[:-1]), "transactionDateTime"]
    assert data.balance(own_db, collector) == 0
    assert transaction_count(own_db, sponsor) == 0


def test_calculate_of_a_basket_earning_nothing_has_no_lines(own_db: Database) -> None:
    sponsor = new_shop(own_db)
    standard_offers(own_db, sponsor)
    collector = data.new_collector(own_db)
    gum = item("gum", 4.99, departmentId="candy")

    preview = run(own_db, CALCULATE, basket(sponsor, collector, gum, coupon=["OTHER"]))
    issued = run(own_db, ISSUE, basket(sponsor, collector, gum, coupon=["OTHER"]))

    assert "issuances" not in preview
    assert preview["totalMiles"] == 0
    assert "issuances" not in issued
    assert issued["totalMiles"] == 0
    assert data.balance(own_db, collector) == 0


def test_calculate_with_a_key_stores_the_preview_and_replays_it(own_db: Database) -> None:
    """SPEC §4: a retried preview shows the same miles even if the offers changed in between."""
    sponsor = new_shop(own_db)
    standard_offers(own_db, sponsor)
    collector = data.new_collector(own_db)
    body = basket(sponsor, collector, APPLES, KETTLE, coupon=["SPRING25"])
    later = NOW + timedelta(minutes=1)

    first = _call(own_db, SETTINGS, CALCULATE, body, idempotency_key="calc-1")
    disable(own_db, sponsor, "PRODUCE")
    replay = _call(own_db, SETTINGS, CALCULATE, body, idempotency_key="calc-1", now=later)
    fresh = _call(own_db, SETTINGS, CALCULATE, body, idempotency_key="calc-2", now=later)
    unkeyed = _call(own_db, SETTINGS, CALCULATE, body, now=later)

    assert (first.status, first.replayed) == (200, False)
    assert first.body["issuances"] == EXPECTED_LINES
    assert first.body["transactionDateTime"] == PROCESSED
    assert (replay.status, replay.replayed) == (200, True)
    assert replay.body == first.body
    assert (fresh.status, fresh.replayed) == (200, False)
    assert lines(fresh.body) == [
        ("BASE", 5, ["apples", "kettle"], None),
        ("SPRING", 25, ["apples", "kettle"], None),
    ]
    assert fresh.body["transactionDateTime"] == "2026-11-20T21:01:00.000-05:00"
    assert unkeyed.body == fresh.body
    assert not unkeyed.replayed
    assert data.balance(own_db, collector) == 0
    assert transaction_count(own_db, sponsor) == 0


def test_calculate_rule_rejection_under_a_key_is_stored_and_replayed(own_db: Database) -> None:
    sponsor = new_shop(own_db)
    offer(own_db, sponsor, "BASE", BASE)
    collector = data.new_collector(own_db)
    body = basket(sponsor, collector, KETTLE, checkoutDateTime=data.iso(NOW - timedelta(days=31)))

    first = _call(own_db, SETTINGS, CALCULATE, body, idempotency_key="old", request_id="r-1")
    again = _call(own_db, SETTINGS, CALCULATE, body, idempotency_key="old", request_id="r-2")

    assert (first.status, first.replayed) == (400, False)
    assert first.body == {
        "type": "/problems/DATE_OUT_OF_RANGE",
        "title": PROBLEM_CODES["DATE_OUT_OF_RANGE"].title,
        "status": 400,
        "detail": "checkoutDateTime is older than the backdate window (30 days).",
        "code": "DATE_OUT_OF_RANGE",
        "errors": [
            field_error(
                "DATE_OUT_OF_RANGE",
                "checkoutDateTime",
                "checkoutDateTime is older than the backdate window (30 days).",
            )
        ],
        "requestId": "r-1",
    }
    assert (again.status, again.replayed) == (400, True)
    assert again.body == first.body
    assert transaction_count(own_db, sponsor) == 0


def test_calculate_with_a_key_this_process_is_running_is_refused(own_db: Database) -> None:
    sponsor = new_shop(own_db)
    standard_offers(own_db, sponsor)
    collector = data.new_collector(own_db)
    body = basket(sponsor, collector, KETTLE)
    registry = InFlightRegistry()

    with registry.hold("program-calculated", "busy"), pytest.raises(ProblemError) as busy:
        _call(own_db, SETTINGS, CALCULATE, body, idempotency_key="busy", registry=registry)
    outcome = _call(own_db, SETTINGS, CALCULATE, body, idempotency_key="busy", registry=registry)

    assert busy.value.code == "IDEMPOTENCY_KEY_IN_USE"
    assert (outcome.status, outcome.replayed) == (200, False)
    assert outcome.body["totalMiles"] == 5


@pytest.mark.parametrize("endpoint", [CALCULATE, ISSUE], ids=["calculate", "issue"])
@pytest.mark.parametrize(
    ("case", "code", "field", "detail"),
    [
        ("unknown sponsor", "SPONSOR_UNKNOWN", "sponsorCode", "Sponsor {sponsor} is unknown."),
        ("inactive sponsor", "SPONSOR_INACTIVE", "sponsorCode", "Sponsor {sponsor} is not active."),
        ("closed", "COLLECTOR_CLOSED", "collectorNumber", "The collector's account is closed."),
        (
            "not enrolled",
            "COLLECTOR_NOT_FOUND",
            "collectorNumber",
            "Collector {c} is not enrolled.",
        ),
        (
            "future",
            "DATE_OUT_OF_RANGE",
            "checkoutDateTime",
            "checkoutDateTime is more than 5 minutes in the future.",
        ),
        (
            "old",
            "DATE_OUT_OF_RANGE",
            "checkoutDateTime",
            "checkoutDateTime is older than the backdate window (30 days).",
        ),
        (
            "unregistered location",
            "LOCATION_UNKNOWN",
            "locationCode",
            "Location 042 is not registered for sponsor {sponsor}.",
        ),
    ],
)
def test_calculate_refuses_what_issue_refuses(
    own_db: Database, endpoint: Endpoint, case: str, code: str, field: str, detail: str
) -> None:
    sponsor = new_shop(own_db, locations=["0042"], active=case != "inactive sponsor")
    standard_offers(own_db, sponsor)
    collector = data.new_collector(own_db, "CLOSED" if case == "closed" else "ACTIVE")
    settings = SETTINGS
    body = basket(sponsor, collector, APPLES, KETTLE, locationCode="0042")
    if case == "unknown sponsor":
        body["sponsorCode"] = sponsor = "Z" + sponsor
    elif case == "not enrolled":
        body["collectorNumber"] = collector = data.unknown_collector()
        settings = Settings.from_env({}, unknown_collector_policy="reject")
    elif case == "future":
        body["checkoutDateTime"] = data.iso(NOW + timedelta(minutes=5, seconds=1))
    elif case == "old":
        body["checkoutDateTime"] = data.iso(NOW - timedelta(days=30, seconds=1))
    elif case == "unregistered location":
        body["locationCode"] = "042"
    message = detail.format(sponsor=sponsor, c=collector)

    problem = refused(own_db, endpoint, body, settings)

    assert problem == {
        "code": code,
        "detail": message,
        "errors": [field_error(code, field, message)],
    }
    stored = [("issue", "rejected", 400, code)] if endpoint is ISSUE else []
    assert transactions_of(own_db, sponsor) == stored


@pytest.mark.parametrize("endpoint", [CALCULATE, ISSUE], ids=["calculate", "issue"])
def test_dates_at_the_edges_of_the_window_are_accepted(
    own_db: Database, endpoint: Endpoint
) -> None:
    sponsor = new_shop(own_db)
    offer(own_db, sponsor, "BASE", BASE)
    collector = data.new_collector(own_db)

    for moment in (NOW + timedelta(minutes=5), NOW - timedelta(days=30)):
        body = basket(sponsor, collector, KETTLE, checkoutDateTime=data.iso(moment))
        assert lines(run(own_db, endpoint, body))[0][:2] == ("BASE", 5)


@pytest.mark.parametrize("endpoint", [CALCULATE, ISSUE], ids=["calculate", "issue"])
def test_an_unknown_collector_is_previewed_and_issued_pending(
    own_db: Database, endpoint: Endpoint
) -> None:
    sponsor = new_shop(own_db)
    standard_offers(own_db, sponsor)
    collector = data.unknown_collector()

    out = run(
        own_db,
        endpoint,
        basket(sponsor, collector, APPLES, KETTLE),
        202 if endpoint is ISSUE else 200,
    )

    status = "PENDING" if endpoint is ISSUE else None
    assert lines(out) == [
        ("BASE", 5, ["apples", "kettle"], status),
        ("PRODUCE", 15, ["apples"], status),
    ]


# --------------------------------------------------------------------------- line maximum


@pytest.mark.parametrize("endpoint", [CALCULATE, ISSUE], ids=["calculate", "issue"])
def test_a_computed_line_above_the_per_line_maximum_is_refused_at_its_line(
    own_db: Database, endpoint: Endpoint
) -> None:
    settings = Settings.from_env({}, miles_per_line_max=57)
    sponsor = new_shop(own_db)
    offer(own_db, sponsor, "AT", {"type": "base", "miles": 1, "perDollars": 1})  # 57: the maximum
    offer(own_db, sponsor, "BIG", {"type": "base", "miles": 2, "perDollars": 1})  # 114
    offer(own_db, sponsor, "OK", BASE)  # 5
    offer(own_db, sponsor, "XL", {"type": "base", "miles": 3, "perDollars": 1})  # 171
    collector = data.new_collector(own_db)

    problem = refused(own_db, endpoint, basket(sponsor, collector, APPLES, KETTLE), settings)

    assert problem == {
        "code": "MILES_AMOUNT_INVALID",
        "detail": "A computed line exceeds the per-line maximum.",
        "errors": [
            field_error(
                "MILES_AMOUNT_INVALID",
                "issuances[1].milesAmount",
                "Offer BIG computes 114 miles, above the per-line maximum of 57; the offer's "
                "rule needs a cap (capMiles).",
            ),
            field_error(
                "MILES_AMOUNT_INVALID",
                "issuances[3].milesAmount",
                "Offer XL computes 171 miles, above the per-line maximum of 57; the offer's "
                "rule needs a cap (capMiles).",
            ),
        ],
    }
    assert data.balance(own_db, collector) == 0

    disable(own_db, sponsor, "BIG")
    disable(own_db, sponsor, "XL")
    out = run(own_db, endpoint, basket(sponsor, collector, APPLES, KETTLE), settings=settings)
    assert [(ln["issuanceOfferCode"], ln["milesAmount"]) for ln in out["issuances"]] == [
        ("AT", 57),
        ("OK", 5),
    ]
    assert data.balance(own_db, collector) == (62 if endpoint is ISSUE else 0)


# --------------------------------------------------------------------------- ISSUE


def test_issue_posts_exactly_what_calculate_previewed(own_db: Database) -> None:
    sponsor = new_shop(own_db)
    standard_offers(own_db, sponsor)
    collector = data.new_collector(own_db)
    body = basket(sponsor, collector, APPLES, KETTLE, coupon=["SPRING25"])

    preview = run(own_db, CALCULATE, body)
    outcome = _call(own_db, SETTINGS, ISSUE, body)

    assert outcome.status == 200
    issued = outcome.body
    assert issued["transactionId"] == outcome.transaction_id
    assert [{k: v for k, v in ln.items() if k != "status"} for ln in issued["issuances"]] == (
        EXPECTED_LINES
    )
    assert [ln["status"] for ln in issued["issuances"]] == ["ISSUED"] * 3
    assert issued["totalMiles"] == 45
    skip = {"issuances", "transactionId"}
    assert {k: v for k, v in issued.items() if k not in skip} == {
        k: v for k, v in preview.items() if k not in skip
    }
    keys = list(issued)
    assert keys == [*sorted(keys[:-2]), "transactionDateTime", "transactionId"]
    assert data.balance(own_db, collector) == 45
    assert transactions_of(own_db, sponsor) == [("issue", "posted", 200, None)]

    again = _call(own_db, SETTINGS, ISSUE, body)  # the same body resent: a replay
    assert again.replayed
    assert again.body == issued
    assert data.balance(own_db, collector) == 45


def test_issue_for_an_on_hold_collector_is_pending_and_its_return_too(own_db: Database) -> None:
    sponsor = new_shop(own_db)
    standard_offers(own_db, sponsor)
    collector = data.new_collector(own_db, "ON_HOLD")

    issued = run(own_db, ISSUE, basket(sponsor, collector, APPLES, KETTLE), 202)
    back = run(
        own_db,
        RETURN,
        returning(sponsor, collector, issued["checkoutTransactionId"], item("apples", 5.00, 2)),
        202,
    )

    assert lines(issued) == [
        ("BASE", 5, ["apples", "kettle"], "PENDING"),
        ("PRODUCE", 15, ["apples"], "PENDING"),
    ]
    assert lines(back) == [("PRODUCE", 15, ["apples"], "PENDING")]
    assert data.balance(own_db, collector) == 0


def test_issue_uses_only_offers_valid_on_the_checkout_day_in_the_program_time_zone(
    own_db: Database,
) -> None:
    sponsor = new_shop(own_db)
    one_day = timedelta(days=1)
    utc_day = CHECKOUT.date()
    assert utc_day == TORONTO_DAY + one_day
    offer(own_db, sponsor, "EVENING", BASE, valid_from=TORONTO_DAY, valid_to=TORONTO_DAY)
    offer(
        own_db, sponsor, "UTCDAY", {"type": "base", "miles": 9, "perDollars": 1}, valid_from=utc_day
    )
    offer(
        own_db,
        sponsor,
        "OLD",
        {"type": "base", "miles": 7, "perDollars": 1},
        valid_to=TORONTO_DAY - one_day,
    )
    offer(own_db, sponsor, "NORULE", None)
    offer(own_db, sponsor, "OFF", {"type": "base", "miles": 3, "perDollars": 1})
    disable(own_db, sponsor, "OFF")
    collector = data.new_collector(own_db)

    preview = run(own_db, CALCULATE, basket(sponsor, collector, KETTLE))
    issued = run(own_db, ISSUE, basket(sponsor, collector, KETTLE))

    assert lines(preview) == [("EVENING", 5, ["kettle"], None)]
    assert lines(issued) == [("EVENING", 5, ["kettle"], "ISSUED")]
    assert data.balance(own_db, collector) == 5


def test_offers_apply_only_at_their_locations_and_lines_carry_the_location(
    own_db: Database,
) -> None:
    sponsor = new_shop(own_db, locations=["0042", "0099"])
    offer(own_db, sponsor, "ANY", BASE)
    offer(own_db, sponsor, "HERE", PRODUCE, locations=["0042"])
    offer(own_db, sponsor, "THERE", SPRING, locations=["0099"])
    collector = data.new_collector(own_db)

    here = run(
        own_db,
        ISSUE,
        basket(sponsor, collector, APPLES, KETTLE, locationCode="0042", coupon=["SPRING25"]),
    )
    there = run(
        own_db,
        CALCULATE,
        basket(sponsor, collector, APPLES, KETTLE, locationCode="0099", coupon=["SPRING25"]),
    )
    nowhere = run(own_db, ISSUE, basket(sponsor, collector, APPLES, KETTLE, coupon=["SPRING25"]))

    assert lines(here) == [
        ("ANY", 5, ["apples", "kettle"], "ISSUED"),
        ("HERE", 15, ["apples"], "ISSUED"),
    ]
    assert [ln["locationCode"] for ln in here["issuances"]] == ["0042", "0042"]
    assert here["locationCode"] == "0042"
    assert [(ln["issuanceOfferCode"], ln["locationCode"]) for ln in there["issuances"]] == [
        ("ANY", "0099"),
        ("THERE", "0099"),
    ]
    assert lines(nowhere) == [("ANY", 5, ["apples", "kettle"], "ISSUED")]
    assert "locationCode" not in nowhere["issuances"][0]
    assert data.balance(own_db, collector) == 25

    # A return takes back at the ISSUE's location, whatever location it names.
    back = run(
        own_db,
        RETURN,
        returning(sponsor, collector, here["checkoutTransactionId"], item("apples", 5.00, 2)),
    )
    assert [(ln["issuanceOfferCode"], ln.get("locationCode")) for ln in back["issuances"]] == [
        ("HERE", "0042")
    ]


def test_a_location_is_accepted_for_a_sponsor_that_registers_none(own_db: Database) -> None:
    sponsor = new_shop(own_db)
    offer(own_db, sponsor, "ANY", BASE)
    collector = data.new_collector(own_db)

    out = run(own_db, ISSUE, basket(sponsor, collector, KETTLE, locationCode="0007"))

    assert [(ln["issuanceOfferCode"], ln["locationCode"]) for ln in out["issuances"]] == [
        ("ANY", "0007")
    ]


def test_changed_offers_change_future_issues_not_the_returns_of_past_ones(
    own_db: Database,
) -> None:
    sponsor = new_shop(own_db)
    standard_offers(own_db, sponsor)
    collector = data.new_collector(own_db)
    issued = run(own_db, ISSUE, basket(sponsor, collector, APPLES, KETTLE, coupon=["SPRING25"]))
    original = issued["checkoutTransactionId"]

    offer(
        own_db,
        sponsor,
        "BASE",
        {"type": "base", "miles": 10, "perDollars": 1},
        description="changed",
        offer_id="999",
        replace=True,
    )
    disable(own_db, sponsor, "PRODUCE")
    offer(
        own_db,
        sponsor,
        "SPRING",
        {"type": "coupon", "coupon": "SPRING25", "miles": 1},
        replace=True,
    )
    offer(own_db, sponsor, "NEW", {"type": "item", "items": ["apples"], "milesPerUnit": 100})
    today = run(own_db, ISSUE, basket(sponsor, collector, APPLES, KETTLE, coupon=["SPRING25"]))
    assert lines(today) == [
        ("BASE", 570, ["apples", "kettle"], "ISSUED"),
        ("NEW", 300, ["apples"], "ISSUED"),
        ("SPRING", 1, ["apples", "kettle"], "ISSUED"),
    ]
    balance = data.balance(own_db, collector)

    first = run(own_db, RETURN, returning(sponsor, collector, original, item("apples", 5.00, 2)))
    second = run(
        own_db, RETURN, returning(sponsor, collector, original, KETTLE, item("apples", 2.50, 1))
    )

    without_status = [{k: v for k, v in ln.items() if k != "status"} for ln in first["issuances"]]
    assert without_status == [EXPECTED_LINES[1]]
    assert [{k: v for k, v in ln.items() if k != "status"} for ln in second["issuances"]] == [
        EXPECTED_LINES[0],
        EXPECTED_LINES[2],
    ]
    assert first["totalMiles"] + second["totalMiles"] == 45
    assert data.balance(own_db, collector) == balance - 45


# --------------------------------------------------------------------------- RETURN


def test_partial_returns_withdraw_per_offer_and_claw_back_a_broken_threshold(
    own_db: Database,
) -> None:
    sponsor = new_shop(own_db)
    standard_offers(own_db, sponsor)
    collector = data.new_collector(own_db)
    issued = run(own_db, ISSUE, basket(sponsor, collector, APPLES, KETTLE, coupon=["SPRING25"]))
    original = issued["checkoutTransactionId"]
    assert data.balance(own_db, collector) == 45

    # 2 of 3 apples: PRODUCE (from 2 items) no longer met → all 15; BASE floor(52.50/10) = 5.
    first_body = returning(sponsor, collector, original, item("apples", 5.00, 2))
    first = _call(own_db, SETTINGS, RETURN, first_body)
    assert first.status == 200
    assert first.body["issuances"] == [
        {**EXPECTED_LINES[1], "contributingItemIds": ["apples"], "status": "REVERSED"}
    ]
    assert first.body["totalMiles"] == 15
    assert first.body[ORIGINAL] == original
    assert first.body["transactionId"] == first.transaction_id
    keys = list(first.body)
    assert keys == [*sorted(keys[:-2]), "transactionDateTime", "transactionId"]
    assert data.balance(own_db, collector) == 30

    # The kettle: $2.50 left → BASE earns 0 (5 back), SPRING's minimum spend broken (25 back).
    second = run(own_db, RETURN, returning(sponsor, collector, original, KETTLE))
    assert lines(second) == [
        ("BASE", 5, ["kettle"], "REVERSED"),
        ("SPRING", 25, ["kettle"], "REVERSED"),
    ]
    assert second["totalMiles"] == 30
    assert data.balance(own_db, collector) == 0

    # The last apple: nothing left to take back.
    third = run(own_db, RETURN, returning(sponsor, collector, original, item("apples", 2.50)))
    assert "issuances" not in third
    assert third["totalMiles"] == 0
    assert data.balance(own_db, collector) == 0
    assert (
        transactions_of(own_db, sponsor)
        == [("issue", "posted", 200, None)] + [("return", "posted", 200, None)] * 3
    )


def test_a_return_takes_back_a_single_mile(own_db: Database) -> None:
    sponsor = new_shop(own_db)
    offer(own_db, sponsor, "BASE", BASE)
    collector = data.new_collector(own_db)
    original = run(own_db, ISSUE, basket(sponsor, collector, item("x", 30.00, 3)))
    assert lines(original) == [("BASE", 3, ["x"], "ISSUED")]

    out = run(
        own_db,
        RETURN,
        returning(sponsor, collector, original["checkoutTransactionId"], item("x", 10.00)),
    )

    assert lines(out) == [("BASE", 1, ["x"], "REVERSED")]
    assert data.balance(own_db, collector) == 2


@pytest.mark.parametrize(
    "steps",
    [
        [[("apples", 3), ("kettle", 1), ("mug", 2)]],
        [[("mug", 1)], [("apples", 1)], [("kettle", 1), ("mug", 1)], [("apples", 2)]],
        [[("apples", 1)], [("apples", 1)], [("apples", 1)], [("mug", 2)], [("kettle", 1)]],
    ],
    ids=["at-once", "mixed", "one-by-one"],
)
def test_returning_everything_in_steps_takes_back_exactly_what_was_issued(
    own_db: Database, steps: list[list[tuple[str, int]]]
) -> None:
    sponsor = new_shop(own_db)
    standard_offers(own_db, sponsor)
    offer(
        own_db,
        sponsor,
        "MUGS",
        {"type": "item", "categories": ["cups"], "miles": 3, "perDollars": 5, "capMiles": 7},
    )
    collector = data.new_collector(own_db)
    run(own_db, ISSUE, basket(sponsor, collector, item("warm-up", 30.00)))  # a balance to keep
    before = data.balance(own_db, collector)
    bought = {"apples": APPLES, "kettle": KETTLE, "mug": item("mug", 12.98, 2, categoryId="cups")}
    issued = run(own_db, ISSUE, basket(sponsor, collector, *bought.values(), coupon=["SPRING25"]))
    original = issued["checkoutTransactionId"]
    issued_per_offer = {ln["issuanceOfferCode"]: ln["milesAmount"] for ln in issued["issuances"]}
    assert issued_per_offer == {"BASE": 7, "MUGS": 6, "PRODUCE": 15, "SPRING": 25}

    taken: dict[str, int] = {}
    for step in steps:
        returned = [
            item(i, float(Decimal(str(bought[i]["finalAmount"])) * q / bought[i]["quantity"]), q)
            for i, q in step
        ]
        out = run(own_db, RETURN, returning(sponsor, collector, original, *returned))
        assert out["totalMiles"] == sum(ln["milesAmount"] for ln in out.get("issuances", []))
        for ln in out.get("issuances", []):
            assert ln["status"] == "REVERSED"
            assert ln["milesAmount"] > 0
            assert set(ln["contributingItemIds"]) <= {i for i, _ in step}
            code = ln["issuanceOfferCode"]
            taken[code] = taken.get(code, 0) + ln["milesAmount"]
            assert taken[code] <= issued_per_offer[code]

    assert taken == issued_per_offer
    assert data.balance(own_db, collector) == before


def test_returns_are_bounded_by_the_quantities_bought(own_db: Database) -> None:
    sponsor = new_shop(own_db)
    standard_offers(own_db, sponsor)
    collector = data.new_collector(own_db)
    original = run(own_db, ISSUE, basket(sponsor, collector, APPLES, KETTLE))[
        "checkoutTransactionId"
    ]
    one_apple = item("apples", 2.50)
    run(own_db, RETURN, returning(sponsor, collector, original, one_apple))
    run(own_db, RETURN, returning(sponsor, collector, original, one_apple))
    assert data.balance(own_db, collector) == 5

    # Two apples returned already, one left: two more is one too many.
    over = refused(
        own_db, RETURN, returning(sponsor, collector, original, KETTLE, item("apples", 5.00, 2))
    )
    never = refused(
        own_db,
        RETURN,
        returning(sponsor, collector, original, item("toaster", 30.00), item("kettle", 100.00, 2)),
    )

    assert over == {
        "code": "RETURN_EXCEEDS_PURCHASE",
        "detail": "The return exceeds the purchase.",
        "errors": [
            field_error(
                "RETURN_EXCEEDS_PURCHASE",
                "items[1].quantity",
                "Item apples: 3 bought, 2 already returned; this return would make 4.",
            )
        ],
    }
    assert never == {
        "code": "RETURN_EXCEEDS_PURCHASE",
        "detail": "The return exceeds the purchase.",
        "errors": [
            field_error(
                "RETURN_EXCEEDS_PURCHASE",
                "items[0].id",
                f"Item toaster was not bought in {original}.",
            ),
            field_error(
                "RETURN_EXCEEDS_PURCHASE",
                "items[1].quantity",
                "Item kettle: 1 bought, 0 already returned; this return would make 2.",
            ),
        ],
    }
    assert transactions_of(own_db, sponsor) == [
        ("issue", "posted", 200, None),
        *[("return", "posted", 200, None)] * 2,
        *[("return", "rejected", 400, "RETURN_EXCEEDS_PURCHASE")] * 2,
    ]
    assert data.balance(own_db, collector) == 5

    # The refused returns reserved nothing: exactly what is left may still come back.
    last = run(own_db, RETURN, returning(sponsor, collector, original, KETTLE, one_apple))
    assert lines(last) == [("BASE", 5, ["apples", "kettle"], "REVERSED")]
    assert data.balance(own_db, collector) == 0
    assert refused(own_db, RETURN, returning(sponsor, collector, original, one_apple))[
        "errors"
    ] == [
        field_error(
            "RETURN_EXCEEDS_PURCHASE",
            "items[0].quantity",
            "Item apples: 3 bought, 3 already returned; this return would make 4.",
        )
    ]


def test_a_rejected_return_is_not_counted_as_returned(own_db: Database) -> None:
    sponsor = new_shop(own_db)
    offer(own_db, sponsor, "BASE", BASE)
    collector = data.new_collector(own_db)
    original = run(own_db, ISSUE, basket(sponsor, collector, KETTLE))["checkoutTransactionId"]
    other = data.new_collector(own_db)

    mismatch = refused(own_db, RETURN, returning(sponsor, other, original, KETTLE))
    back = run(own_db, RETURN, returning(sponsor, collector, original, KETTLE))

    assert mismatch["code"] == "ORIGINAL_COLLECTOR_MISMATCH"
    assert lines(back) == [("BASE", 5, ["kettle"], "REVERSED")]
    assert data.balance(own_db, collector) == 0


@pytest.mark.parametrize("kind", ["unknown", "post"])
def test_a_return_naming_no_issue_is_refused_at_the_original(own_db: Database, kind: str) -> None:
    sponsor = new_shop(own_db)
    standard_offers(own_db, sponsor)
    collector = data.new_collector(own_db)
    if kind == "post":
        post = data.basket_body(
            sponsor, collector, miles=5, amount=50.0, checkoutDateTime=data.iso(CHECKOUT)
        )
        assert _call(own_db, SETTINGS, Endpoint.POST, post).status == 200
        original = post["checkoutTransactionId"]
        code = "ORIGINAL_WRONG_FAMILY"
        detail = f"Transaction {original} was issued by POST; take its miles back with REVERSE or REVERSE/EVENT."
    else:
        original = data.txn_id("nope")
        code = "ORIGINAL_NOT_FOUND"
        detail = f"No accepted ISSUE {original} for sponsor {sponsor}."
    balance = data.balance(own_db, collector)

    problem = refused(own_db, RETURN, returning(sponsor, collector, original, KETTLE))

    assert problem == {
        "code": code,
        "detail": detail,
        "errors": [field_error(code, ORIGINAL, detail)],
    }
    assert data.balance(own_db, collector) == balance


def test_a_return_after_a_rejected_issue_line_takes_back_only_what_was_issued(
    own_db: Database,
) -> None:
    sponsor = new_shop(own_db, review_threshold_miles=10)
    standard_offers(own_db, sponsor)
    collector = data.new_collector(own_db)
    issued = run(own_db, ISSUE, basket(sponsor, collector, APPLES, KETTLE), 202)
    assert lines(issued) == [
        ("BASE", 5, ["apples", "kettle"], "ISSUED"),
        ("PRODUCE", 15, ["apples"], "PENDING"),  # held for review
    ]
    with own_db.unit_of_work() as session:
        settlement.reject(
            session,
            settlement.line_id(issued["transactionId"], 1),
            "PENDING_EXPIRED",
            NOW,
            known_codes=list(PROBLEM_CODES),
        )
    assert data.balance(own_db, collector) == 5
    original = issued["checkoutTransactionId"]

    apples = run(own_db, RETURN, returning(sponsor, collector, original, item("apples", 5.00, 2)))
    rest = run(
        own_db, RETURN, returning(sponsor, collector, original, item("apples", 2.50), KETTLE)
    )

    assert "issuances" not in apples  # PRODUCE issued nothing: nothing to take back
    assert apples["totalMiles"] == 0
    assert lines(rest) == [("BASE", 5, ["apples", "kettle"], "REVERSED")]
    assert data.balance(own_db, collector) == 0


def test_a_return_replayed_with_its_key_counts_once(own_db: Database) -> None:
    sponsor = new_shop(own_db)
    standard_offers(own_db, sponsor)
    collector = data.new_collector(own_db)
    original = run(own_db, ISSUE, basket(sponsor, collector, APPLES, KETTLE))[
        "checkoutTransactionId"
    ]
    body = returning(sponsor, collector, original, item("apples", 2.50))

    first = _call(own_db, SETTINGS, RETURN, body, idempotency_key="ret-1")
    replay = _call(own_db, SETTINGS, RETURN, body, idempotency_key="ret-1")
    rest = run(
        own_db, RETURN, returning(sponsor, collector, original, item("apples", 5.00, 2), KETTLE)
    )

    assert (first.status, replay.status, replay.replayed) == (200, 200, True)
    assert replay.body == first.body
    assert lines(first.body) == [("PRODUCE", 5, ["apples"], "REVERSED")]
    assert lines(rest) == [
        ("BASE", 5, ["apples", "kettle"], "REVERSED"),
        ("PRODUCE", 10, ["apples"], "REVERSED"),
    ]
    assert data.balance(own_db, collector) == 0


def test_a_return_waiting_on_an_issue_line_rejected_meanwhile_takes_nothing_more(
    own_db: Database,
) -> None:
    """The ISSUE's PRODUCE line waits for review; a return of one apple takes 5 of it back,
    waiting on that line. The line is then refused: PRODUCE issued nothing, so the next return
    takes nothing from it (not what is left of 15 after 5), and the waiting return is refused
    when settled."""
    sponsor = new_shop(own_db, review_threshold_miles=10)
    standard_offers(own_db, sponsor)
    collector = data.new_collector(own_db)
    issued = run(own_db, ISSUE, basket(sponsor, collector, APPLES, KETTLE), 202)
    original = issued["checkoutTransactionId"]
    waiting = run(
        own_db, RETURN, returning(sponsor, collector, original, item("apples", 2.50)), 202
    )
    assert lines(waiting) == [("PRODUCE", 5, ["apples"], "PENDING")]
    with own_db.unit_of_work() as session:
        settlement.reject(
            session,
            settlement.line_id(issued["transactionId"], 1),
            "PENDING_EXPIRED",
            NOW,
            known_codes=list(PROBLEM_CODES),
        )

    second = run(own_db, RETURN, returning(sponsor, collector, original, item("apples", 2.50)))
    settle_pending(own_db, SETTINGS, NOW)
    last = run(
        own_db, RETURN, returning(sponsor, collector, original, item("apples", 2.50), KETTLE)
    )

    assert "issuances" not in second
    assert second["totalMiles"] == 0
    assert lines(last) == [("BASE", 5, ["apples", "kettle"], "REVERSED")]
    with own_db.reader() as session:
        looked_up = lookups.lookup(session, waiting["transactionId"], [sponsor])
    assert looked_up is not None
    assert [(ln["status"], ln.get("errorCode")) for ln in looked_up["issuances"]] == [
        ("REJECTED", "REVERSAL_EXCEEDS_ORIGINAL")
    ]
    assert data.balance(own_db, collector) == 0


def test_a_return_naming_an_item_twice_is_refused_before_it_is_run(own_db: Database) -> None:
    """`_compute_return` counts each returned item once: a basket's item ids are unique."""
    sponsor = new_shop(own_db)
    standard_offers(own_db, sponsor)
    collector = data.new_collector(own_db)
    original = run(own_db, ISSUE, basket(sponsor, collector, APPLES))["checkoutTransactionId"]
    one_apple = item("apples", 2.50)

    with pytest.raises(ProblemError) as invalid:
        _call(
            own_db, SETTINGS, RETURN, returning(sponsor, collector, original, one_apple, one_apple)
        )

    assert invalid.value.code == "FIELD_INVALID"
    assert [e.field for e in invalid.value.errors] == ["items"]
    assert data.balance(own_db, collector) == 15


def _draft_preview(db: Database, body: dict[str, Any], draft: engine.Offer) -> dict[str, Any]:
    obj, _ = json_object_of(json.dumps(body).encode())
    request = validate_body(
        CalculateRequest,
        obj,
        context={"miles_per_line_max": SETTINGS.miles_per_line_max},
        rules=FIELD_RULES,
        codes=FIELD_CODES,
    )
    command = program_command(request, body["sponsorCode"])
    with db.reader() as session:
        return calculated.draft_preview(session, SETTINGS, command, draft, now=lambda: NOW)


def test_a_draft_offer_previews_in_place_of_the_saved_one_of_its_code(own_db: Database) -> None:
    """The console's rule editor: CALCULATE's answer with the draft in place of the saved offer
    of its code (the others as saved), at the injected moment; nothing is stored."""
    sponsor = new_shop(own_db)
    standard_offers(own_db, sponsor)
    collector = data.new_collector(own_db)
    body = basket(sponsor, collector, APPLES, KETTLE, coupon=["SPRING25"])
    saved = run(own_db, CALCULATE, body)

    doubled = engine.Offer("BASE", "601", "2 miles per $10", parse_rule({**BASE, "miles": 2}))
    answer = _draft_preview(own_db, body, doubled)
    lines = {line["issuanceOfferCode"]: line for line in answer["issuances"]}
    assert lines["BASE"]["milesAmount"] == 10  # the draft, not the saved 5
    assert lines["BASE"]["offerId"] == "601"
    assert lines["PRODUCE"]["milesAmount"] == 15  # the other saved offers still apply
    assert lines["SPRING"]["milesAmount"] == 25
    assert answer["totalMiles"] == saved["totalMiles"] + 5
    assert answer["transactionDateTime"] == PROCESSED

    extra = engine.Offer("KETTLE", None, "a new offer", parse_rule({**BASE, "miles": 3}))
    added = _draft_preview(own_db, body, extra)
    assert [line["issuanceOfferCode"] for line in added["issuances"]] == [
        "BASE",
        "KETTLE",
        "PRODUCE",
        "SPRING",
    ]
    assert added["totalMiles"] == saved["totalMiles"] + 15
    assert transaction_count(own_db, sponsor) == 0
