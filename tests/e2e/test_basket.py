"""The basket endpoints over HTTP (SPEC §2.2–§3, §4): POST, REVERSE, RECORD and the transaction
lookup, against a real server on both databases.

As for the event endpoints, rule 3.1 splits bad input in two: a malformed body is a 400 that stores
nothing at all; a well-formed body that breaks a business rule is a 400 recorded as a rejected
transaction. Amounts are dollars read as exact decimals, never floats.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from rewardmiles import clock, limits
from rewardmiles.collectors import service as collectors
from rewardmiles.config import Settings
from rewardmiles.db.models import IdempotencyKey, Offer, Transaction
from rewardmiles.offers import service as offers
from rewardmiles.settlement.worker import settle_pending
from tests.e2e.conftest import World
from tests.support import data
from tests.support.partner import Partner
from tests.support.problems import (
    PROBLEM_JSON,
    assert_nothing_stored,
    assert_problem,
    ledger_entry_count,
    stored,
)

POST = "/checkout/issuance/post"
REVERSE = "/checkout/issuance/reverse"
RECORD = "/checkout/issuance/record"
TRANSACTIONS = "/checkout/issuance/transactions"
ENDPOINT_NAMES = {POST: "post", REVERSE: "reverse", RECORD: "record"}
ORIGINAL = "originalCheckoutTransactionId"
AMOUNT_MAX = limits.basket_amount_max


# --------------------------------------------------------------------------- helpers


def basket(world: World, collector: str, **overrides: Any) -> dict[str, Any]:
    return data.basket_body(world.sponsor, collector, **overrides)


def line(miles: Any = 8, offer: Any = "STANDARD", **fields: Any) -> dict[str, Any]:
    return {"issuanceOfferCode": offer, "milesAmount": miles, **fields}


def item(item_id: str, final: Any, quantity: Any = 1, **fields: Any) -> dict[str, Any]:
    return {"id": item_id, "quantity": quantity, "finalAmount": final, **fields}


def post_basket(world: World, collector: str, miles: int = 10, **overrides: Any) -> dict[str, Any]:
    """Issue a basket of `miles` STANDARD miles; returns the request body."""
    body = basket(world, collector, miles=miles, **overrides)
    response = world.partner.call(POST, body)
    assert response.status_code == 200, response.text
    return body


def reverse(
    world: World, collector: str, original: str | None, *lines: dict[str, Any], **kw: Any
) -> httpx.Response:
    body = basket(world, collector, issuances=list(lines) or [line(1)])
    if original is not None:
        body[ORIGINAL] = original
    return world.partner.call(REVERSE, body, **kw)


def reverse_event(world: World, collector: str, original: str, miles: int) -> httpx.Response:
    body = data.event_body(
        world.sponsor, collector, miles=miles, originalClientTransactionId=original
    )
    return world.partner.reverse_event(body)


def raw_post(world: World, path: str, content: bytes, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {world.partner.token}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return world.partner.http.post(path, content=content, headers=headers)


def get(
    partner: Partner, path: str, params: dict[str, str] | None = None, *, auth: bool = True
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {partner.token}"} if auth else {}
    return partner.http.get(path, params=params, headers=headers)


def add_offer(world: World, sponsor: str, code: str) -> None:
    with world.db.unit_of_work() as session:
        session.add(
            Offer(
                sponsor_code=sponsor,
                code=code,
                description=f"Offer {code}",
                active=True,
                valid_from=None,
                valid_to=None,
                created_at=data.now(),
            )
        )


@pytest.fixture
def bonus_sponsor(world: World) -> tuple[str, Partner]:
    """A fresh sponsor with offers STANDARD and BONUS, and a partner acting for it alone."""
    sponsor = data.new_sponsor(world.db)
    add_offer(world, sponsor, "BONUS")
    return sponsor, world.new_partner(sponsor)


# --------------------------------------------------------------------------- 1. POST outcomes


def test_post_is_200_with_issued_lines_and_the_basket_echoed(world: World) -> None:
    collector = world.collector()
    body = basket(
        world,
        collector,
        basketPreTaxAmount=24.97,
        basketGSTAmount=1.25,
        basketPSTAmount=1.75,
        basketPostTaxAmount=27.97,
        items=[
            item("A1", 9.98, quantity=2, name="Milk", baseAmount=4.99, number=1),
            item("B2", 14.99, departmentId="D7", categoryId="C3"),
        ],
        issuances=[
            line(
                8,
                offerId=22,
                offerDescription="offer",
                locationCode="0042",
                contributingItemIds=["A1", "B2"],
            ),
            line(2, contributingItemIds=["B2"]),
        ],
        coupon=["SAVE10"],
        deviceId="POS-7",
        context={"key1": "value1"},
    )
    del body["sponsorCode"]  # a client of one sponsor may leave it out

    response = world.partner.call(POST, body)

    assert response.status_code == 200, response.text
    out = response.json()
    transaction_id = out.pop("transactionId")
    processed_at = out.pop("transactionDateTime")
    assert uuid.UUID(transaction_id).version == 4
    assert processed_at[-6:] in ("-05:00", "-04:00")
    assert len(processed_at.split(".")[1]) == len("780-05:00")
    assert out == {
        "basketGSTAmount": 1.25,
        "basketPSTAmount": 1.75,
        "basketPostTaxAmount": 27.97,
        "basketPreTaxAmount": 24.97,
        "checkoutDateTime": body["checkoutDateTime"],
        "checkoutTransactionId": body["checkoutTransactionId"],
        "collectorNumber": collector,
        "coupon": ["SAVE10"],
        "deviceId": "POS-7",
        "items": [
            {
                "baseAmount": 4.99,
                "finalAmount": 9.98,
                "id": "A1",
                "name": "Milk",
                "number": 1,
                "quantity": 2,
            },
            {
                "categoryId": "C3",
                "departmentId": "D7",
                "finalAmount": 14.99,
                "id": "B2",
                "quantity": 1,
            },
        ],
        "issuances": [
            {
                "contributingItemIds": ["A1", "B2"],
                "issuanceOfferCode": "STANDARD",
                "locationCode": "0042",
                "milesAmount": 8,
                "offerDescription": "offer",
                "offerId": "22",
                "status": "ISSUED",
            },
            {
                "contributingItemIds": ["B2"],
                "issuanceOfferCode": "STANDARD",
                "milesAmount": 2,
                "status": "ISSUED",
            },
        ],
        "sponsorCode": world.sponsor,
    }
    # Amounts are JSON numbers on the wire, never strings.
    assert '"basketPreTaxAmount":24.97' in response.text.replace(" ", "")
    assert '"finalAmount":9.98' in response.text.replace(" ", "")
    assert "context" not in response.text
    assert world.balance(collector) == 10


@pytest.mark.parametrize("kind", ["on-hold", "unknown"])
def test_post_for_on_hold_or_unknown_collector_is_202_pending(world: World, kind: str) -> None:
    collector = world.collector("ON_HOLD") if kind == "on-hold" else data.unknown_collector()
    body = basket(world, collector, issuances=[line(5), line(6)])

    response = world.partner.call(POST, body)

    assert response.status_code == 202, response.text
    assert [ln["status"] for ln in response.json()["issuances"]] == ["PENDING", "PENDING"]
    assert ledger_entry_count(world.db, collector) == 0
    if kind == "on-hold":
        assert world.balance(collector) == 0


def test_post_for_closed_collector_is_400_and_recorded_as_rejected(world: World) -> None:
    collector = world.collector("CLOSED")
    body = basket(world, collector)

    response = world.partner.call(POST, body)

    assert_problem(response, 400, "COLLECTOR_CLOSED", "collectorNumber")
    assert stored(world.db, world.sponsor, POST, body["checkoutTransactionId"]) == [
        ("rejected", 400, "COLLECTOR_CLOSED")
    ]
    assert world.balance(collector) == 0
    assert ledger_entry_count(world.db, collector) == 0


@pytest.mark.parametrize("path", [POST, REVERSE, RECORD], ids=ENDPOINT_NAMES.get)
def test_sponsor_omitted_by_a_client_of_two_sponsors_is_400_field_required(
    world: World, path: str
) -> None:
    other = data.new_sponsor(world.db)
    partner = world.new_partner(world.sponsor, other)
    collector = world.collector()
    body = basket(world, collector)
    del body["sponsorCode"]
    key = str(uuid.uuid4())

    response = partner.call(path, body, key=key)
    partner.close()

    assert_problem(response, 400, "FIELD_REQUIRED", "sponsorCode")
    assert_nothing_stored(
        world.db, world.partner.client_id, collector, body["checkoutTransactionId"], key
    )


@pytest.mark.parametrize("path", [POST, REVERSE, RECORD], ids=ENDPOINT_NAMES.get)
def test_sponsor_the_client_may_not_act_for_is_403_and_stores_nothing(
    world: World, path: str
) -> None:
    other = data.new_sponsor(world.db)
    collector = world.collector()
    body = data.basket_body(other, collector)
    key = str(uuid.uuid4())

    response = world.partner.call(path, body, key=key)

    assert_problem(response, 403, "SPONSOR_NOT_ALLOWED", "sponsorCode")
    assert_nothing_stored(
        world.db, world.partner.client_id, collector, body["checkoutTransactionId"], key
    )


def test_two_sponsor_client_naming_its_sponsor_posts_for_that_sponsor(world: World) -> None:
    other = data.new_sponsor(world.db)
    partner = world.new_partner(world.sponsor, other)
    collector = world.collector()

    response = partner.call(POST, data.basket_body(other, collector, miles=4))
    partner.close()

    assert response.status_code == 200, response.text
    assert response.json()["sponsorCode"] == other
    assert world.balance(collector) == 4


# --------------------------------------------------------------------------- 2. amount rules


def _post_expecting_200(world: World, **overrides: Any) -> dict[str, Any]:
    collector = world.collector()
    body = basket(world, collector, miles=3, **overrides)
    response = world.partner.call(POST, body)
    assert response.status_code == 200, response.text
    assert world.balance(collector) == 3
    out: dict[str, Any] = response.json()
    return out


def _post_expecting_400(
    world: World, code: str, field: str, path: str = POST, **overrides: Any
) -> None:
    collector = world.collector()
    body = basket(world, collector, **overrides)
    key = str(uuid.uuid4())
    response = world.partner.call(path, body, key=key)
    assert_problem(response, 400, code, field)
    assert_nothing_stored(
        world.db, world.partner.client_id, collector, body["checkoutTransactionId"], key
    )


@pytest.mark.parametrize(
    ("pre", "taxes", "post"),
    [
        pytest.param(0.1, {"basketGSTAmount": 0.2}, 0.3, id="tenths-exact"),
        # Exact decimals: 0.1 + 0.2 is 0.3, so 0.29 and 0.31 are within the cent (as floats,
        # 0.30000000000000004 − 0.29 is just over 0.01).
        pytest.param(0.1, {"basketGSTAmount": 0.2}, 0.29, id="tenths-one-cent-under"),
        pytest.param(0.1, {"basketGSTAmount": 0.2}, 0.31, id="tenths-one-cent-over"),
        pytest.param(
            100,
            {
                "basketGSTAmount": 5,
                "basketHSTAmount": 0,
                "basketPSTAmount": 7.0,
                "basketQSTAmount": 9.98,
            },
            121.98,
            id="all-four-taxes",
        ),
        pytest.param(10, {}, 11.3, id="no-taxes-sent-no-check"),
    ],
)
def test_taxes_adding_up_within_a_cent_are_accepted(
    world: World, pre: Any, taxes: dict[str, Any], post: Any
) -> None:
    out = _post_expecting_200(world, basketPreTaxAmount=pre, basketPostTaxAmount=post, **taxes)
    assert out["basketPreTaxAmount"] == pre
    assert out["basketPostTaxAmount"] == post
    for name, value in taxes.items():
        assert out[name] == value


@pytest.mark.parametrize(
    ("pre", "taxes", "post"),
    [
        pytest.param(0.1, {"basketGSTAmount": 0.2}, 0.32, id="two-cents-over"),
        pytest.param(0.1, {"basketGSTAmount": 0.2}, 0.28, id="two-cents-under"),
        pytest.param(10, {"basketHSTAmount": 1.3}, 10, id="tax-not-added"),
        pytest.param(10, {"basketQSTAmount": 0}, 10.02, id="zero-tax-sent"),
    ],
)
def test_taxes_off_by_more_than_a_cent_are_400_basket_amounts_inconsistent(
    world: World, pre: Any, taxes: dict[str, Any], post: Any
) -> None:
    _post_expecting_400(
        world,
        "BASKET_AMOUNTS_INCONSISTENT",
        "basketPostTaxAmount",
        basketPreTaxAmount=pre,
        basketPostTaxAmount=post,
        **taxes,
    )


@pytest.mark.parametrize(
    ("finals", "pre"),
    [
        pytest.param([0.1, 0.2], 0.3, id="tenths-exact"),
        pytest.param([0.1, 0.2], 0.29, id="tenths-one-cent-under"),
        pytest.param([0.1, 0.2], 0.31, id="tenths-one-cent-over"),
        pytest.param([0, 5], 5, id="free-item"),
    ],
)
def test_items_adding_up_to_the_pre_tax_amount_within_a_cent_are_accepted(
    world: World, finals: list[Any], pre: Any
) -> None:
    items = [item(f"I{i}", final) for i, final in enumerate(finals)]
    out = _post_expecting_200(world, basketPreTaxAmount=pre, basketPostTaxAmount=pre, items=items)
    assert [i["finalAmount"] for i in out["items"]] == finals


@pytest.mark.parametrize(
    ("finals", "pre"),
    [
        pytest.param([0.1, 0.2], 0.32, id="two-cents-over"),
        pytest.param([0.1, 0.2], 0.28, id="two-cents-under"),
        pytest.param([24.97], 0, id="pre-tax-zero"),
    ],
)
def test_items_not_adding_up_are_400_basket_amounts_inconsistent_at_items(
    world: World, finals: list[Any], pre: Any
) -> None:
    items = [item(f"I{i}", final) for i, final in enumerate(finals)]
    _post_expecting_400(
        world,
        "BASKET_AMOUNTS_INCONSISTENT",
        "items",
        basketPreTaxAmount=pre,
        basketPostTaxAmount=pre,
        items=items,
    )


AMOUNT_FIELDS: list[tuple[str, Callable[[Any], dict[str, Any]]]] = [
    ("basketPreTaxAmount", lambda v: {"basketPreTaxAmount": v}),
    ("basketPostTaxAmount", lambda v: {"basketPostTaxAmount": v}),
    ("basketGSTAmount", lambda v: {"basketGSTAmount": v}),
    ("basketHSTAmount", lambda v: {"basketHSTAmount": v}),
    ("basketPSTAmount", lambda v: {"basketPSTAmount": v}),
    ("basketQSTAmount", lambda v: {"basketQSTAmount": v}),
    ("items[0].finalAmount", lambda v: {"items": [item("A", v)]}),
    ("items[0].baseAmount", lambda v: {"items": [item("A", 24.97, baseAmount=v)]}),
]
BAD_AMOUNTS = [
    pytest.param(24.975, id="three-decimals"),
    pytest.param(-0.01, id="negative"),
    pytest.param(-1, id="negative-integer"),
    pytest.param(AMOUNT_MAX + 0.01, id="above-max"),
    pytest.param(AMOUNT_MAX + 1, id="above-max-integer"),
    pytest.param("24.97", id="number-as-string"),
    pytest.param(True, id="boolean"),
    pytest.param([24.97], id="array"),
    pytest.param({"value": 24.97}, id="object"),
]


@pytest.mark.parametrize("value", BAD_AMOUNTS)
@pytest.mark.parametrize(("field", "make"), AMOUNT_FIELDS, ids=[f for f, _ in AMOUNT_FIELDS])
def test_bad_amount_is_400_field_invalid_at_that_field_and_stores_nothing(
    world: World, field: str, make: Callable[[Any], dict[str, Any]], value: Any
) -> None:
    _post_expecting_400(world, "FIELD_INVALID", field, **make(value))


@pytest.mark.parametrize("value", [AMOUNT_MAX, float(AMOUNT_MAX), 0, 0.0])
def test_amounts_at_the_bounds_are_accepted(world: World, value: Any) -> None:
    out = _post_expecting_200(
        world,
        basketPreTaxAmount=value,
        basketPostTaxAmount=value,
        basketGSTAmount=0,
        items=[item("A", value, baseAmount=value)],
    )
    assert out["basketPreTaxAmount"] == value
    assert out["items"][0]["finalAmount"] == value


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_or_infinity_literal_is_400_malformed_json_and_stores_nothing(
    world: World, literal: str
) -> None:
    collector = world.collector()
    body = basket(world, collector, basketPostTaxAmount="@AMOUNT@")
    content = json.dumps(body).replace('"@AMOUNT@"', literal).encode()
    key = str(uuid.uuid4())

    response = raw_post(world, POST, content, key)

    assert_problem(response, 400, "MALFORMED_JSON")
    assert_nothing_stored(
        world.db, world.partner.client_id, collector, body["checkoutTransactionId"], key
    )


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("2.497E1", 24.97),
        ("2497e-2", 24.97),
        ("1E6", AMOUNT_MAX),
        ("2.4975E1", None),
        ("1.0000001E6", None),
    ],
)
def test_amount_written_with_an_exponent_is_read_as_the_exact_number(
    world: World, literal: str, value: float | None
) -> None:
    collector = world.collector()
    body = basket(world, collector, miles=3, basketPreTaxAmount="@A@", basketPostTaxAmount="@A@")
    content = json.dumps(body).replace('"@A@"', literal).encode()
    key = str(uuid.uuid4())

    response = raw_post(world, POST, content, key)

    if value is None:  # three decimals, or above the maximum, once read exactly
        problem = assert_problem(response, 400, "FIELD_INVALID")
        assert {e["field"] for e in problem["errors"]} == {
            "basketPreTaxAmount",
            "basketPostTaxAmount",
        }
        assert_nothing_stored(
            world.db, world.partner.client_id, collector, body["checkoutTransactionId"], key
        )
    else:
        assert response.status_code == 200, response.text
        assert response.json()["basketPreTaxAmount"] == value
        assert world.balance(collector) == 3


@pytest.mark.parametrize(
    ("issuances", "field"),
    [
        pytest.param(
            [line(8, contributingItemIds=["ZZ"])],
            "issuances[0].contributingItemIds[0]",
            id="first-line-first-id",
        ),
        pytest.param(
            [line(4, contributingItemIds=["A1"]), line(4, contributingItemIds=["B2", "ZZ"])],
            "issuances[1].contributingItemIds[1]",
            id="second-line-second-id",
        ),
    ],
)
@pytest.mark.parametrize("path", [POST, REVERSE, RECORD], ids=ENDPOINT_NAMES.get)
def test_contributing_item_naming_no_item_of_the_basket_is_400_field_invalid_at_that_id(
    world: World, issuances: list[dict[str, Any]], field: str, path: str
) -> None:
    # The amounts add up: a reference to an item the basket does not hold is an invalid field.
    _post_expecting_400(
        world,
        "FIELD_INVALID",
        field,
        path,
        items=[item("A1", 10), item("B2", 14.97)],
        issuances=issuances,
    )


@pytest.mark.parametrize("literal", ["24.970", "2.4970E1"])
def test_two_decimal_amount_written_with_trailing_zeros_is_accepted(
    world: World, literal: str
) -> None:
    collector = world.collector()
    body = basket(world, collector, miles=3, basketPreTaxAmount="@A@", basketPostTaxAmount="@A@")
    content = json.dumps(body).replace('"@A@"', literal).encode()

    response = raw_post(world, POST, content)

    assert response.status_code == 200, response.text
    assert response.json()["basketPreTaxAmount"] == 24.97
    assert world.balance(collector) == 3


def test_contributing_items_without_items_sent_are_accepted(world: World) -> None:
    out = _post_expecting_200(world, issuances=[line(3, contributingItemIds=["SKU-1", "SKU-2"])])
    assert out["issuances"][0]["contributingItemIds"] == ["SKU-1", "SKU-2"]
    assert "items" not in out


@pytest.mark.parametrize(
    ("items", "field"),
    [
        pytest.param([item("A", 10), item("A", 14.97)], "items", id="duplicate-ids"),
        pytest.param([item("A", 24.97, quantity=0)], "items[0].quantity", id="quantity-zero"),
        pytest.param([item("A", 24.97, quantity=-1)], "items[0].quantity", id="quantity-negative"),
        pytest.param([item("A", 24.97, quantity=1.5)], "items[0].quantity", id="quantity-fraction"),
        pytest.param([item("A", 24.97, quantity="1")], "items[0].quantity", id="quantity-string"),
        pytest.param([item("", 24.97)], "items[0].id", id="empty-id"),
        pytest.param([item("A" * 65, 24.97)], "items[0].id", id="id-65-chars"),
        pytest.param([], "items", id="empty-array"),
        pytest.param(
            [item(f"I{i}", 0.01) for i in range(limits.items_per_basket_max + 1)],
            "items",
            id="501-items",
        ),
    ],
)
def test_bad_items_are_400_field_invalid(
    world: World, items: list[dict[str, Any]], field: str
) -> None:
    pre = 0.01 * len(items) if len(items) > 2 else 24.97
    _post_expecting_400(
        world,
        "FIELD_INVALID",
        field,
        items=items,
        basketPreTaxAmount=round(pre, 2),
        basketPostTaxAmount=round(pre, 2),
    )


@pytest.mark.parametrize("missing", ["id", "quantity", "finalAmount"])
def test_item_without_a_required_field_is_400_field_required(world: World, missing: str) -> None:
    bad = item("A", 24.97)
    del bad[missing]
    _post_expecting_400(world, "FIELD_REQUIRED", f"items[0].{missing}", items=[bad])


def test_five_hundred_items_are_accepted(world: World) -> None:
    items = [item(f"I{i}", 0.01) for i in range(limits.items_per_basket_max)]
    out = _post_expecting_200(world, items=items, basketPreTaxAmount=5, basketPostTaxAmount=5)
    assert len(out["items"]) == limits.items_per_basket_max


@pytest.mark.parametrize("path", [POST, RECORD])
def test_empty_optional_fields_are_left_out_of_the_response_its_replay_and_the_lookup(
    world: World, path: str
) -> None:
    """SPEC §2.5 (amended): an optional field that is absent or empty is not echoed, at any
    level (basket, item, line)."""
    collector = world.collector()
    body = basket(
        world,
        collector,
        miles=3,
        deviceId="",
        coupon=[],
        context={},
        items=[item("A1", 24.97, name="", departmentId="", categoryId="")],
        issuances=[line(3, offerDescription="", contributingItemIds=[])],
    )
    first = world.partner.call(path, body, key=None)
    again = world.partner.call(path, body, key=None)  # rule 3.7: the stored result again

    assert first.status_code == 200, first.text
    assert again.status_code == 200, again.text
    echoed = first.json()
    lookup = get(world.partner, f"{TRANSACTIONS}/{echoed['transactionId']}")
    assert lookup.status_code == 200, lookup.text
    for answer in (echoed, again.json(), lookup.json()):
        assert not {"deviceId", "coupon", "context"} & set(answer), answer
        assert answer["items"] == [{"finalAmount": 24.97, "id": "A1", "quantity": 1}]
        out_line = answer["issuances"][0]
        assert not {"offerDescription", "contributingItemIds"} & set(out_line), out_line
    assert again.json() == echoed


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"basketTotal": None}, "basketTotal", id="basket"),
        pytest.param({"issuances": [line(8, bonus=None)]}, "issuances[0].bonus", id="line"),
        pytest.param({"items": [item("A", 24.97, colour=None)]}, "items[0].colour", id="item"),
    ],
)
def test_unknown_field_sent_as_null_is_400_field_unknown(
    world: World, overrides: dict[str, Any], field: str
) -> None:
    _post_expecting_400(world, "FIELD_UNKNOWN", field, **overrides)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("{:%Y-%m-%d %H:%M:%S}Z", id="space-separator"),
        pytest.param("{:%Y-%m-%dt%H:%M:%S}Z", id="lowercase-t"),
        pytest.param("{:%Y-%m-%dT%H:%M}Z", id="no-seconds"),
        pytest.param("{:%Y%m%dT%H%M%S}Z", id="basic-format"),
        pytest.param("{:%Y-%m-%dT%H:%M:%S}+00", id="hour-only-offset"),
    ],
)
@pytest.mark.parametrize("path", [POST, RECORD])
def test_checkout_date_time_not_in_rfc3339_is_400_field_invalid(
    world: World, path: str, value: str
) -> None:
    moment = (data.now() - timedelta(seconds=5)).astimezone(UTC)
    _post_expecting_400(
        world, "FIELD_INVALID", "checkoutDateTime", path, checkoutDateTime=value.format(moment)
    )


def test_checkout_date_time_with_nine_fraction_digits_is_accepted(world: World) -> None:
    moment = (data.now() - timedelta(seconds=5)).astimezone(UTC).replace(microsecond=0)
    out = _post_expecting_200(world, checkoutDateTime=f"{moment:%Y-%m-%dT%H:%M:%S}.123456789Z")
    # Echoed as read: a date-time holds microseconds.
    assert out["checkoutDateTime"] == f"{moment:%Y-%m-%dT%H:%M:%S}.123456Z"


def test_duplicated_member_name_in_an_item_is_400_malformed_json_and_stores_nothing(
    world: World,
) -> None:
    collector = world.collector()
    body = basket(world, collector, items=[item("A", 20), item("B", 4.97)])
    content = json.dumps(body).replace('"id": "B"', '"id": "B", "id": "A"').encode()
    key = str(uuid.uuid4())

    response = raw_post(world, POST, content, key=key)

    problem = assert_problem(response, 400, "MALFORMED_JSON", "items[1].id")
    assert '"id"' in problem["detail"]
    assert_nothing_stored(
        world.db, world.partner.client_id, collector, body["checkoutTransactionId"], key
    )


REQUIRED: dict[str, tuple[str, ...]] = {
    POST: (
        "checkoutTransactionId",
        "collectorNumber",
        "checkoutDateTime",
        "basketPreTaxAmount",
        "basketPostTaxAmount",
        "issuances",
    ),
    REVERSE: (
        "checkoutTransactionId",
        "collectorNumber",
        "checkoutDateTime",
        "basketPreTaxAmount",
        "basketPostTaxAmount",
        "issuances",
    ),
    RECORD: (
        "checkoutTransactionId",
        "checkoutDateTime",
        "basketPreTaxAmount",
        "basketPostTaxAmount",
    ),
}


@pytest.mark.parametrize("how", ["missing", "null"])
@pytest.mark.parametrize(
    ("path", "field"),
    [
        pytest.param(path, field, id=f"{ENDPOINT_NAMES[path]}-{field}")
        for path, fields in REQUIRED.items()
        for field in fields
    ],
)
def test_required_basket_field_missing_is_400_field_required_and_stores_nothing(
    world: World, path: str, field: str, how: str
) -> None:
    collector = world.collector()
    body = basket(world, collector)
    checkout_id = body["checkoutTransactionId"]
    if how == "missing":
        del body[field]
    else:
        body[field] = None
    key = str(uuid.uuid4())

    response = world.partner.call(path, body, key=key)

    assert_problem(response, 400, "FIELD_REQUIRED", field)
    assert_nothing_stored(world.db, world.partner.client_id, collector, checkout_id, key)


@pytest.mark.parametrize("path", [POST, REVERSE], ids=ENDPOINT_NAMES.get)
def test_empty_issuances_on_a_moving_endpoint_is_400(world: World, path: str) -> None:
    _post_expecting_400(world, "FIELD_INVALID", "issuances", path=path, issuances=[])


@pytest.mark.parametrize("path", [POST, RECORD], ids=ENDPOINT_NAMES.get)
def test_original_checkout_id_is_not_a_field_of_post_or_record(world: World, path: str) -> None:
    _post_expecting_400(world, "FIELD_UNKNOWN", ORIGINAL, path=path, **{ORIGINAL: "x-1"})


# --------------------------------------------------------------------------- 3. REVERSE


def test_partial_reversals_add_up_to_the_original_and_never_beyond(world: World) -> None:
    collector = world.collector()
    original = post_basket(world, collector, miles=10)["checkoutTransactionId"]

    for miles in (3, 3, 4):
        response = reverse(world, collector, original, line(miles))
        assert response.status_code == 200, response.text
        out = response.json()
        assert out["issuances"][0]["status"] == "REVERSED"
        assert out[ORIGINAL] == original
    assert world.balance(collector) == 0

    fourth = reverse(world, collector, original, line(1))

    assert_problem(fourth, 400, "REVERSAL_EXCEEDS_ORIGINAL", "issuances[0].milesAmount")
    assert world.balance(collector) == 0


def test_reversal_is_bounded_per_offer_code(
    world: World, bonus_sponsor: tuple[str, Partner]
) -> None:
    sponsor, partner = bonus_sponsor
    collector = world.collector()
    original = data.basket_body(sponsor, collector, issuances=[line(10), line(5, offer="BONUS")])
    assert partner.call(POST, original).status_code == 200
    checkout_id = original["checkoutTransactionId"]

    def rev(*lines: dict[str, Any]) -> httpx.Response:
        body = data.basket_body(sponsor, collector, issuances=list(lines))
        body[ORIGINAL] = checkout_id
        return partner.call(REVERSE, body)

    too_much_bonus = rev(line(6, offer="BONUS"))
    split_over = rev(line(3, offer="BONUS"), line(3, offer="BONUS"))
    standard_for_bonus = rev(line(10), line(1))  # 11 STANDARD although 15 were issued in all
    exact = rev(line(5, offer="BONUS"), line(10))
    partner.close()

    assert_problem(too_much_bonus, 400, "REVERSAL_EXCEEDS_ORIGINAL", "issuances[0].milesAmount")
    assert_problem(split_over, 400, "REVERSAL_EXCEEDS_ORIGINAL", "issuances[1].milesAmount")
    assert_problem(standard_for_bonus, 400, "REVERSAL_EXCEEDS_ORIGINAL", "issuances[1].milesAmount")
    assert exact.status_code == 200, exact.text
    assert [ln["status"] for ln in exact.json()["issuances"]] == ["REVERSED", "REVERSED"]
    assert world.balance(collector) == 0


def test_reversal_of_an_offer_absent_from_the_original_is_400(
    world: World, bonus_sponsor: tuple[str, Partner]
) -> None:
    sponsor, partner = bonus_sponsor
    collector = world.collector()
    original = data.basket_body(sponsor, collector, issuances=[line(10)])
    assert partner.call(POST, original).status_code == 200
    body = data.basket_body(sponsor, collector, issuances=[line(1, offer="BONUS")])
    body[ORIGINAL] = original["checkoutTransactionId"]

    response = partner.call(REVERSE, body)
    partner.close()

    assert_problem(response, 400, "REVERSAL_EXCEEDS_ORIGINAL", "issuances[0].milesAmount")
    assert world.balance(collector) == 10


def test_reversal_of_an_unknown_original_is_400_original_not_found_and_recorded(
    world: World,
) -> None:
    collector = world.collector()
    post_basket(world, collector, miles=10)
    body = basket(world, collector, miles=1, **{ORIGINAL: data.txn_id("nope")})

    response = world.partner.call(REVERSE, body)

    assert_problem(response, 400, "ORIGINAL_NOT_FOUND", ORIGINAL)
    assert stored(world.db, world.sponsor, REVERSE, body["checkoutTransactionId"]) == [
        ("rejected", 400, "ORIGINAL_NOT_FOUND")
    ]
    assert world.balance(collector) == 10


def test_reversal_for_another_collector_is_400_original_collector_mismatch(world: World) -> None:
    owner, other = world.collector(), world.collector()
    original = post_basket(world, owner, miles=10)["checkoutTransactionId"]

    response = reverse(world, other, original, line(1))

    assert_problem(response, 400, "ORIGINAL_COLLECTOR_MISMATCH", ORIGINAL)
    assert world.balance(owner) == 10
    assert world.balance(other) == 0


def test_reversal_of_another_sponsors_post_is_400_original_not_found(world: World) -> None:
    sponsor_b = data.new_sponsor(world.db)
    partner_b = world.new_partner(sponsor_b)
    collector = world.collector()
    theirs = data.basket_body(sponsor_b, collector, miles=10)
    assert partner_b.call(POST, theirs).status_code == 200
    partner_b.close()

    response = reverse(world, collector, theirs["checkoutTransactionId"], line(1))

    assert_problem(response, 400, "ORIGINAL_NOT_FOUND", ORIGINAL)
    assert world.balance(collector) == 10


def test_reversal_of_a_rejected_post_is_400_original_not_found(world: World) -> None:
    collector = world.collector()
    rejected = basket(world, collector, issuances=[line(5, offer="NOSUCH")])
    assert world.partner.call(POST, rejected).status_code == 400

    response = reverse(world, collector, rejected["checkoutTransactionId"], line(1))

    assert_problem(response, 400, "ORIGINAL_NOT_FOUND", ORIGINAL)


def test_reverse_without_original_is_a_standalone_correction(world: World) -> None:
    collector = world.collector()
    post_basket(world, collector, miles=3)

    response = reverse(world, collector, None, line(5))

    assert response.status_code == 200, response.text
    assert response.json()["issuances"][0]["status"] == "REVERSED"
    assert ORIGINAL not in response.json()
    assert world.balance(collector) == -2  # default negative-balance policy: allow


@pytest.mark.parametrize("kind", ["post-event", "reverse", "record"])
def test_reverse_can_only_name_a_post(world: World, kind: str) -> None:
    collector = world.collector()
    if kind == "post-event":
        event = world.body(collector, miles=10)
        assert world.partner.post_event(event).status_code == 200
        named = data.text_field(event, "clientTransactionId")
    else:
        post_basket(world, collector, miles=10)
        other = basket(world, collector, miles=1)
        path = RECORD if kind == "record" else REVERSE
        assert world.partner.call(path, other).status_code == 200
        named = other["checkoutTransactionId"]
    before = world.balance(collector)

    response = reverse(world, collector, named, line(1))

    assert_problem(response, 400, "ORIGINAL_NOT_FOUND", ORIGINAL)
    assert world.balance(collector) == before


@pytest.mark.parametrize("path", [REVERSE, RECORD], ids=ENDPOINT_NAMES.get)
def test_reverse_event_can_name_a_post_but_no_other_basket_transaction(
    world: World, path: str
) -> None:
    collector = world.collector()
    post_basket(world, collector, miles=10)
    other = basket(world, collector, miles=1)
    assert world.partner.call(path, other).status_code == 200
    before = world.balance(collector)

    response = reverse_event(world, collector, other["checkoutTransactionId"], 1)

    assert_problem(response, 400, "ORIGINAL_NOT_FOUND", "originalClientTransactionId")
    assert world.balance(collector) == before


def test_reverse_event_of_a_post_shares_the_bound_with_reverse(world: World) -> None:
    collector = world.collector()
    original = post_basket(world, collector, miles=10)["checkoutTransactionId"]

    first = reverse(world, collector, original, line(4))
    second = reverse_event(world, collector, original, 5)
    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    assert second.json()["issuances"][0]["status"] == "REVERSED"
    assert second.json()["originalClientTransactionId"] == original
    assert world.balance(collector) == 1

    event_over = reverse_event(world, collector, original, 2)
    basket_over = reverse(world, collector, original, line(2))
    assert_problem(event_over, 400, "REVERSAL_EXCEEDS_ORIGINAL", "issuances[0].milesAmount")
    assert_problem(basket_over, 400, "REVERSAL_EXCEEDS_ORIGINAL", "issuances[0].milesAmount")

    last = reverse_event(world, collector, original, 1)
    assert last.status_code == 200, last.text
    assert_problem(
        reverse(world, collector, original, line(1)),
        400,
        "REVERSAL_EXCEEDS_ORIGINAL",
        "issuances[0].milesAmount",
    )
    assert world.balance(collector) == 0


def test_reversal_of_a_pending_post_is_pending(world: World) -> None:
    collector = world.collector("ON_HOLD")
    original = basket(world, collector, miles=10)
    assert world.partner.call(POST, original).status_code == 202

    response = reverse(world, collector, original["checkoutTransactionId"], line(4))

    assert response.status_code == 202, response.text
    assert response.json()["issuances"][0]["status"] == "PENDING"
    assert world.balance(collector) == 0


def _put_out_of_use(world: World, sponsor: str, code: str, how: str) -> None:
    """Disable the offer, or end its validity yesterday (program time zone)."""
    with world.db.unit_of_work() as session:
        if how == "disabled":
            offers.disable_offer(session, sponsor, code)
        else:
            today = data.now().astimezone(clock.zone(Settings().program_time_zone)).date()
            session.execute(
                update(Offer)
                .where(Offer.sponsor_code == sponsor, Offer.code == code)
                .values(valid_to=today - timedelta(days=1))
            )


def _issue_bonus(partner: Partner, sponsor: str, collector: str, origin: str) -> str:
    """Issue 10 BONUS and 5 STANDARD two days ago, by POST or POST/EVENT; the original's id."""
    moment = data.iso(data.now() - timedelta(days=2))
    lines = [line(10, offer="BONUS"), line(5)]
    if origin == "post-event":
        event = data.event_body(sponsor, collector, transactionDateTime=moment, issuances=lines)
        assert partner.post_event(event).status_code == 200
        return str(event["clientTransactionId"])
    body = data.basket_body(sponsor, collector, checkoutDateTime=moment, issuances=lines)
    response = partner.call(POST, body)
    assert response.status_code == 200, response.text
    assert [ln["status"] for ln in response.json()["issuances"]] == ["ISSUED", "ISSUED"]
    return str(body["checkoutTransactionId"])


def _reverse_bonus(
    partner: Partner, sponsor: str, collector: str, via: str, original: str | None, miles: int
) -> httpx.Response:
    lines = [line(miles, offer="BONUS")]
    if via == "reverse-event":
        event = data.event_body(sponsor, collector, issuances=lines)
        if original is not None:
            event["originalClientTransactionId"] = original
        return partner.reverse_event(event)
    body = data.basket_body(sponsor, collector, issuances=lines)
    if original is not None:
        body[ORIGINAL] = original
    return partner.call(REVERSE, body)


@pytest.mark.parametrize("how", ["disabled", "expired"])
@pytest.mark.parametrize(
    ("via", "origin"),
    [("reverse", "post"), ("reverse-event", "post"), ("reverse-event", "post-event")],
)
def test_miles_of_an_offer_out_of_use_since_the_original_can_still_be_reversed(
    world: World, bonus_sponsor: tuple[str, Partner], how: str, via: str, origin: str
) -> None:
    # Rule 3.3: a reversal is bounded by what the original issued, whatever the offer's state
    # today; offer state applies to new credits only.
    sponsor, partner = bonus_sponsor
    collector = world.collector()
    original = _issue_bonus(partner, sponsor, collector, origin)
    _put_out_of_use(world, sponsor, "BONUS", how)

    first = _reverse_bonus(partner, sponsor, collector, via, original, 4)
    beyond = _reverse_bonus(partner, sponsor, collector, via, original, 7)
    rest = _reverse_bonus(partner, sponsor, collector, via, original, 6)
    new_credit = partner.call(
        POST, data.basket_body(sponsor, collector, issuances=[line(1, "BONUS")])
    )
    partner.close()

    assert first.status_code == 200, first.text
    assert first.json()["issuances"][0]["status"] == "REVERSED"
    assert_problem(beyond, 400, "REVERSAL_EXCEEDS_ORIGINAL", "issuances[0].milesAmount")
    assert rest.status_code == 200, rest.text
    assert_problem(new_credit, 400, "OFFER_INACTIVE", "issuances[0].issuanceOfferCode")
    assert world.balance(collector) == 5


@pytest.mark.parametrize("how", ["disabled", "expired"])
@pytest.mark.parametrize("via", ["reverse", "reverse-event"])
def test_standalone_reversal_under_an_offer_out_of_use_is_400_offer_inactive(
    world: World, bonus_sponsor: tuple[str, Partner], how: str, via: str
) -> None:
    sponsor, partner = bonus_sponsor
    collector = world.collector()
    _issue_bonus(partner, sponsor, collector, "post")
    _put_out_of_use(world, sponsor, "BONUS", how)

    response = _reverse_bonus(partner, sponsor, collector, via, None, 4)
    partner.close()

    assert_problem(response, 400, "OFFER_INACTIVE", "issuances[0].issuanceOfferCode")
    assert world.balance(collector) == 15


def test_pending_reversal_under_an_offer_disabled_since_the_original_settles(
    world: World, bonus_sponsor: tuple[str, Partner]
) -> None:
    sponsor, partner = bonus_sponsor
    collector = world.collector()
    original = _issue_bonus(partner, sponsor, collector, "post")  # posted: 15 miles
    with world.db.unit_of_work() as session:  # the reversal, then, waits on the hold
        collectors.set_status(session, collector, "ON_HOLD", data.now())
    _put_out_of_use(world, sponsor, "BONUS", "disabled")

    response = _reverse_bonus(partner, sponsor, collector, "reverse", original, 4)
    assert response.status_code == 202, response.text
    assert response.json()["issuances"][0]["status"] == "PENDING"
    with world.db.unit_of_work() as session:
        collectors.set_status(session, collector, "ACTIVE", data.now())
    settle_pending(world.db, Settings(), data.now())
    view = get(partner, f"{TRANSACTIONS}/{response.json()['transactionId']}")
    partner.close()

    assert view.status_code == 200, view.text
    assert view.json()["issuances"][0]["status"] == "REVERSED"
    assert world.balance(collector) == 11


# --------------------------------------------------------------------------- 4. racing reversals


def test_racing_reversals_of_one_basket_never_exceed_it(world: World) -> None:
    for round_no in range(4):
        collector = world.collector()
        original = post_basket(world, collector, miles=10)["checkoutTransactionId"]

        def basket_reversal(_: int, collector: str = collector, original: str = original) -> Any:
            return reverse(world, collector, original, line(6))

        def event_reversal(_: int, collector: str = collector, original: str = original) -> Any:
            return reverse_event(world, collector, original, 6)

        # Odd rounds race a REVERSE against a REVERSE/EVENT naming the same POST.
        racers = [basket_reversal, basket_reversal if round_no % 2 == 0 else event_reversal]
        with ThreadPoolExecutor(max_workers=2) as pool:
            responses = list(pool.map(lambda f: f(0), racers))

        assert sorted(r.status_code for r in responses) == [200, 400], [r.text for r in responses]
        loser = next(r for r in responses if r.status_code == 400)
        assert_problem(loser, 400, "REVERSAL_EXCEEDS_ORIGINAL", "issuances[0].milesAmount")
        assert world.balance(collector) == 4


# --------------------------------------------------------------------------- 5. RECORD


def test_record_without_collector_and_issuances_is_200(world: World) -> None:
    body = basket(world, world.collector())
    del body["collectorNumber"]
    del body["issuances"]
    del body["sponsorCode"]

    response = world.partner.call(RECORD, body, key=None)

    assert response.status_code == 200, response.text
    out = response.json()
    assert "collectorNumber" not in out
    assert "issuances" not in out
    assert out["sponsorCode"] == world.sponsor
    assert out["checkoutTransactionId"] == body["checkoutTransactionId"]
    assert out["basketPreTaxAmount"] == 24.97
    assert uuid.UUID(out["transactionId"]).version == 4
    assert stored(world.db, world.sponsor, RECORD, body["checkoutTransactionId"]) == [
        ("recorded", 200, None)
    ]


@pytest.mark.parametrize("status", ["ACTIVE", "ON_HOLD", "unknown"])
def test_record_lines_carry_no_status_and_no_balance_moves(world: World, status: str) -> None:
    collector = data.unknown_collector() if status == "unknown" else world.collector(status)
    body = basket(
        world,
        collector,
        items=[item("A1", 24.97)],
        issuances=[line(7, contributingItemIds=["A1"]), line(100_000, offerId=5)],
    )

    response = world.partner.call(RECORD, body)

    assert response.status_code == 200, response.text  # never 202
    assert response.json()["issuances"] == [
        {"contributingItemIds": ["A1"], "issuanceOfferCode": "STANDARD", "milesAmount": 7},
        {"issuanceOfferCode": "STANDARD", "milesAmount": 100_000, "offerId": "5"},
    ]
    assert ledger_entry_count(world.db, collector) == 0
    if status != "unknown":
        assert world.balance(collector) == 0


def test_record_ignores_the_idempotency_key(world: World) -> None:
    collector = world.collector()
    key = str(uuid.uuid4())
    first = basket(world, collector)
    second = basket(world, collector)

    one = world.partner.call(RECORD, first, key=key)
    two = world.partner.call(RECORD, second, key=key)
    # Not even parsed: a header that every other endpoint refuses is ignored here.
    three = world.partner.call(RECORD, basket(world, collector), key="x" * 256)

    for response in (one, two, three):
        assert response.status_code == 200, response.text
        assert "Idempotent-Replayed" not in response.headers
    ids = {r.json()["transactionId"] for r in (one, two, three)}
    assert len(ids) == 3
    with world.db.reader() as session:
        assert session.get(IdempotencyKey, (world.partner.client_id, key)) is None


def test_record_resent_identically_is_a_replay_and_changed_is_a_duplicate(world: World) -> None:
    collector = world.collector()
    body = basket(world, collector)

    first = world.partner.call(RECORD, body)
    again = world.partner.call(RECORD, body)
    changed = world.partner.call(RECORD, {**body, "basketPostTaxAmount": 25.97})

    assert first.status_code == 200, first.text
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert_problem(changed, 400, "DUPLICATE_TRANSACTION", "checkoutTransactionId")
    rows = stored(world.db, world.sponsor, RECORD, body["checkoutTransactionId"])
    assert sorted(rows, key=str) == [
        ("recorded", 200, None),
        ("rejected", 400, "DUPLICATE_TRANSACTION"),
    ]


def test_record_for_a_closed_collector_is_400_collector_closed_and_recorded(world: World) -> None:
    # SPEC 3.8: RECORD validates like the others; a closed account is refused everywhere.
    collector = world.collector("CLOSED")
    body = basket(world, collector, miles=5)

    response = world.partner.call(RECORD, body)

    assert_problem(response, 400, "COLLECTOR_CLOSED", "collectorNumber")
    assert stored(world.db, world.sponsor, RECORD, body["checkoutTransactionId"]) == [
        ("rejected", 400, "COLLECTOR_CLOSED")
    ]
    assert ledger_entry_count(world.db, collector) == 0


def test_record_with_an_unknown_offer_is_400_and_recorded_as_rejected(world: World) -> None:
    body = basket(world, world.collector(), issuances=[line(1), line(2, offer="NOSUCH")])

    response = world.partner.call(RECORD, body)

    assert_problem(response, 400, "OFFER_UNKNOWN", "issuances[1].issuanceOfferCode")
    assert stored(world.db, world.sponsor, RECORD, body["checkoutTransactionId"]) == [
        ("rejected", 400, "OFFER_UNKNOWN")
    ]


@pytest.mark.parametrize("path", [POST, REVERSE, RECORD], ids=ENDPOINT_NAMES.get)
def test_checkout_date_outside_the_window_is_400_at_checkout_date_time_and_recorded(
    world: World, path: str
) -> None:
    collector = world.collector()
    future = data.iso(data.now() + timedelta(minutes=6))
    body = basket(world, collector, checkoutDateTime=future)

    response = world.partner.call(path, body)

    assert_problem(response, 400, "DATE_OUT_OF_RANGE", "checkoutDateTime")
    assert stored(world.db, world.sponsor, path, body["checkoutTransactionId"]) == [
        ("rejected", 400, "DATE_OUT_OF_RANGE")
    ]
    assert ledger_entry_count(world.db, collector) == 0


def test_record_and_post_may_share_a_checkout_id(world: World) -> None:
    collector = world.collector()
    body = basket(world, collector, miles=6)

    posted = world.partner.call(POST, body)
    recorded = world.partner.call(RECORD, body)

    assert posted.status_code == 200, posted.text
    assert recorded.status_code == 200, recorded.text
    assert "Idempotent-Replayed" not in recorded.headers
    assert recorded.json()["transactionId"] != posted.json()["transactionId"]
    assert world.balance(collector) == 6


# --------------------------------------------------------------------------- 6. idempotency


@pytest.mark.parametrize("path", [POST, REVERSE], ids=ENDPOINT_NAMES.get)
def test_same_key_same_body_replays_and_different_body_is_422(world: World, path: str) -> None:
    collector = world.collector()
    key = str(uuid.uuid4())
    body = basket(world, collector, miles=5)

    first = world.partner.call(path, body, key=key)
    replay = world.partner.call(path, body, key=key)
    reused = world.partner.call(path, basket(world, collector, miles=6), key=key)

    assert first.status_code == 200, first.text
    assert "Idempotent-Replayed" not in first.headers
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert_problem(reused, 422, "IDEMPOTENCY_KEY_REUSED")
    assert world.balance(collector) == (5 if path == POST else -5)


def test_post_resent_without_key_is_a_replay_and_changed_is_a_duplicate(world: World) -> None:
    collector = world.collector()
    body = basket(world, collector, miles=5)

    first = world.partner.call(POST, body, key=None)
    again = world.partner.call(POST, body, key=None)
    changed = world.partner.call(POST, {**body, "basketPostTaxAmount": 1}, key=None)

    assert first.status_code == 200, first.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert_problem(changed, 400, "DUPLICATE_TRANSACTION", "checkoutTransactionId")
    assert world.balance(collector) == 5


# --------------------------------------------------------------------------- 7. lookup


def test_lookup_by_id_shows_the_post_as_it_stands_with_miles_reversed(
    world: World, bonus_sponsor: tuple[str, Partner]
) -> None:
    sponsor, partner = bonus_sponsor
    collector = world.collector()
    body = data.basket_body(
        sponsor, collector, issuances=[line(10), line(5, offer="BONUS"), line(4)]
    )
    posted = partner.call(POST, body)
    assert posted.status_code == 200, posted.text
    transaction_id = posted.json()["transactionId"]
    checkout_id = body["checkoutTransactionId"]

    before = get(partner, f"{TRANSACTIONS}/{transaction_id}")
    assert before.status_code == 200, before.text
    assert before.json()["transactionType"] == "POST"
    assert [ln["milesReversed"] for ln in before.json()["issuances"]] == [0, 0, 0]

    def rev(*lines: dict[str, Any]) -> httpx.Response:
        reversal = data.basket_body(sponsor, collector, issuances=list(lines))
        reversal[ORIGINAL] = checkout_id
        return partner.call(REVERSE, reversal)

    basket_reversal = rev(line(8), line(2, offer="BONUS"))
    event = data.event_body(sponsor, collector, miles=3, originalClientTransactionId=checkout_id)
    event_reversal = partner.reverse_event(event)
    assert basket_reversal.status_code == 200, basket_reversal.text
    assert event_reversal.status_code == 200, event_reversal.text

    after = get(partner, f"{TRANSACTIONS}/{transaction_id}")
    reversal_view = get(partner, f"{TRANSACTIONS}/{basket_reversal.json()['transactionId']}")
    partner.close()

    assert after.status_code == 200, after.text
    view = after.json()
    assert view["transactionType"] == "POST"
    assert view["transactionId"] == transaction_id
    assert view["checkoutTransactionId"] == checkout_id
    assert view["sponsorCode"] == sponsor
    assert view["collectorNumber"] == collector
    assert view["basketPreTaxAmount"] == 24.97
    assert view["transactionDateTime"] == posted.json()["transactionDateTime"]
    # 11 STANDARD miles reversed fill the 10-mile line first, then 1 of the 4-mile line.
    assert [(ln["status"], ln["milesAmount"], ln["milesReversed"]) for ln in view["issuances"]] == [
        ("ISSUED", 10, 10),
        ("ISSUED", 5, 2),
        ("ISSUED", 4, 1),
    ]
    assert reversal_view.status_code == 200, reversal_view.text
    reversal = reversal_view.json()
    assert reversal["transactionType"] == "REVERSE"
    assert reversal[ORIGINAL] == checkout_id
    assert [ln["status"] for ln in reversal["issuances"]] == ["REVERSED", "REVERSED"]
    assert all("milesReversed" not in ln for ln in reversal["issuances"])
    assert world.balance(collector) == 19 - 13


def test_lookup_by_id_of_a_record_shows_lines_without_status(world: World) -> None:
    collector = world.collector()
    recorded = world.partner.call(RECORD, basket(world, collector, miles=5))
    assert recorded.status_code == 200, recorded.text

    response = get(world.partner, f"{TRANSACTIONS}/{recorded.json()['transactionId']}")

    assert response.status_code == 200, response.text
    view = response.json()
    assert view["transactionType"] == "RECORD"
    assert view["issuances"] == [{"issuanceOfferCode": "STANDARD", "milesAmount": 5}]
    assert {k: v for k, v in view.items() if k != "transactionType"} == recorded.json()


def test_lookup_by_id_shows_pending_lines_as_pending(world: World) -> None:
    collector = world.collector("ON_HOLD")
    posted = world.partner.call(POST, basket(world, collector, miles=5))
    assert posted.status_code == 202, posted.text

    response = get(world.partner, f"{TRANSACTIONS}/{posted.json()['transactionId']}")

    assert response.status_code == 200, response.text
    assert response.json()["transactionType"] == "POST"
    assert [ln["status"] for ln in response.json()["issuances"]] == ["PENDING"]


def test_lookup_by_checkout_id_lists_every_basket_transaction_with_that_id(world: World) -> None:
    collector = world.collector()
    body = post_basket(world, collector, miles=10)
    checkout_id = body["checkoutTransactionId"]
    reversal = basket(world, collector, checkoutTransactionId=checkout_id, issuances=[line(4)])
    reversal[ORIGINAL] = checkout_id
    assert world.partner.call(REVERSE, reversal).status_code == 200
    assert world.partner.call(RECORD, {**body, "collectorNumber": collector}).status_code == 200
    # An event transaction with the same id is not a basket transaction.
    event = world.body(collector, clientTransactionId=checkout_id)
    assert world.partner.post_event(event).status_code == 200

    response = get(world.partner, TRANSACTIONS, {"checkoutTransactionId": checkout_id})

    assert response.status_code == 200, response.text
    found = response.json()["transactions"]
    assert sorted(t["transactionType"] for t in found) == ["POST", "RECORD", "REVERSE"]
    by_type = {t["transactionType"]: t for t in found}
    assert by_type["POST"]["issuances"][0]["milesReversed"] == 4
    assert by_type["REVERSE"]["issuances"][0]["status"] == "REVERSED"
    assert "status" not in by_type["RECORD"]["issuances"][0]
    assert {t["checkoutTransactionId"] for t in found} == {checkout_id}
    assert world.balance(collector) == 6 + 8


def test_lookup_by_client_id_lists_the_event_transactions(world: World) -> None:
    collector = world.collector()
    event = world.body(collector, miles=9)
    client_id = data.text_field(event, "clientTransactionId")
    assert world.partner.post_event(event).status_code == 200
    reversal = world.body(
        collector, miles=2, clientTransactionId=client_id, originalClientTransactionId=client_id
    )
    assert world.partner.reverse_event(reversal).status_code == 200

    response = get(
        world.partner,
        TRANSACTIONS,
        {"clientTransactionId": client_id, "sponsorCode": world.sponsor},
    )

    assert response.status_code == 200, response.text
    found = response.json()["transactions"]
    assert sorted(t["transactionType"] for t in found) == ["POST/EVENT", "REVERSE/EVENT"]
    by_type = {t["transactionType"]: t for t in found}
    assert by_type["POST/EVENT"]["issuances"][0]["milesReversed"] == 2
    assert by_type["REVERSE/EVENT"]["issuances"][0]["status"] == "REVERSED"


def test_lookup_of_an_unused_id_is_an_empty_list(world: World) -> None:
    response = get(world.partner, TRANSACTIONS, {"checkoutTransactionId": data.txn_id("none")})
    assert response.status_code == 200, response.text
    assert response.json() == {"transactions": []}


def test_lookup_is_scoped_to_the_clients_sponsors(world: World) -> None:
    collector = world.collector()
    body = basket(world, collector, miles=3)
    posted = world.partner.call(POST, body)
    assert posted.status_code == 200, posted.text
    transaction_id = posted.json()["transactionId"]
    sponsor_b = data.new_sponsor(world.db)
    partner_b = world.new_partner(sponsor_b)
    partner_ab = world.new_partner(world.sponsor, sponsor_b)

    by_id = get(partner_b, f"{TRANSACTIONS}/{transaction_id}")
    by_query = get(
        partner_b,
        TRANSACTIONS,
        {"sponsorCode": world.sponsor, "checkoutTransactionId": body["checkoutTransactionId"]},
    )
    own_sponsor = get(
        partner_b, TRANSACTIONS, {"checkoutTransactionId": body["checkoutTransactionId"]}
    )
    both_by_id = get(partner_ab, f"{TRANSACTIONS}/{transaction_id}")
    both_without_sponsor = get(
        partner_ab, TRANSACTIONS, {"checkoutTransactionId": body["checkoutTransactionId"]}
    )
    unknown = get(partner_b, f"{TRANSACTIONS}/{uuid.uuid4()}")  # 404 alike: no existence leak
    partner_b.close()
    partner_ab.close()

    assert_problem(by_id, 404, "NOT_FOUND")
    assert_problem(unknown, 404, "NOT_FOUND")
    assert set(by_id.json()) == set(unknown.json())
    assert_problem(by_query, 403, "SPONSOR_NOT_ALLOWED", "sponsorCode")
    assert own_sponsor.status_code == 200, own_sponsor.text
    assert own_sponsor.json() == {"transactions": []}
    assert both_by_id.status_code == 200, both_by_id.text
    assert both_by_id.json()["transactionId"] == transaction_id
    assert_problem(both_without_sponsor, 400, "FIELD_REQUIRED", "sponsorCode")


def test_rejected_transaction_is_not_found(world: World) -> None:
    collector = world.collector("CLOSED")
    body = basket(world, collector)
    assert_problem(world.partner.call(POST, body), 400, "COLLECTOR_CLOSED")
    with world.db.reader() as session:
        rejected_id = session.execute(
            select(Transaction.id).where(
                Transaction.partner_transaction_id == body["checkoutTransactionId"]
            )
        ).scalar_one()

    by_id = get(world.partner, f"{TRANSACTIONS}/{rejected_id}")
    by_query = get(
        world.partner, TRANSACTIONS, {"checkoutTransactionId": body["checkoutTransactionId"]}
    )

    assert_problem(by_id, 404, "NOT_FOUND")
    assert by_query.status_code == 200, by_query.text
    assert by_query.json() == {"transactions": []}


@pytest.mark.parametrize("transaction_id", ["not-a-uuid", str(uuid.uuid4()), "x" * 300])
def test_lookup_of_an_unknown_id_is_404(world: World, transaction_id: str) -> None:
    assert_problem(get(world.partner, f"{TRANSACTIONS}/{transaction_id}"), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({}, id="neither"),
        pytest.param({"checkoutTransactionId": "a-1", "clientTransactionId": "a-1"}, id="both"),
    ],
)
def test_lookup_needs_exactly_one_of_the_two_ids(world: World, params: dict[str, str]) -> None:
    response = get(world.partner, TRANSACTIONS, params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["code"] in ("FIELD_REQUIRED", "FIELD_INVALID")
    fields = {e["field"] for e in problem["errors"]}
    assert fields, problem  # an empty list of errors would pass the next line
    assert fields <= {"checkoutTransactionId", "clientTransactionId"}


@pytest.mark.parametrize(
    ("path", "params"),
    [
        pytest.param(f"{TRANSACTIONS}/{uuid.uuid4()}", None, id="by-id"),
        pytest.param(TRANSACTIONS, {"checkoutTransactionId": "a-1"}, id="by-query"),
    ],
)
@pytest.mark.parametrize("auth", ["none", "garbage"])
def test_lookup_without_a_valid_token_is_401(
    world: World, path: str, params: dict[str, str] | None, auth: str
) -> None:
    if auth == "none":
        response = get(world.partner, path, params, auth=False)
        assert_problem(response, 401, "TOKEN_MISSING")
    else:
        response = world.partner.http.get(
            path, params=params, headers={"Authorization": "Bearer not.a.token"}
        )
        assert response.status_code == 401, response.text
        assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["www-authenticate"].lower().startswith("bearer")
