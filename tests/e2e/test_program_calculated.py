"""The program-calculated endpoints over HTTP (SPEC §2.2, §2.4, §3.4; docs/offers.md): CALCULATE,
ISSUE, RETURN and their lookup, against a real server on both databases.

Every test gets a sponsor of its own, so its offers never reach another test. Offers are set up
through the offers' operator actions (`offers.service`, the code the CLI runs).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
from sqlalchemy import update

from rewardmiles import clock
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.db.models import IdempotencyKey, Sponsor
from rewardmiles.errors import PROBLEM_CODES, ProblemError
from rewardmiles.http.partner_json import canonical_json, parse_json_object
from rewardmiles.idempotency import repository as keys
from rewardmiles.idempotency import service as idempotency
from rewardmiles.issuance import calls
from rewardmiles.issuance.routes import run_calculate, run_write
from rewardmiles.issuance.schemas import CalculateRequest, program_command
from rewardmiles.offers import service as offers
from rewardmiles.settlement import service as settlement
from rewardmiles.vocabulary import Endpoint
from tests.e2e.conftest import World
from tests.support import data
from tests.support.partner import Partner
from tests.support.problems import (
    assert_nothing_stored,
    assert_problem,
    idempotency_key_count,
    ledger_entry_count,
    stored,
)

CALCULATE = "/checkout/issuance/calculate"
ISSUE = "/checkout/issuance/issue"
RETURN = "/checkout/issuance/return"
POST = "/checkout/issuance/post"
REVERSE = "/checkout/issuance/reverse"
REVERSE_EVENT = "/checkout/issuance/reverse/event"
TRANSACTIONS = "/checkout/issuance/transactions"
ENDPOINT_NAMES = {
    CALCULATE: "calculate",
    ISSUE: "issue",
    RETURN: "return",
    POST: "post",
    REVERSE: "reverse",
    REVERSE_EVENT: "reverse_event",
}
ORIGINAL = "originalCheckoutTransactionId"
PROGRAM_ZONE = ZoneInfo(Settings().program_time_zone)
MILES_PER_LINE_MAX = Settings().miles_per_line_max

BASE = {"type": "base", "miles": 1, "perDollars": 10}
PRODUCE = {"type": "item", "departments": ["produce"], "milesPerUnit": 5, "minQuantity": 2}
SPRING = {"type": "coupon", "coupon": "SPRING25", "miles": 25, "minSpend": 50}


# --------------------------------------------------------------------------- helpers


def item(item_id: str, final: float, quantity: int = 1, **fields: Any) -> dict[str, Any]:
    return {"id": item_id, "quantity": quantity, "finalAmount": final, **fields}


APPLES = item("apples", 7.50, 3, departmentId="produce", name="Apple", baseAmount=2.50)
KETTLE = item("kettle", 50.00, departmentId="home", categoryId="small-appliances")


def total_of(items: list[dict[str, Any]]) -> float:
    return float(sum((Decimal(str(i["finalAmount"])) for i in items), Decimal(0)))


@dataclass
class Shop:
    """A fresh sponsor with its own offers, and a partner acting for it alone."""

    world: World
    sponsor: str
    partner: Partner
    collectors: list[str] = field(default_factory=list)

    def offer(
        self,
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
        with self.world.db.unit_of_work() as session:
            offers.put_offer(
                session,
                self.sponsor,
                code,
                description=description if description is not None else f"Offer {code}",
                rule=rule,
                valid_from=valid_from,
                valid_to=valid_to,
                locations=locations,
                offer_id=offer_id,
                now=data.now(),
                replace=replace,
            )

    def standard_offers(self) -> None:
        self.offer("BASE", BASE, description="1 mile per $10", offer_id="501")
        self.offer("PRODUCE", PRODUCE, description="5 miles per produce item", offer_id="502")
        self.offer("SPRING", SPRING, description="25 miles with SPRING25")

    def disable(self, code: str) -> None:
        with self.world.db.unit_of_work() as session:
            offers.disable_offer(session, self.sponsor, code)

    def basket(self, collector: str, *items: dict[str, Any], **overrides: Any) -> dict[str, Any]:
        amount = total_of(list(items))
        body: dict[str, Any] = {
            "checkoutTransactionId": data.txn_id("p"),
            "collectorNumber": collector,
            "sponsorCode": self.sponsor,
            "checkoutDateTime": data.iso(data.now() - timedelta(seconds=5)),
            "basketPreTaxAmount": amount,
            "basketPostTaxAmount": amount,
            "items": list(items),
        }
        body.update(overrides)
        return body

    def returning(
        self, collector: str, original: str, *items: dict[str, Any], **overrides: Any
    ) -> dict[str, Any]:
        return self.basket(collector, *items, **{ORIGINAL: original, **overrides})

    def call(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        return self.partner.call(path, body, **kw)

    def issue(self, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
        response = self.call(ISSUE, body)
        assert response.status_code == status, response.text
        out: dict[str, Any] = response.json()
        return out

    def ret(self, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
        response = self.call(RETURN, body)
        assert response.status_code == status, response.text
        out: dict[str, Any] = response.json()
        return out


ShopFactory = Callable[..., Shop]


@pytest.fixture
def new_shop(world: World) -> Iterator[ShopFactory]:
    partners: list[Partner] = []

    def make(locations: list[str] | None = None) -> Shop:
        sponsor = data.new_sponsor(world.db, locations=locations)
        partner = world.new_partner(sponsor)
        partners.append(partner)
        return Shop(world, sponsor, partner)

    yield make
    for partner in partners:
        partner.close()


@pytest.fixture
def shop(new_shop: ShopFactory) -> Shop:
    return new_shop()


@pytest.fixture
def plain(world: World) -> Shop:
    """The session's shared sponsor and partner, for requests refused before any offer is read:
    no test adds offers to it."""
    return Shop(world, world.sponsor, world.partner)


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


def without_status(out: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in ln.items() if k != "status"} for ln in out.get("issuances", [])]


def get(partner: Partner, path: str, params: dict[str, str] | None = None) -> httpx.Response:
    return partner.http.get(
        path, params=params, headers={"Authorization": f"Bearer {partner.token}"}
    )


def program_date(body: dict[str, Any]) -> date:
    """The basket's date in the program time zone (what offer validity is checked against)."""
    return datetime.fromisoformat(body["checkoutDateTime"]).astimezone(PROGRAM_ZONE).date()


@contextmanager
def advisory_lock(db: Database, lock: int) -> Iterator[None]:
    """Hold a PostgreSQL transaction-scoped advisory lock from outside the server."""
    url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
        yield


def calculate_call(shop: Shop, body: dict[str, Any], *, key: str | None) -> calls.PartnerCall:
    """The `PartnerCall` the CALCULATE route builds for `body` from the shop's partner."""
    obj = parse_json_object(json.dumps(body).encode())
    request = CalculateRequest.model_validate(obj)
    canonical = canonical_json(obj)
    return calls.PartnerCall(
        endpoint=Endpoint.CALCULATE,
        client_id=shop.partner.client_id,
        command=program_command(request, shop.sponsor),
        request_json=canonical.decode(),
        fingerprint=idempotency.fingerprint("POST", CALCULATE, canonical),
        idempotency_key=key,
        request_id="in-process",
    )


# The basket every scenario starts from: 3 apples (produce) and a kettle, with the coupon.
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


# --------------------------------------------------------------------------- 1. CALCULATE


def test_calculate_previews_the_offers(shop: Shop) -> None:
    shop.standard_offers()
    collector = shop.world.collector()
    body = shop.basket(collector, APPLES, KETTLE, coupon=["SPRING25"])

    response = shop.call(CALCULATE, body)

    assert response.status_code == 200, response.text
    assert "Idempotent-Replayed" not in response.headers
    out = response.json()
    assert out["issuances"] == EXPECTED_LINES
    assert out["totalMiles"] == 45
    assert "transactionId" not in out
    assert out["transactionDateTime"]
    assert out["checkoutTransactionId"] == body["checkoutTransactionId"]
    assert out["sponsorCode"] == shop.sponsor
    assert out["collectorNumber"] == collector
    assert out["coupon"] == ["SPRING25"]
    assert out["basketPreTaxAmount"] == 57.5
    assert [i["id"] for i in out["items"]] == ["apples", "kettle"]
    assert shop.world.balance(collector) == 0
    assert ledger_entry_count(shop.world.db, collector) == 0
    assert stored(shop.world.db, shop.sponsor, CALCULATE, body["checkoutTransactionId"]) == []


def test_calculate_without_a_key_stores_nothing_and_is_never_a_replay(shop: Shop) -> None:
    shop.standard_offers()
    collector = shop.world.collector()
    body = shop.basket(collector, APPLES, KETTLE, coupon=["SPRING25"])
    keys_before = idempotency_key_count(shop.world.db, shop.partner.client_id)

    first = shop.call(CALCULATE, body, key=None)
    shop.disable("PRODUCE")
    again = shop.call(CALCULATE, body, key=None)

    assert first.status_code == 200, first.text
    assert first.json()["issuances"] == EXPECTED_LINES
    # No key: a pure preview of the offers as they are now, never a replay.
    assert again.status_code == 200, again.text
    assert "Idempotent-Replayed" not in again.headers
    assert again.json()["totalMiles"] == 30
    assert idempotency_key_count(shop.world.db, shop.partner.client_id) == keys_before
    assert_nothing_stored(
        shop.world.db, shop.partner.client_id, collector, body["checkoutTransactionId"]
    )


def test_calculate_with_the_same_key_replays_the_stored_preview(shop: Shop) -> None:
    """SPEC §4: a retried preview shows the same miles even if the offers changed in between."""
    shop.standard_offers()
    collector = shop.world.collector()
    body = shop.basket(collector, APPLES, KETTLE, coupon=["SPRING25"])
    key = str(uuid.uuid4())

    first = shop.call(CALCULATE, body, key=key)
    shop.disable("PRODUCE")
    shop.offer("BASE", {"type": "base", "miles": 2, "perDollars": 10}, replace=True)
    replay = shop.call(CALCULATE, body, key=key)
    fresh = shop.call(CALCULATE, body, key=str(uuid.uuid4()))

    assert first.status_code == 200, first.text
    assert "Idempotent-Replayed" not in first.headers
    assert first.json()["issuances"] == EXPECTED_LINES
    assert replay.status_code == 200, replay.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["content-type"] == "application/json"
    assert replay.json() == first.json()
    # The offers did change: a new key previews the offers as they are now.
    assert fresh.status_code == 200, fresh.text
    assert "Idempotent-Replayed" not in fresh.headers
    assert lines(fresh.json()) == [
        ("BASE", 10, ["apples", "kettle"], None),
        ("SPRING", 25, ["apples", "kettle"], None),
    ]
    assert shop.world.balance(collector) == 0
    assert stored(shop.world.db, shop.sponsor, CALCULATE, body["checkoutTransactionId"]) == []
    assert stored(shop.world.db, shop.sponsor, ISSUE, body["checkoutTransactionId"]) == []


def test_calculate_with_the_same_key_and_another_body_is_422_reused(shop: Shop) -> None:
    shop.standard_offers()
    collector = shop.world.collector()
    key = str(uuid.uuid4())
    first = shop.call(CALCULATE, shop.basket(collector, APPLES, KETTLE), key=key)

    reused = shop.call(CALCULATE, shop.basket(collector, KETTLE), key=key)
    on_issue = shop.call(ISSUE, shop.basket(collector, KETTLE), key=key)

    assert first.status_code == 200, first.text
    assert_problem(reused, 422, "IDEMPOTENCY_KEY_REUSED", "Idempotency-Key")
    assert_problem(on_issue, 422, "IDEMPOTENCY_KEY_REUSED", "Idempotency-Key")
    assert shop.world.balance(collector) == 0


def test_calculate_key_is_scoped_per_client(shop: Shop) -> None:
    shop.standard_offers()
    collector = shop.world.collector()
    body = shop.basket(collector, APPLES, KETTLE)
    key = str(uuid.uuid4())
    other = shop.world.new_partner(shop.sponsor)
    try:
        first = shop.call(CALCULATE, body, key=key)
        theirs = other.call(CALCULATE, shop.basket(collector, KETTLE), key=key)
        theirs_again = other.call(CALCULATE, body, key=key)
    finally:
        other.close()

    assert first.status_code == 200, first.text
    assert theirs.status_code == 200, theirs.text
    assert "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["totalMiles"] == 5
    assert_problem(theirs_again, 422, "IDEMPOTENCY_KEY_REUSED")


def test_calculate_rule_rejection_is_stored_under_the_key_and_replayed(shop: Shop) -> None:
    """As for the write endpoints, a business rule's 400 is the answer kept under the key; unlike
    ISSUE, CALCULATE records no transaction for it."""
    shop.offer("BASE", BASE)
    collector = shop.world.collector()
    old = data.iso(data.now() - timedelta(days=31))
    body = shop.basket(collector, KETTLE, checkoutDateTime=old)
    key = str(uuid.uuid4())

    first = shop.call(CALCULATE, body, key=key)
    again = shop.call(CALCULATE, body, key=key)

    problem = assert_problem(first, 400, "DATE_OUT_OF_RANGE", "checkoutDateTime")
    assert again.status_code == 400, again.text
    assert again.headers["content-type"] == "application/problem+json"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == problem
    assert stored(shop.world.db, shop.sponsor, CALCULATE, body["checkoutTransactionId"]) == []


@pytest.mark.parametrize(
    "broken",
    [
        {"basketPreTaxAmount": 1.0, "basketPostTaxAmount": 1.0},  # items do not add up
        {"items": "kettle"},  # not an array
        {"sponsorCode": 5},  # not a string
    ],
    ids=["inconsistent", "shape", "type"],
)
def test_calculate_refused_before_processing_stores_nothing_under_the_key(
    shop: Shop, broken: dict[str, Any]
) -> None:
    shop.standard_offers()
    collector = shop.world.collector()
    body = shop.basket(collector, APPLES, KETTLE)
    key = str(uuid.uuid4())

    refused = shop.call(CALCULATE, {**body, **broken}, key=key)
    assert refused.status_code == 400, refused.text
    assert_nothing_stored(
        shop.world.db, shop.partner.client_id, collector, body["checkoutTransactionId"], key
    )

    corrected = shop.call(CALCULATE, body, key=key)
    again = shop.call(CALCULATE, body, key=key)

    assert corrected.status_code == 200, corrected.text
    assert "Idempotent-Replayed" not in corrected.headers
    assert corrected.json()["totalMiles"] == 20
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == corrected.json()


def test_calculate_with_a_key_another_process_is_running_is_409_in_use(shop: Shop) -> None:
    """PostgreSQL: the key's advisory lock, taken here as another API process running the key
    would, makes the call 409 at once; released, the call runs, and its retry replays."""
    db = shop.world.db
    if db.is_sqlite:
        pytest.skip("SQLite runs one call at a time: a second call for a key waits and replays")
    shop.standard_offers()
    body = shop.basket(shop.world.collector(), APPLES, KETTLE)
    key = str(uuid.uuid4())

    with advisory_lock(db, idempotency.lock_number(shop.partner.client_id, key)):
        refused = shop.call(CALCULATE, body, key=key)
    first = shop.call(CALCULATE, body, key=key)
    retry = shop.call(CALCULATE, body, key=key)

    assert_problem(refused, 409, "IDEMPOTENCY_KEY_IN_USE")
    assert refused.headers["Retry-After"] == "1"
    assert first.status_code == 200, first.text
    assert "Idempotent-Replayed" not in first.headers
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json() == first.json()


def test_calculate_with_a_key_this_process_is_running_is_409_in_use(shop: Shop) -> None:
    """In one process, the registry of running keys refuses a second call for the key (the
    server's CALCULATE runs `routes.run_calculate`, as here)."""
    shop.standard_offers()
    body = shop.basket(shop.world.collector(), APPLES, KETTLE)
    registry = idempotency.InFlightRegistry()
    call = calculate_call(shop, body, key="k-running")

    with registry.hold(call.client_id, "k-running"), pytest.raises(ProblemError) as refused:
        run_calculate(shop.world.db, Settings(), registry, call)
    outcome = run_calculate(shop.world.db, Settings(), registry, call)

    assert refused.value.code == "IDEMPOTENCY_KEY_IN_USE"
    assert refused.value.headers == {"Retry-After": "1"}
    assert outcome.status == 200
    assert not outcome.replayed


@pytest.mark.parametrize("key", [None, "k-execute"])
def test_execute_refuses_a_calculate_call_and_records_nothing(shop: Shop, key: str | None) -> None:
    """CALCULATE is `calculated`'s alone: the write path refuses it before anything is read in
    its unit of work, so a preview can never be stored as a transaction (nor its key taken)."""
    shop.standard_offers()
    collector = shop.world.collector()
    body = shop.basket(collector, APPLES, KETTLE)
    call = calculate_call(shop, body, key=key)

    with pytest.raises(ValueError, match="CALCULATE"):
        run_write(shop.world.db, Settings(), idempotency.InFlightRegistry(), call)

    assert stored(shop.world.db, shop.sponsor, CALCULATE, body["checkoutTransactionId"]) == []
    assert_nothing_stored(
        shop.world.db, shop.partner.client_id, collector, body["checkoutTransactionId"], key
    )


def test_calculate_calls_with_one_key_at_once_compute_once(shop: Shop) -> None:
    shop.standard_offers()
    body = shop.basket(shop.world.collector(), APPLES, KETTLE)
    key = str(uuid.uuid4())
    calls = 8

    with ThreadPoolExecutor(max_workers=calls) as pool:
        responses = list(pool.map(lambda _: shop.call(CALCULATE, body, key=key), range(calls)))

    assert {r.status_code for r in responses} <= {200, 409}, [r.text for r in responses]
    answered = [r for r in responses if r.status_code == 200]
    assert sum(1 for r in answered if "Idempotent-Replayed" not in r.headers) == 1
    assert {r.content for r in answered} == {answered[0].content}
    for conflict in (r for r in responses if r.status_code == 409):
        assert_problem(conflict, 409, "IDEMPOTENCY_KEY_IN_USE")
        assert conflict.headers["Retry-After"] == "1"


def test_calculate_keys_are_purged_after_the_retention_window(shop: Shop) -> None:
    shop.standard_offers()
    collector = shop.world.collector()
    key = str(uuid.uuid4())
    first = shop.call(CALCULATE, shop.basket(collector, APPLES, KETTLE), key=key)
    assert first.status_code == 200, first.text
    retention = Settings().idempotency_retention_days
    db = shop.world.db
    with db.unit_of_work() as session:
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.client_id == shop.partner.client_id, IdempotencyKey.key == key)
            .values(created_at=clock.utc_now() - timedelta(days=retention + 1))
        )

    with db.unit_of_work() as session:
        purged = keys.purge_expired(session, clock.utc_now(), retention)
    later = shop.call(CALCULATE, shop.basket(collector, KETTLE), key=key)

    assert purged >= 1
    assert later.status_code == 200, later.text
    assert "Idempotent-Replayed" not in later.headers
    assert later.json()["totalMiles"] == 5


def test_empty_optional_fields_are_left_out_of_calculate_issue_replay_and_lookup(
    shop: Shop,
) -> None:
    """SPEC §2.5 (amended): empty optionals are not echoed, the computed lines' included."""
    shop.offer("BASE", BASE, description="")
    collector = shop.world.collector()
    body = shop.basket(
        collector,
        item("kettle", 50.00, name="", departmentId="", categoryId=""),
        deviceId="",
        coupon=[],
        context={},
    )
    key = str(uuid.uuid4())

    preview = shop.call(CALCULATE, body)
    issued = shop.call(ISSUE, body, key=key)
    replay = shop.call(ISSUE, body, key=key)

    assert issued.status_code == 200, issued.text
    lookup = get(shop.partner, f"{TRANSACTIONS}/{issued.json()['transactionId']}")
    for answer in (preview, issued, replay, lookup):
        assert answer.status_code == 200, answer.text
        out = answer.json()
        assert not {"deviceId", "coupon", "context"} & set(out), out
        assert out["items"] == [{"finalAmount": 50.0, "id": "kettle", "quantity": 1}]
        assert "offerDescription" not in out["issuances"][0], out
    assert replay.json() == issued.json()


def test_calculate_does_not_need_a_known_collector(shop: Shop) -> None:
    shop.standard_offers()
    body = shop.basket(data.unknown_collector(), KETTLE)

    response = shop.call(CALCULATE, body)

    assert response.status_code == 200, response.text
    assert lines(response.json()) == [("BASE", 5, ["kettle"], None)]


def _program_body(shop: Shop, path: str, collector: str, **overrides: Any) -> dict[str, Any]:
    body = shop.basket(collector, APPLES, KETTLE, **overrides)
    if path == RETURN:
        body[ORIGINAL] = data.txn_id("orig")
    return body


@pytest.mark.parametrize("path", [CALCULATE, ISSUE, RETURN], ids=ENDPOINT_NAMES.get)
@pytest.mark.parametrize("pre_tax", [57.48, 57.52, 0])
def test_items_not_adding_up_to_the_pre_tax_amount_is_400_and_stores_nothing(
    plain: Shop, path: str, pre_tax: float
) -> None:
    collector = plain.world.collector()
    body = _program_body(
        plain, path, collector, basketPreTaxAmount=pre_tax, basketPostTaxAmount=pre_tax
    )
    key = str(uuid.uuid4())

    response = plain.call(path, body, key=key)

    assert_problem(response, 400, "BASKET_AMOUNTS_INCONSISTENT", "items")
    assert_nothing_stored(
        plain.world.db, plain.partner.client_id, collector, body["checkoutTransactionId"], key
    )
    assert plain.world.balance(collector) == 0


@pytest.mark.parametrize(
    ("path", "pre_tax"),
    [(CALCULATE, 57.49), (CALCULATE, 57.51), (ISSUE, 57.49), (RETURN, 57.51)],
)
def test_items_within_a_cent_of_the_pre_tax_amount_are_accepted(
    shop: Shop, path: str, pre_tax: float
) -> None:
    shop.standard_offers()
    collector = shop.world.collector()
    if path == RETURN:
        original = shop.issue(shop.basket(collector, APPLES, KETTLE))["checkoutTransactionId"]
        body = shop.returning(collector, original, APPLES, KETTLE)
    else:
        body = shop.basket(collector, APPLES, KETTLE)
    body.update(basketPreTaxAmount=pre_tax, basketPostTaxAmount=pre_tax)

    response = shop.call(path, body)

    assert response.status_code == 200, response.text
    assert response.json()["totalMiles"] == 20
    assert shop.world.balance(collector) == (20 if path == ISSUE else 0)


@pytest.mark.parametrize("path", [CALCULATE, ISSUE, RETURN], ids=ENDPOINT_NAMES.get)
@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ("missing items", "FIELD_REQUIRED", "items"),
        ("null items", "FIELD_REQUIRED", "items"),
        ("empty items", "FIELD_INVALID", "items"),
        ("issuances sent", "FIELD_UNKNOWN", "issuances"),
        ("item without quantity", "FIELD_REQUIRED", "items[1].quantity"),
        ("item without id", "FIELD_REQUIRED", "items[0].id"),
        ("item quantity 0", "FIELD_INVALID", "items[0].quantity"),
    ],
)
def test_malformed_program_body_is_400_and_stores_nothing(
    plain: Shop, path: str, change: str, code: str, field: str
) -> None:
    collector = plain.world.collector()
    body = _program_body(plain, path, collector)
    if change == "missing items":
        del body["items"]
    elif change == "null items":
        body["items"] = None
    elif change == "empty items":
        body.update(items=[], basketPreTaxAmount=0, basketPostTaxAmount=0)
    elif change == "issuances sent":
        body["issuances"] = [{"issuanceOfferCode": "BASE", "milesAmount": 5}]
    elif change == "item without quantity":
        body["items"] = [APPLES, {k: v for k, v in KETTLE.items() if k != "quantity"}]
    elif change == "item without id":
        body["items"] = [{k: v for k, v in APPLES.items() if k != "id"}, KETTLE]
    elif change == "item quantity 0":
        body["items"] = [{**APPLES, "quantity": 0}, KETTLE]
    key = str(uuid.uuid4())

    response = plain.call(path, body, key=key)

    assert_problem(response, 400, code, field)
    assert_nothing_stored(
        plain.world.db, plain.partner.client_id, collector, body["checkoutTransactionId"], key
    )


@pytest.mark.parametrize("path", [CALCULATE, ISSUE, RETURN], ids=ENDPOINT_NAMES.get)
def test_sponsor_the_client_may_not_act_for_is_403_and_stores_nothing(
    plain: Shop, path: str
) -> None:
    other = Shop(plain.world, data.new_sponsor(plain.world.db), plain.partner)
    collector = plain.world.collector()
    body = _program_body(other, path, collector)
    key = str(uuid.uuid4())

    response = plain.call(path, body, key=key)

    assert_problem(response, 403, "SPONSOR_NOT_ALLOWED", "sponsorCode")
    assert_nothing_stored(
        plain.world.db, plain.partner.client_id, collector, body["checkoutTransactionId"], key
    )


def test_sponsor_may_be_left_out_by_a_client_of_one_sponsor(shop: Shop) -> None:
    shop.standard_offers()
    body = shop.basket(shop.world.collector(), KETTLE)
    del body["sponsorCode"]

    response = shop.call(CALCULATE, body)

    assert response.status_code == 200, response.text
    assert response.json()["sponsorCode"] == shop.sponsor
    assert response.json()["totalMiles"] == 5


# --------------------------------------------------------------------------- 2. ISSUE


def test_issue_posts_exactly_what_calculate_previewed(shop: Shop) -> None:
    shop.standard_offers()
    collector = shop.world.collector()
    body = shop.basket(collector, APPLES, KETTLE, coupon=["SPRING25"])

    preview = shop.call(CALCULATE, body)
    issued = shop.call(ISSUE, body)

    assert preview.status_code == 200, preview.text
    assert issued.status_code == 200, issued.text
    calc, out = preview.json(), issued.json()
    assert without_status(out) == calc["issuances"] == EXPECTED_LINES
    assert [ln["status"] for ln in out["issuances"]] == ["ISSUED"] * 3
    assert out["totalMiles"] == calc["totalMiles"] == 45
    assert uuid.UUID(out["transactionId"]).version == 4
    # Everything else echoed the same way by both.
    skip = {"issuances", "transactionId", "transactionDateTime"}
    assert {k: v for k, v in out.items() if k not in skip} == {
        k: v for k, v in calc.items() if k not in skip
    }
    assert shop.world.balance(collector) == 45
    assert ledger_entry_count(shop.world.db, collector) == 3
    assert stored(shop.world.db, shop.sponsor, ISSUE, body["checkoutTransactionId"]) == [
        ("posted", 200, None)
    ]


@pytest.mark.parametrize("kind", ["on-hold", "unknown"])
def test_issue_for_an_on_hold_or_unknown_collector_is_202_pending(shop: Shop, kind: str) -> None:
    shop.standard_offers()
    collector = shop.world.collector("ON_HOLD") if kind == "on-hold" else data.unknown_collector()
    body = shop.basket(collector, APPLES, KETTLE)

    out = shop.issue(body, status=202)

    assert lines(out) == [
        ("BASE", 5, ["apples", "kettle"], "PENDING"),
        ("PRODUCE", 15, ["apples"], "PENDING"),
    ]
    assert out["totalMiles"] == 20
    assert ledger_entry_count(shop.world.db, collector) == 0
    assert stored(shop.world.db, shop.sponsor, ISSUE, body["checkoutTransactionId"]) == [
        ("pending", 202, None)
    ]


def test_issue_over_the_review_threshold_is_202_pending(
    new_shop: ShopFactory, world: World
) -> None:
    shop = new_shop()
    shop.standard_offers()
    with world.db.unit_of_work() as session:
        session.get(Sponsor, shop.sponsor).review_threshold_miles = 10  # type: ignore[union-attr]
    collector = world.collector()

    out = shop.issue(shop.basket(collector, APPLES, KETTLE), status=202)

    assert lines(out) == [
        ("BASE", 5, ["apples", "kettle"], "ISSUED"),
        ("PRODUCE", 15, ["apples"], "PENDING"),
    ]
    assert world.balance(collector) == 5


def test_issue_for_a_closed_collector_is_400_and_recorded_as_rejected(shop: Shop) -> None:
    shop.standard_offers()
    collector = shop.world.collector("CLOSED")
    body = shop.basket(collector, APPLES, KETTLE)

    response = shop.call(ISSUE, body)

    assert_problem(response, 400, "COLLECTOR_CLOSED", "collectorNumber")
    assert stored(shop.world.db, shop.sponsor, ISSUE, body["checkoutTransactionId"]) == [
        ("rejected", 400, "COLLECTOR_CLOSED")
    ]
    assert ledger_entry_count(shop.world.db, collector) == 0


def test_issue_uses_only_offers_valid_on_the_checkout_date(shop: Shop) -> None:
    collector = shop.world.collector()
    # A Toronto evening: the UTC date is already the next day.
    body = shop.basket(collector, KETTLE, checkoutDateTime=data.iso(data.toronto_evening()))
    today = program_date(body)
    one_day = timedelta(days=1)
    shop.offer("BASE", BASE)
    shop.offer("OLD", {"type": "base", "miles": 100, "perDollars": 1}, valid_to=today - one_day)
    shop.offer("SOON", {"type": "base", "miles": 200, "perDollars": 1}, valid_from=today + one_day)
    shop.offer(
        "TODAY", {"type": "base", "miles": 2, "perDollars": 10}, valid_from=today, valid_to=today
    )
    shop.offer("WINDOW", BASE, valid_from=today - one_day, valid_to=today + one_day)
    shop.offer("NORULE", None)  # partner-calculated only
    shop.offer("OFF", {"type": "base", "miles": 300, "perDollars": 1})
    shop.disable("OFF")

    preview = shop.call(CALCULATE, body)
    out = shop.issue(body)

    expected = [
        ("BASE", 5, ["kettle"], "ISSUED"),
        ("TODAY", 10, ["kettle"], "ISSUED"),
        ("WINDOW", 5, ["kettle"], "ISSUED"),
    ]
    assert lines(out) == expected
    assert preview.status_code == 200, preview.text
    assert lines(preview.json()) == [(c, m, i, None) for c, m, i, _ in expected]
    assert shop.world.balance(collector) == 20


def test_offer_validity_is_by_the_date_in_the_program_time_zone(shop: Shop) -> None:
    # 02:00 UTC is the evening before in America/Toronto (UTC-4 or UTC-5).
    now = data.now()
    moment = now.replace(hour=2, minute=0, second=0, microsecond=0)
    if moment > now - timedelta(minutes=1):
        moment -= timedelta(days=1)
    local_day = moment.astimezone(PROGRAM_ZONE).date()
    assert local_day == moment.astimezone(UTC).date() - timedelta(days=1)
    shop.offer("EVENING", BASE, valid_from=local_day, valid_to=local_day)
    shop.offer("UTCDAY", BASE, valid_from=moment.date(), valid_to=moment.date())
    collector = shop.world.collector()

    out = shop.issue(shop.basket(collector, KETTLE, checkoutDateTime=data.iso(moment)))

    assert lines(out) == [("EVENING", 5, ["kettle"], "ISSUED")]


def test_offers_apply_only_at_their_locations(new_shop: ShopFactory) -> None:
    shop = new_shop(locations=["0042", "0099"])
    shop.offer("ANY", BASE)
    shop.offer("HERE", PRODUCE, locations=["0042"])
    shop.offer("THERE", SPRING, locations=["0099"])
    collector = shop.world.collector()

    here = shop.issue(
        shop.basket(collector, APPLES, KETTLE, locationCode="0042", coupon=["SPRING25"])
    )
    nowhere = shop.issue(shop.basket(collector, APPLES, KETTLE, coupon=["SPRING25"]))
    there = shop.call(
        CALCULATE, shop.basket(collector, APPLES, KETTLE, locationCode="0099", coupon=["SPRING25"])
    )

    assert lines(here) == [
        ("ANY", 5, ["apples", "kettle"], "ISSUED"),
        ("HERE", 15, ["apples"], "ISSUED"),
    ]
    assert {ln["locationCode"] for ln in here["issuances"]} == {"0042"}
    assert here["locationCode"] == "0042"
    assert lines(nowhere) == [("ANY", 5, ["apples", "kettle"], "ISSUED")]
    assert "locationCode" not in nowhere["issuances"][0]
    assert there.status_code == 200, there.text
    assert [ln["issuanceOfferCode"] for ln in there.json()["issuances"]] == ["ANY", "THERE"]
    assert shop.world.balance(collector) == 25


@pytest.mark.parametrize("path", [CALCULATE, ISSUE], ids=ENDPOINT_NAMES.get)
def test_unregistered_location_is_400_location_unknown(new_shop: ShopFactory, path: str) -> None:
    shop = new_shop(locations=["0042"])
    shop.offer("ANY", BASE)
    collector = shop.world.collector()
    body = shop.basket(collector, KETTLE, locationCode="042")

    response = shop.call(path, body)

    assert_problem(response, 400, "LOCATION_UNKNOWN", "locationCode")
    expected = [("rejected", 400, "LOCATION_UNKNOWN")] if path == ISSUE else []
    assert stored(shop.world.db, shop.sponsor, path, body["checkoutTransactionId"]) == expected
    assert shop.world.balance(collector) == 0


def test_basket_earning_nothing_is_issued_with_zero_miles(shop: Shop) -> None:
    shop.standard_offers()
    collector = shop.world.collector()
    body = shop.basket(collector, item("gum", 4.99, 1, departmentId="candy"), coupon=["OTHER"])

    preview = shop.call(CALCULATE, body)
    out = shop.issue(body)

    assert preview.status_code == 200, preview.text
    assert preview.json()["totalMiles"] == 0
    assert preview.json().get("issuances", []) == []
    assert out["totalMiles"] == 0
    assert out.get("issuances", []) == []
    assert uuid.UUID(out["transactionId"]).version == 4
    assert shop.world.balance(collector) == 0
    assert ledger_entry_count(shop.world.db, collector) == 0
    assert stored(shop.world.db, shop.sponsor, ISSUE, body["checkoutTransactionId"]) == [
        ("posted", 200, None)
    ]


@pytest.mark.parametrize("path", [CALCULATE, ISSUE], ids=ENDPOINT_NAMES.get)
@pytest.mark.parametrize(
    "offset", [timedelta(days=31), timedelta(minutes=-10)], ids=["old", "future"]
)
def test_checkout_date_outside_the_window_is_400_date_out_of_range(
    shop: Shop, path: str, offset: timedelta
) -> None:
    shop.offer("BASE", BASE)
    collector = shop.world.collector()
    body = shop.basket(collector, KETTLE, checkoutDateTime=data.iso(data.now() - offset))

    response = shop.call(path, body)

    assert_problem(response, 400, "DATE_OUT_OF_RANGE", "checkoutDateTime")
    expected = [("rejected", 400, "DATE_OUT_OF_RANGE")] if path == ISSUE else []
    assert stored(shop.world.db, shop.sponsor, path, body["checkoutTransactionId"]) == expected
    assert shop.world.balance(collector) == 0


@pytest.mark.parametrize("amount", [150.00, 50_000.00], ids=["15M-miles", "5G-miles"])
def test_issue_never_posts_a_line_above_the_per_line_maximum(shop: Shop, amount: float) -> None:
    shop.offer("BIG", {"type": "base", "miles": 1000, "perDollars": 0.01})
    collector = shop.world.collector()

    response = shop.call(ISSUE, shop.basket(collector, item("tv", amount)))

    # 1000 miles a cent: 15 million miles or more, above the maximum and with no cap to stop it.
    assert_problem(response, 400, "MILES_AMOUNT_INVALID", "issuances[0].milesAmount")
    assert shop.world.balance(collector) == 0


def test_issue_replayed_with_the_same_key_has_no_new_effect(shop: Shop) -> None:
    shop.standard_offers()
    collector = shop.world.collector()
    body = shop.basket(collector, APPLES, KETTLE)
    key = str(uuid.uuid4())

    first = shop.call(ISSUE, body, key=key)
    shop.disable("PRODUCE")  # the replay is the stored result, not a new calculation
    replay = shop.call(ISSUE, body, key=key)
    reused = shop.call(ISSUE, shop.basket(collector, KETTLE), key=key)

    assert first.status_code == 200, first.text
    assert replay.status_code == 200, replay.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert_problem(reused, 422, "IDEMPOTENCY_KEY_REUSED")
    assert shop.world.balance(collector) == 20


def test_issue_resent_without_key_is_a_replay_and_changed_is_a_duplicate(shop: Shop) -> None:
    shop.standard_offers()
    collector = shop.world.collector()
    body = shop.basket(collector, APPLES, KETTLE)

    first = shop.call(ISSUE, body, key=None)
    again = shop.call(ISSUE, body, key=None)
    changed = shop.call(
        ISSUE,
        shop.basket(
            collector,
            KETTLE,
            **{
                "checkoutTransactionId": body["checkoutTransactionId"],
                "checkoutDateTime": body["checkoutDateTime"],
            },
        ),
        key=None,
    )

    assert first.status_code == 200, first.text
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert_problem(changed, 400, "DUPLICATE_TRANSACTION", "checkoutTransactionId")
    assert shop.world.balance(collector) == 20


def test_disabled_or_changed_offer_changes_future_issues(shop: Shop) -> None:
    shop.standard_offers()
    collector = shop.world.collector()
    shop.issue(shop.basket(collector, APPLES, KETTLE))
    shop.disable("PRODUCE")
    shop.offer("BASE", {"type": "base", "miles": 2, "perDollars": 10}, replace=True)

    out = shop.issue(shop.basket(collector, APPLES, KETTLE))

    assert lines(out) == [("BASE", 10, ["apples", "kettle"], "ISSUED")]
    assert shop.world.balance(collector) == 20 + 10


# --------------------------------------------------------------------------- 3. RETURN


def test_partial_returns_withdraw_per_offer_and_claw_back_a_broken_threshold(shop: Shop) -> None:
    shop.standard_offers()
    collector = shop.world.collector()
    issued = shop.issue(shop.basket(collector, APPLES, KETTLE, coupon=["SPRING25"]))
    original = issued["checkoutTransactionId"]
    assert shop.world.balance(collector) == 45

    # 2 of 3 apples back: PRODUCE (min 2) no longer met → all 15; BASE still floor(52.50/10)=5;
    # SPRING still ≥ $50.
    first = shop.ret(shop.returning(collector, original, item("apples", 5.00, 2)))
    assert lines(first) == [("PRODUCE", 15, ["apples"], "REVERSED")]
    assert first["totalMiles"] == 15
    assert first[ORIGINAL] == original
    assert first["issuances"][0]["offerId"] == "502"
    assert first["issuances"][0]["offerDescription"] == "5 miles per produce item"
    assert shop.world.balance(collector) == 30

    # The kettle back: $2.50 left → BASE earns 0 (5 back), SPRING's minimum breaks (25 back).
    second = shop.ret(shop.returning(collector, original, KETTLE))
    assert lines(second) == [
        ("BASE", 5, ["kettle"], "REVERSED"),
        ("SPRING", 25, ["kettle"], "REVERSED"),
    ]
    assert second["totalMiles"] == 30
    assert shop.world.balance(collector) == 0

    # The last apple: nothing left to take back.
    third = shop.ret(shop.returning(collector, original, item("apples", 2.50, 1)))
    assert third["totalMiles"] == 0
    assert third.get("issuances", []) == []
    assert shop.world.balance(collector) == 0


def test_returning_a_threshold_item_below_its_minimum_withdraws_the_whole_bonus(shop: Shop) -> None:
    shop.offer("PRODUCE", PRODUCE)
    collector = shop.world.collector()
    original = shop.issue(shop.basket(collector, APPLES))["checkoutTransactionId"]

    one = shop.ret(shop.returning(collector, original, item("apples", 2.50, 1)))
    two = shop.ret(shop.returning(collector, original, item("apples", 2.50, 1)))

    assert lines(one) == [("PRODUCE", 5, ["apples"], "REVERSED")]  # 3 → 2 apples: 15 → 10
    assert lines(two) == [("PRODUCE", 10, ["apples"], "REVERSED")]  # 2 → 1: below the minimum
    assert shop.world.balance(collector) == 0


@pytest.mark.parametrize(
    "steps",
    [
        [[("apples", 3), ("kettle", 1), ("mug", 2)]],
        [[("mug", 1)], [("apples", 1)], [("kettle", 1), ("mug", 1)], [("apples", 2)]],
        [[("apples", 1)], [("apples", 1)], [("apples", 1)], [("mug", 2)], [("kettle", 1)]],
    ],
    ids=["at-once", "mixed", "one-by-one"],
)
def test_returning_everything_in_steps_withdraws_exactly_what_was_issued(
    shop: Shop, steps: list[list[tuple[str, int]]]
) -> None:
    shop.standard_offers()
    shop.offer(
        "MUGS", {"type": "item", "items": ["mug"], "miles": 3, "perDollars": 5, "capMiles": 7}
    )
    collector = shop.world.collector()
    shop.issue(shop.basket(collector, item("warm-up", 30.00)))  # a balance to come back to
    before = shop.world.balance(collector)
    bought = {"apples": APPLES, "kettle": KETTLE, "mug": item("mug", 12.98, 2)}
    issued = shop.issue(shop.basket(collector, *bought.values(), coupon=["SPRING25"]))
    original = issued["checkoutTransactionId"]
    issued_per_offer = {ln["issuanceOfferCode"]: ln["milesAmount"] for ln in issued["issuances"]}
    assert issued_per_offer == {"BASE": 7, "MUGS": 6, "PRODUCE": 15, "SPRING": 25}

    taken: dict[str, int] = {}
    for step in steps:
        returned = [
            item(i, float(Decimal(str(bought[i]["finalAmount"])) * q / bought[i]["quantity"]), q)
            for i, q in step
        ]
        out = shop.ret(shop.returning(collector, original, *returned))
        assert out["totalMiles"] == sum(ln["milesAmount"] for ln in out.get("issuances", []))
        for ln in out.get("issuances", []):
            assert ln["status"] == "REVERSED"
            assert ln["milesAmount"] > 0
            code = ln["issuanceOfferCode"]
            taken[code] = taken.get(code, 0) + ln["milesAmount"]
            assert taken[code] <= issued_per_offer[code]

    assert taken == issued_per_offer
    assert shop.world.balance(collector) == before


def test_return_over_the_bought_quantity_is_400_return_exceeds_purchase(shop: Shop) -> None:
    shop.standard_offers()
    collector = shop.world.collector()
    original = shop.issue(shop.basket(collector, APPLES, KETTLE))["checkoutTransactionId"]
    shop.ret(shop.returning(collector, original, item("apples", 5.00, 2)))
    balance = shop.world.balance(collector)

    at_once = shop.returning(collector, original, KETTLE, item("apples", 5.00, 2))
    response = shop.call(RETURN, at_once)
    never = shop.call(RETURN, shop.returning(collector, original, item("kettle", 100.00, 2)))

    assert_problem(response, 400, "RETURN_EXCEEDS_PURCHASE", "items[1].quantity")
    assert_problem(never, 400, "RETURN_EXCEEDS_PURCHASE", "items[0].quantity")
    assert stored(shop.world.db, shop.sponsor, RETURN, at_once["checkoutTransactionId"]) == [
        ("rejected", 400, "RETURN_EXCEEDS_PURCHASE")
    ]
    assert shop.world.balance(collector) == balance
    # The refused return reserved nothing: the last apple and the kettle may still come back.
    last = shop.ret(shop.returning(collector, original, KETTLE, item("apples", 2.50, 1)))
    assert last["totalMiles"] == 5
    assert shop.world.balance(collector) == 0


def test_return_of_an_item_the_issue_did_not_contain_is_400_at_its_id(shop: Shop) -> None:
    shop.standard_offers()
    collector = shop.world.collector()
    original = shop.issue(shop.basket(collector, APPLES, KETTLE))["checkoutTransactionId"]

    response = shop.call(
        RETURN, shop.returning(collector, original, KETTLE, item("toaster", 30.00))
    )

    assert_problem(response, 400, "RETURN_EXCEEDS_PURCHASE", "items[1].id")
    assert shop.world.balance(collector) == 20


def test_return_without_original_is_400_field_required_and_stores_nothing(shop: Shop) -> None:
    shop.standard_offers()
    collector = shop.world.collector()
    body = shop.basket(collector, KETTLE)
    key = str(uuid.uuid4())

    response = shop.call(RETURN, body, key=key)

    assert_problem(response, 400, "FIELD_REQUIRED", ORIGINAL)
    assert_nothing_stored(
        shop.world.db, shop.partner.client_id, collector, body["checkoutTransactionId"], key
    )


@pytest.mark.parametrize("kind", ["unknown", "other-sponsor", "rejected-issue"])
def test_return_naming_no_accepted_issue_is_400_original_not_found(
    shop: Shop, new_shop: ShopFactory, kind: str
) -> None:
    shop.standard_offers()
    collector = shop.world.collector()
    if kind == "unknown":
        original = data.txn_id("nope")
    elif kind == "other-sponsor":
        other = new_shop()
        other.standard_offers()
        original = other.issue(other.basket(collector, KETTLE))["checkoutTransactionId"]
    else:
        closed = shop.world.collector("CLOSED")
        rejected = shop.basket(closed, KETTLE)
        assert shop.call(ISSUE, rejected).status_code == 400
        original = rejected["checkoutTransactionId"]
    before = shop.world.balance(collector)
    body = shop.returning(collector, original, KETTLE)

    response = shop.call(RETURN, body)

    assert_problem(response, 400, "ORIGINAL_NOT_FOUND", ORIGINAL)
    assert stored(shop.world.db, shop.sponsor, RETURN, body["checkoutTransactionId"]) == [
        ("rejected", 400, "ORIGINAL_NOT_FOUND")
    ]
    assert shop.world.balance(collector) == before


@pytest.mark.parametrize("path", [REVERSE, REVERSE_EVENT, RETURN], ids=ENDPOINT_NAMES.get)
def test_naming_an_original_of_the_other_family_is_400_original_wrong_family(
    shop: Shop, path: str
) -> None:
    # Program-calculated miles go back through RETURN (with the ISSUE's stored rules), partner-
    # calculated ones through REVERSE: the original exists, it is of the other family.
    shop.standard_offers()
    collector = shop.world.collector()
    if path == RETURN:
        post = data.basket_body(shop.sponsor, collector, miles=20, items=[KETTLE], amount=50.0)
        assert shop.call(POST, post).status_code == 200
        original, issued_by, use = post["checkoutTransactionId"], "POST", "REVERSE"
        body = shop.returning(collector, original, KETTLE)
        field = ORIGINAL
    else:
        issued = shop.issue(shop.basket(collector, APPLES, KETTLE))
        original, issued_by, use = issued["checkoutTransactionId"], "ISSUE", "RETURN"
        if path == REVERSE:
            body = data.basket_body(shop.sponsor, collector, miles=5, **{ORIGINAL: original})
            field = ORIGINAL
        else:
            body = data.event_body(
                shop.sponsor, collector, miles=5, originalClientTransactionId=original
            )
            field = "originalClientTransactionId"
    before = shop.world.balance(collector)

    response = shop.call(path, body)

    problem = assert_problem(response, 400, "ORIGINAL_WRONG_FAMILY", field)
    assert f"{original} was issued by {issued_by}" in problem["detail"], problem
    assert f"with {use}" in problem["detail"], problem
    partner_id = body.get("checkoutTransactionId") or body["clientTransactionId"]
    assert stored(shop.world.db, shop.sponsor, path, partner_id) == [
        ("rejected", 400, "ORIGINAL_WRONG_FAMILY")
    ]
    assert shop.world.balance(collector) == before
    assert not PROBLEM_CODES["ORIGINAL_WRONG_FAMILY"].retryable


def test_return_for_another_collector_is_400_original_collector_mismatch(shop: Shop) -> None:
    shop.standard_offers()
    owner, other = shop.world.collector(), shop.world.collector()
    original = shop.issue(shop.basket(owner, APPLES, KETTLE))["checkoutTransactionId"]

    response = shop.call(RETURN, shop.returning(other, original, KETTLE))

    assert_problem(response, 400, "ORIGINAL_COLLECTOR_MISMATCH", ORIGINAL)
    assert shop.world.balance(owner) == 20
    assert shop.world.balance(other) == 0


def test_an_offer_change_after_the_issue_does_not_change_its_return(shop: Shop) -> None:
    shop.standard_offers()
    collector = shop.world.collector()
    body = shop.basket(collector, APPLES, KETTLE, coupon=["SPRING25"])
    issued = shop.issue(body)
    original = issued["checkoutTransactionId"]

    shop.offer(
        "BASE",
        {"type": "base", "miles": 10, "perDollars": 1},
        description="changed",
        offer_id="999",
        replace=True,
    )
    shop.disable("PRODUCE")
    shop.offer("SPRING", {"type": "coupon", "coupon": "SPRING25", "miles": 1}, replace=True)
    shop.offer("NEW", {"type": "item", "items": ["apples"], "milesPerUnit": 100})
    today = shop.call(CALCULATE, {**body, "checkoutTransactionId": data.txn_id("c")})
    assert today.status_code == 200, today.text
    assert lines(today.json()) == [
        ("BASE", 570, ["apples", "kettle"], None),
        ("NEW", 300, ["apples"], None),
        ("SPRING", 1, ["apples", "kettle"], None),
    ]

    first = shop.ret(shop.returning(collector, original, item("apples", 5.00, 2)))
    second = shop.ret(shop.returning(collector, original, KETTLE, item("apples", 2.50, 1)))

    assert without_status(first) == [
        {
            "contributingItemIds": ["apples"],
            "issuanceOfferCode": "PRODUCE",
            "milesAmount": 15,
            "offerDescription": "5 miles per produce item",
            "offerId": "502",
        }
    ]
    assert without_status(second) == [
        {**EXPECTED_LINES[0], "contributingItemIds": ["apples", "kettle"]},
        {**EXPECTED_LINES[2], "contributingItemIds": ["apples", "kettle"]},
    ]
    assert first["totalMiles"] + second["totalMiles"] == issued["totalMiles"] == 45
    assert shop.world.balance(collector) == 0


def test_return_of_a_pending_issue_is_202_pending(shop: Shop) -> None:
    shop.standard_offers()
    collector = shop.world.collector("ON_HOLD")
    original = shop.issue(shop.basket(collector, APPLES, KETTLE), status=202)

    out = shop.ret(
        shop.returning(collector, original["checkoutTransactionId"], item("apples", 5.00, 2)),
        status=202,
    )

    assert lines(out) == [("PRODUCE", 15, ["apples"], "PENDING")]
    assert ledger_entry_count(shop.world.db, collector) == 0


def test_return_replayed_with_the_same_key_counts_once(shop: Shop) -> None:
    shop.standard_offers()
    collector = shop.world.collector()
    original = shop.issue(shop.basket(collector, APPLES, KETTLE))["checkoutTransactionId"]
    body = shop.returning(collector, original, item("apples", 2.50, 1))
    key = str(uuid.uuid4())

    first = shop.call(RETURN, body, key=key)
    replay = shop.call(RETURN, body, key=key)
    rest = shop.ret(shop.returning(collector, original, item("apples", 5.00, 2), KETTLE))

    assert first.status_code == 200, first.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert lines(first.json()) == [("PRODUCE", 5, ["apples"], "REVERSED")]
    assert rest["totalMiles"] == 15
    assert shop.world.balance(collector) == 0


def test_racing_returns_of_the_last_unit_accept_exactly_one(shop: Shop) -> None:
    shop.offer("BASE", BASE)
    for _ in range(3):
        collector = shop.world.collector()
        original = shop.issue(shop.basket(collector, KETTLE, item("mug", 10.00)))[
            "checkoutTransactionId"
        ]

        def give_back(_: int, collector: str = collector, original: str = original) -> Any:
            return shop.call(RETURN, shop.returning(collector, original, KETTLE))

        with ThreadPoolExecutor(max_workers=2) as pool:
            responses = list(pool.map(give_back, range(2)))

        assert sorted(r.status_code for r in responses) == [200, 400], [r.text for r in responses]
        winner = next(r for r in responses if r.status_code == 200)
        loser = next(r for r in responses if r.status_code == 400)
        assert lines(winner.json()) == [("BASE", 5, ["kettle"], "REVERSED")]
        assert_problem(loser, 400, "RETURN_EXCEEDS_PURCHASE", "items[0].quantity")
        assert shop.world.balance(collector) == 1


def test_partial_return_leaves_the_miles_the_remaining_basket_earns(shop: Shop) -> None:
    shop.offer("BASE", BASE)
    collector = shop.world.collector()
    bought = [item(name, 10.00, 3) for name in ("x", "y", "z")]
    original = shop.issue(shop.basket(collector, *bought))
    assert original["totalMiles"] == 3

    out = shop.ret(
        shop.returning(
            collector,
            original["checkoutTransactionId"],
            item("x", 6.67, 2),
            item("y", 6.67, 2),
            item("z", 6.66, 2),
        )
    )

    # One unit of each line is left: $10.00, which earns 1 mile at 1 per $10.
    assert out["totalMiles"] == 2
    assert shop.world.balance(collector) == 1


def test_return_after_a_rejected_issue_line_withdraws_only_what_was_issued(
    new_shop: ShopFactory, world: World
) -> None:
    shop = new_shop()
    shop.standard_offers()
    with world.db.unit_of_work() as session:
        session.get(Sponsor, shop.sponsor).review_threshold_miles = 10  # type: ignore[union-attr]
    collector = world.collector()
    issued = shop.issue(shop.basket(collector, APPLES, KETTLE), status=202)
    assert lines(issued)[1] == ("PRODUCE", 15, ["apples"], "PENDING")  # held for review
    with world.db.unit_of_work() as session:
        settlement.reject(
            session,
            settlement.line_id(issued["transactionId"], 1),
            "PENDING_EXPIRED",
            clock.utc_now(),
            known_codes=list(PROBLEM_CODES),
        )
    assert world.balance(collector) == 5
    original = issued["checkoutTransactionId"]

    apples = shop.call(RETURN, shop.returning(collector, original, item("apples", 5.00, 2)))
    rest = shop.call(RETURN, shop.returning(collector, original, item("apples", 2.50, 1), KETTLE))

    assert apples.status_code == 200, apples.text
    assert "PRODUCE" not in [ln["issuanceOfferCode"] for ln in apples.json().get("issuances", [])]
    assert rest.status_code == 200, rest.text
    assert lines(rest.json()) == [("BASE", 5, ["apples", "kettle"], "REVERSED")]
    assert world.balance(collector) == 0


# --------------------------------------------------------------------------- 4. lookup


def test_lookup_by_checkout_id_lists_the_issue_and_its_return(shop: Shop) -> None:
    shop.standard_offers()
    collector = shop.world.collector()
    issued = shop.issue(shop.basket(collector, APPLES, KETTLE))
    checkout_id = issued["checkoutTransactionId"]
    returned = shop.ret(
        shop.returning(
            collector, checkout_id, item("apples", 5.00, 2), checkoutTransactionId=checkout_id
        )
    )

    response = get(shop.partner, TRANSACTIONS, {"checkoutTransactionId": checkout_id})
    by_id = get(shop.partner, f"{TRANSACTIONS}/{issued['transactionId']}")

    assert response.status_code == 200, response.text
    found = response.json()["transactions"]
    assert sorted(t["transactionType"] for t in found) == ["ISSUE", "RETURN"]
    by_type = {t["transactionType"]: t for t in found}
    assert by_type["ISSUE"]["transactionId"] == issued["transactionId"]
    assert [
        (ln["issuanceOfferCode"], ln["status"], ln["milesAmount"], ln["milesReversed"])
        for ln in by_type["ISSUE"]["issuances"]
    ] == [("BASE", "ISSUED", 5, 0), ("PRODUCE", "ISSUED", 15, 15)]
    assert by_type["ISSUE"]["totalMiles"] == 20
    assert by_type["RETURN"]["transactionId"] == returned["transactionId"]
    assert by_type["RETURN"][ORIGINAL] == checkout_id
    assert lines(by_type["RETURN"]) == [("PRODUCE", 15, ["apples"], "REVERSED")]
    assert by_id.status_code == 200, by_id.text
    assert by_id.json()["transactionType"] == "ISSUE"
    assert shop.world.balance(collector) == 5


def test_openapi_lookup_schema_allows_issue_and_return(world: World) -> None:
    document = httpx.get(f"{world.server.base_url}/openapi.json").json()

    view = document["components"]["schemas"]["TransactionView"]["properties"]["transactionType"]

    assert {"ISSUE", "RETURN"} <= set(view["enum"])
