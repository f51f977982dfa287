"""Bad input to the event endpoints over HTTP (SPEC §2.1, §2.3, §3, §6), on both databases.

Two families, as rule 3.1 splits them:
- a malformed request (shape, types, lengths, headers, body) is a 400/413/415 problem document with
  a stable `code` and the offending `field`, and stores nothing at all: no transaction row, no
  ledger entry, no idempotency key;
- a well-formed request that breaks a business rule is a 400 (403 for a sponsor outside the token)
  that is recorded as a rejected transaction for the audit report, and moves no miles.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import delete, select, update

from rewardmiles import limits
from rewardmiles.db.models import (
    Offer,
    PartnerClientSponsor,
    Sponsor,
    Transaction,
)
from tests.e2e.conftest import World
from tests.support import data
from tests.support.partner import POST_EVENT, REVERSE_EVENT, Partner
from tests.support.problems import (
    PROBLEM_JSON,
    assert_nothing_stored,
    assert_problem,
    ledger_entry_count,
)

PROGRAM_ZONE = ZoneInfo("America/Toronto")
MILES_PER_LINE_MAX = 100_000
ENDPOINT_NAMES = {POST_EVENT: "post_event", REVERSE_EVENT: "reverse_event"}
PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "errors", "requestId"}


# --------------------------------------------------------------------------- helpers

Mutation = Callable[[dict[str, Any]], None]


def setting(*path: str | int, value: Any) -> Mutation:
    """Set the value at `path` (keys and list indexes) in the body."""

    def mutate(body: dict[str, Any]) -> None:
        target: Any = body
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return mutate


def removing(*path: str | int) -> Mutation:
    def mutate(body: dict[str, Any]) -> None:
        target: Any = body
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return mutate


def with_lines(*lines: dict[str, Any]) -> Mutation:
    return setting("issuances", value=[dict(line) for line in lines])


def line(miles: Any = 8, offer: Any = "STANDARD", **fields: Any) -> dict[str, Any]:
    return {"issuanceOfferCode": offer, "milesAmount": miles, **fields}


def call(partner: Partner, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    return partner.call(path, body, **kwargs)


def raw_post(
    world: World,
    content: bytes | Iterator[bytes],
    *,
    content_type: str | None = "application/json",
    path: str = POST_EVENT,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    all_headers = {"Authorization": f"Bearer {world.partner.token}", **(headers or {})}
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    return world.partner.http.post(path, content=content, headers=all_headers)


def assert_recorded_rejection(
    world: World, sponsor: str, path: str, client_transaction_id: str, code: str
) -> None:
    """Rule 3.1: a business-rule 400 is kept, as rejected, for the audit report."""
    with world.db.reader() as session:
        rows = session.execute(
            select(Transaction.status, Transaction.http_status, Transaction.error_code).where(
                Transaction.sponsor_code == sponsor,
                Transaction.endpoint == ENDPOINT_NAMES[path],
                Transaction.partner_transaction_id == client_transaction_id,
                Transaction.status == "rejected",
            )
        ).all()
    assert [tuple(r) for r in rows] == [("rejected", 400, code)]


def loose_date_times(moment: datetime) -> dict[str, str]:
    """`moment` written in ways ISO-8601 allows, or lenient parsers take, but RFC 3339 does not
    (or the amended SPEC narrows away: lowercase `z`, offsets beyond −12:00…+14:00)."""
    utc = moment.astimezone(UTC)
    plus_one = moment.astimezone(timezone(timedelta(hours=1)))
    plus_fifteen = moment.astimezone(timezone(timedelta(hours=15)))
    return {
        "space-separator": utc.strftime("%Y-%m-%d %H:%M:%SZ"),
        "lowercase-t": utc.strftime("%Y-%m-%dt%H:%M:%SZ"),
        "lowercase-z": utc.strftime("%Y-%m-%dT%H:%M:%Sz"),
        "hour-only-offset": plus_one.strftime("%Y-%m-%dT%H:%M:%S+01"),
        "offset-with-seconds": plus_one.strftime("%Y-%m-%dT%H:%M:%S+01:00:00"),
        "offset-plus-15": plus_fifteen.strftime("%Y-%m-%dT%H:%M:%S+15:00"),
        "basic-format": utc.strftime("%Y%m%dT%H%M%SZ"),
        "week-date": utc.strftime("%G-W%V-%uT%H:%M:%SZ"),
        "no-seconds": utc.strftime("%Y-%m-%dT%H:%MZ"),
        "ten-digit-fraction": utc.strftime("%Y-%m-%dT%H:%M:%S.1234567890Z"),
    }


def rfc3339_in(offset: timedelta, fraction: str = "") -> Mutation:
    """Sets `transactionDateTime` to a few seconds ago at `offset`, with `fraction` digits."""

    def mutate(body: dict[str, Any]) -> None:
        moment = (data.now() - timedelta(seconds=5)).astimezone(timezone(offset))
        text = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "")
        sign = "-" if offset < timedelta(0) else "+"
        minutes = abs(int(offset.total_seconds())) // 60
        text += "Z" if offset == timedelta(0) else f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
        body["transactionDateTime"] = text

    return mutate


# A Toronto evening of the last day: its Transaction Day is the day before its UTC date.
EVENING = data.iso(data.toronto_evening())


def program_date(body: dict[str, Any]) -> date:
    return datetime.fromisoformat(body["transactionDateTime"]).astimezone(PROGRAM_ZONE).date()


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


# --------------------------------------------------------------------------- A. field rules


@dataclass(frozen=True)
class Rule:
    id: str
    mutate: Mutation
    code: str
    field: str | frozenset[str]
    endpoints: tuple[str, ...] = (POST_EVENT, REVERSE_EVENT)


def _rules() -> list[Rule]:
    required = [
        ("clientTransactionId", ("clientTransactionId",)),
        ("collectorNumber", ("collectorNumber",)),
        ("sponsorCode", ("sponsorCode",)),
        ("transactionDateTime", ("transactionDateTime",)),
        ("issuances", ("issuances",)),
        ("issuances[0].issuanceOfferCode", ("issuances", 0, "issuanceOfferCode")),
        ("issuances[0].milesAmount", ("issuances", 0, "milesAmount")),
    ]
    rules: list[Rule] = []
    for field, path in required:
        rules.append(Rule(f"{field}-missing", removing(*path), "FIELD_REQUIRED", field))
    for field, path in required:
        rules.append(
            Rule(
                f"{field}-null",
                setting(*path, value=None),
                "FIELD_REQUIRED",
                field,
            )
        )

    def invalid(rule_id: str, mutate: Mutation, field: str, **kw: Any) -> Rule:
        return Rule(rule_id, mutate, kw.pop("code", "FIELD_INVALID"), field, **kw)

    ctid = "clientTransactionId"
    rules += [
        invalid(f"{ctid}-empty", setting(ctid, value=""), ctid),
        invalid(f"{ctid}-65-chars", setting(ctid, value="T" * 65), ctid),
        invalid(f"{ctid}-with-space", setting(ctid, value="t 1"), ctid),
        invalid(f"{ctid}-non-ascii", setting(ctid, value="café-1"), ctid),
        invalid(f"{ctid}-number", setting(ctid, value=111112314), ctid),
    ]
    cn = "collectorNumber"
    rules += [
        invalid(
            f"{cn}-10-digits", setting(cn, value="8008510202"), cn, code="COLLECTOR_NUMBER_INVALID"
        ),
        invalid(
            f"{cn}-12-digits",
            setting(cn, value="800851020281"),
            cn,
            code="COLLECTOR_NUMBER_INVALID",
        ),
        invalid(
            f"{cn}-letters", setting(cn, value="8008510202A"), cn, code="COLLECTOR_NUMBER_INVALID"
        ),
        invalid(
            f"{cn}-json-number", setting(cn, value=80085102028), cn, code="COLLECTOR_NUMBER_INVALID"
        ),
    ]
    sc = "sponsorCode"
    rules += [
        invalid(f"{sc}-lowercase", setting(sc, value="keny"), sc),
        invalid(f"{sc}-1-char", setting(sc, value="K"), sc),
        invalid(f"{sc}-11-chars", setting(sc, value="ABCDEFGHIJK"), sc),
    ]
    dt = "transactionDateTime"
    naive = (
        (data.now() - timedelta(seconds=5)).replace(tzinfo=None).isoformat(timespec="milliseconds")
    )
    rules += [
        invalid(f"{dt}-not-a-date", setting(dt, value="yesterday at noon"), dt),
        invalid(f"{dt}-naive", setting(dt, value=naive), dt),
        invalid(f"{dt}-number", setting(dt, value=1636491885), dt),
    ]
    # SPEC §6 (amended): RFC 3339 exactly. Each of these names a recent instant that a looser
    # ISO-8601 reading would take.
    rules += [
        invalid(f"{dt}-{rule_id}", setting(dt, value=value), dt)
        for rule_id, value in loose_date_times(data.now() - timedelta(seconds=5)).items()
    ]
    rules += [
        invalid("issuances-empty", setting("issuances", value=[]), "issuances"),
        invalid(
            "issuances-51-lines",
            setting(
                "issuances",
                value=[line(1) for _ in range(limits.issuance_lines_per_request_max + 1)],
            ),
            "issuances",
        ),
        invalid("issuances-object", setting("issuances", value=line()), "issuances"),
        invalid("issuances-string", setting("issuances", value="STANDARD"), "issuances"),
    ]
    oc = "issuances[1].issuanceOfferCode"
    rules += [
        invalid("issuanceOfferCode-lowercase", with_lines(line(), line(offer="standard")), oc),
        invalid("issuanceOfferCode-9-chars", with_lines(line(), line(offer="STANDARD9")), oc),
    ]
    miles = "issuances[0].milesAmount"
    for rule_id, value in [
        ("zero", 0),
        ("negative", -1),
        ("fraction", 8.5),
        ("string", "8"),
        ("boolean", True),
        ("above-line-max", MILES_PER_LINE_MAX + 1),
    ]:
        rules.append(
            invalid(
                f"milesAmount-{rule_id}",
                with_lines(line(value)),
                miles,
                code="MILES_AMOUNT_INVALID",
            )
        )
    rules.append(
        invalid(
            "milesAmount-zero-on-second-line",
            with_lines(line(), line(0)),
            "issuances[1].milesAmount",
            code="MILES_AMOUNT_INVALID",
        )
    )
    loc = "issuances[0].locationCode"
    rules += [
        invalid("locationCode-11-chars", with_lines(line(locationCode="00370000000")), loc),
        invalid("locationCode-empty", with_lines(line(locationCode="")), loc),
        invalid(
            "offerDescription-256-chars",
            with_lines(line(offerDescription="d" * 256)),
            "issuances[0].offerDescription",
        ),
        invalid("offerId-65-chars", with_lines(line(offerId="9" * 65)), "issuances[0].offerId"),
        invalid("offerId-float", with_lines(line(offerId=22.5)), "issuances[0].offerId"),
        invalid("offerId-boolean", with_lines(line(offerId=True)), "issuances[0].offerId"),
    ]
    rules += [
        invalid("coupon-51-codes", setting("coupon", value=[f"C{i}" for i in range(51)]), "coupon"),
        invalid("coupon-65-char-code", setting("coupon", value=["OK", "C" * 65]), "coupon[1]"),
        invalid("coupon-not-array", setting("coupon", value="SAVE10"), "coupon"),
    ]
    long_key = "k" * 65
    rules += [
        invalid(
            "context-21-keys",
            setting("context", value={f"key{i}": "v" for i in range(21)}),
            "context",
        ),
        Rule(
            "context-65-char-key",
            setting("context", value={long_key: "v"}),
            "FIELD_INVALID",
            frozenset({"context", f"context.{long_key}"}),
        ),
        invalid(
            "context-257-char-value", setting("context", value={"key1": "v" * 257}), "context.key1"
        ),
        invalid("context-number-value", setting("context", value={"key1": 1}), "context.key1"),
        invalid("deviceId-65-chars", setting("deviceId", value="D" * 65), "deviceId"),
    ]
    rules += [
        Rule(
            "unknown-top-level-field",
            setting("basketTotal", value=1),
            "FIELD_UNKNOWN",
            "basketTotal",
        ),
        Rule(
            "unknown-top-level-field-null",
            setting("basketTotal", value=None),
            "FIELD_UNKNOWN",
            "basketTotal",
        ),
        Rule(
            "unknown-line-field-null",
            with_lines(line(), line(bonus=None)),
            "FIELD_UNKNOWN",
            "issuances[1].bonus",
        ),
        Rule(
            "contributingItemIds-null-on-event-line",
            with_lines(line(contributingItemIds=None)),
            "FIELD_UNKNOWN",
            "issuances[0].contributingItemIds",
        ),
        Rule(
            "originalClientTransactionId-null-on-post-event",
            setting("originalClientTransactionId", value=None),
            "FIELD_UNKNOWN",
            "originalClientTransactionId",
            endpoints=(POST_EVENT,),
        ),
        Rule(
            "unknown-line-field",
            with_lines(line(), line(bonus=True)),
            "FIELD_UNKNOWN",
            "issuances[1].bonus",
        ),
        Rule(
            "contributingItemIds-on-event-line",
            with_lines(line(contributingItemIds=["1"])),
            "FIELD_UNKNOWN",
            "issuances[0].contributingItemIds",
        ),
        Rule(
            "originalClientTransactionId-on-post-event",
            setting("originalClientTransactionId", value="12340001111"),
            "FIELD_UNKNOWN",
            "originalClientTransactionId",
            endpoints=(POST_EVENT,),
        ),
    ]
    octid = "originalClientTransactionId"
    for rule_id, value in [
        ("empty", ""),
        ("65-chars", "T" * 65),
        ("with-space", "t 1"),
        ("number", 12340001111),
    ]:
        rules.append(
            Rule(
                f"{octid}-{rule_id}",
                setting(octid, value=value),
                "FIELD_INVALID",
                octid,
                endpoints=(REVERSE_EVENT,),
            )
        )
    return rules


def _rule_params() -> list[Any]:
    params = []
    for rule in _rules():
        for path in rule.endpoints:
            params.append(pytest.param(path, rule, id=f"{ENDPOINT_NAMES[path]}-{rule.id}"))
    return params


@pytest.mark.parametrize(("path", "rule"), _rule_params())
def test_malformed_field_is_400_with_its_code_and_path_and_stores_nothing(
    world: World, path: str, rule: Rule
) -> None:
    collector = world.collector()
    body = world.body(collector)
    client_transaction_id = str(body["clientTransactionId"])
    rule.mutate(body)
    key = str(uuid.uuid4())

    response = call(world.partner, path, body, key=key)

    problem = assert_problem(response, 400, rule.code, rule.field)
    assert isinstance(problem["errors"][0]["message"], str)
    assert problem["errors"][0]["message"]
    assert_nothing_stored(world.db, world.partner.client_id, collector, client_transaction_id, key)


@pytest.mark.parametrize("path", [POST_EVENT, REVERSE_EVENT], ids=ENDPOINT_NAMES.get)
def test_null_optional_fields_are_as_if_absent(world: World, path: str) -> None:
    collector = world.collector()
    body = world.body(collector, coupon=None, context=None, deviceId=None)
    body["issuances"] = [line(5, locationCode=None, offerDescription=None, offerId=None)]
    if path == REVERSE_EVENT:
        body["originalClientTransactionId"] = None

    response = call(world.partner, path, body)

    assert response.status_code == 200, response.text
    assert world.balance(collector) == (5 if path == POST_EVENT else -5)


def _program_zone_time(body: dict[str, Any]) -> None:
    moment = (data.now() - timedelta(seconds=5)).astimezone(PROGRAM_ZONE)
    body["transactionDateTime"] = moment.isoformat(timespec="milliseconds")


def _limit_params() -> list[Any]:
    def case(rule_id: str, mutate: Mutation) -> Any:
        return pytest.param(mutate, id=rule_id)

    return [
        case("milesAmount-100000", with_lines(line(MILES_PER_LINE_MAX))),
        case(
            "clientTransactionId-64-printable-chars",
            setting("clientTransactionId", value="!~" * 32),
        ),
        case("transactionDateTime-with-program-offset", _program_zone_time),
        case("transactionDateTime-no-fraction", rfc3339_in(timedelta(0))),
        case("transactionDateTime-1-digit-fraction", rfc3339_in(timedelta(0), "5")),
        case("transactionDateTime-9-digit-fraction", rfc3339_in(timedelta(0), "123456789")),
        case("transactionDateTime-offset-plus-14", rfc3339_in(timedelta(hours=14), "25")),
        case("transactionDateTime-offset-minus-12", rfc3339_in(timedelta(hours=-12))),
        case("transactionDateTime-offset-plus-05-45", rfc3339_in(timedelta(hours=5, minutes=45))),
        case("issuances-50-lines", setting("issuances", value=[line(1) for _ in range(50)])),
        case("locationCode-10-chars", with_lines(line(locationCode="0037000000"))),
        case("offerDescription-255-chars", with_lines(line(offerDescription="d" * 255))),
        case("offerId-64-chars", with_lines(line(offerId="9" * 64))),
        case("offerId-integer", with_lines(line(offerId=22))),
        case("coupon-50-codes-of-64", setting("coupon", value=["C" * 64] * 50)),
        case(
            "context-20-keys-64-by-256",
            setting("context", value={f"{i:02d}" + "k" * 62: "v" * 256 for i in range(20)}),
        ),
        case("deviceId-64-chars", setting("deviceId", value="D" * 64)),
    ]


@pytest.mark.parametrize("mutate", _limit_params())
def test_value_at_the_limit_is_accepted(world: World, mutate: Mutation) -> None:
    collector = world.collector()
    body = world.body(collector)
    mutate(body)
    issuances = body["issuances"]
    assert isinstance(issuances, list)
    expected = sum(int(item["milesAmount"]) for item in issuances)

    response = world.partner.post_event(body)

    assert response.status_code == 200, response.text
    assert world.balance(collector) == expected


@pytest.mark.parametrize(
    "offer_id",
    [
        pytest.param(22, id="small"),
        pytest.param(12345678901234567890, id="20-digits"),
        pytest.param(int("9" * 30), id="30-digits"),
        pytest.param(int("9" * 64), id="64-digits"),
    ],
)
def test_integer_offer_id_is_accepted_and_echoed_as_its_exact_digits(
    world: World, offer_id: int
) -> None:
    collector = world.collector()
    body = world.body(collector, issuances=[line(2, offerId=offer_id)])

    response = world.partner.post_event(body)

    assert response.status_code == 200, response.text
    assert response.json()["issuances"][0]["offerId"] == str(offer_id)
    assert world.balance(collector) == 2


def test_problem_document_has_every_member_and_echoes_the_request_id(world: World) -> None:
    collector = world.collector()
    body = world.body(collector, issuances=[line(0)])
    request_id = f"partner-{uuid.uuid4().hex}"

    response = world.partner.post_event(body, headers={"X-Request-Id": request_id})

    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["x-request-id"] == request_id
    problem = response.json()
    assert set(problem) == PROBLEM_KEYS
    assert problem["type"] == "/problems/MILES_AMOUNT_INVALID"
    assert problem["title"] == "Miles amount invalid"
    assert problem["status"] == 400
    assert isinstance(problem["detail"], str)
    assert problem["detail"]
    assert problem["code"] == "MILES_AMOUNT_INVALID"
    assert problem["errors"] == [
        {
            "code": "MILES_AMOUNT_INVALID",
            "field": "issuances[0].milesAmount",
            "message": "must be a JSON integer from 1 to the per-line maximum",
        }
    ]
    assert problem["requestId"] == request_id

    # `type` resolves to the catalogue entry of the code.
    entry = world.partner.http.get(problem["type"])
    assert entry.status_code == 200
    assert entry.json()["code"] == "MILES_AMOUNT_INVALID"
    assert entry.json()["status"] == 400
    assert entry.json()["title"] == problem["title"]

    # Without an incoming id the server makes one, and the body carries the same.
    again = world.partner.post_event(body)
    assert again.json()["requestId"] == again.headers["x-request-id"]
    assert again.json()["requestId"]
    assert again.json()["requestId"] != request_id


def test_several_bad_fields_are_validation_failed_listing_each(world: World) -> None:
    collector = world.collector()
    body = world.body(collector, collectorNumber="123", basketTotal=1)
    client_transaction_id = str(body["clientTransactionId"])
    del body["sponsorCode"]
    body["issuances"] = [line(), line(0)]
    key = str(uuid.uuid4())

    response = world.partner.post_event(body, key=key)

    problem = assert_problem(response, 400, "VALIDATION_FAILED")
    assert problem["title"] == "Invalid request"
    assert sorted((e["code"], e["field"]) for e in problem["errors"]) == [
        ("COLLECTOR_NUMBER_INVALID", "collectorNumber"),
        ("FIELD_REQUIRED", "sponsorCode"),
        ("FIELD_UNKNOWN", "basketTotal"),
        ("MILES_AMOUNT_INVALID", "issuances[1].milesAmount"),
    ]
    assert all(e["message"] for e in problem["errors"])
    assert_nothing_stored(world.db, world.partner.client_id, collector, client_transaction_id, key)


# --------------------------------------------------------------------------- A. bodies, headers


@pytest.mark.parametrize(
    ("content", "detail_mentions"),
    [
        pytest.param(b'{"clientTransactionId": "t-1",', "not valid JSON", id="truncated-json"),
        pytest.param(b"clientTransactionId=t-1", "not valid JSON", id="form-encoded"),
        pytest.param(b"", "not valid JSON", id="empty-body"),
        pytest.param(b"[]", "JSON object", id="json-array"),
        pytest.param(b'"a string"', "JSON object", id="json-string"),
    ],
)
def test_body_that_is_not_a_json_object_is_400_malformed_json(
    world: World, content: bytes, detail_mentions: str
) -> None:
    response = raw_post(world, content)

    problem = assert_problem(response, 400, "MALFORMED_JSON")
    assert detail_mentions in problem["detail"]


def test_valid_body_inside_a_json_array_is_malformed_json_and_stores_nothing(world: World) -> None:
    collector = world.collector()
    body = world.body(collector)
    key = str(uuid.uuid4())

    response = world.partner.post_event([body], key=key)

    assert_problem(response, 400, "MALFORMED_JSON")
    assert_nothing_stored(
        world.db, world.partner.client_id, collector, str(body["clientTransactionId"]), key
    )


@pytest.mark.parametrize(
    ("template", "field"),
    [
        pytest.param(
            '{"clientTransactionId": "%(id)s", "collectorNumber": "%(collector)s", '
            '"collectorNumber": "%(collector)s", %(rest)s}',
            "collectorNumber",
            id="top-level-same-value",
        ),
        pytest.param(
            '{"clientTransactionId": "%(id)s", "collectorNumber": "%(collector)s", %(rest)s, '
            '"issuances": [{"issuanceOfferCode": "STANDARD", "milesAmount": 1}]}',
            "issuances",
            id="top-level-array-sent-twice",
        ),
        pytest.param(
            '{"clientTransactionId": "%(id)s", "collectorNumber": "%(collector)s", '
            '"sponsorCode": "%(sponsor)s", "transactionDateTime": "%(moment)s", "issuances": ['
            '{"issuanceOfferCode": "STANDARD", "milesAmount": 1}, '
            '{"issuanceOfferCode": "STANDARD", "milesAmount": 1, "milesAmount": 90000}]}',
            "issuances[1].milesAmount",
            id="line-level",
        ),
        pytest.param(
            '{"clientTransactionId": "%(id)s", "collectorNumber": "%(collector)s", %(rest)s, '
            '"context": {"lane": "1", "lane": "2"}}',
            "context.lane",
            id="inside-context",
        ),
    ],
)
@pytest.mark.parametrize("path", [POST_EVENT, REVERSE_EVENT], ids=ENDPOINT_NAMES.get)
def test_duplicated_member_name_is_400_malformed_json_naming_it_and_stores_nothing(
    world: World, path: str, template: str, field: str
) -> None:
    """SPEC §6 (amended): one value must never be logged while another is posted."""
    collector = world.collector()
    body = world.body(collector)
    rest = (
        f'"sponsorCode": "{world.sponsor}", "transactionDateTime": '
        f'"{body["transactionDateTime"]}", "issuances": [{{"issuanceOfferCode": "STANDARD", '
        '"milesAmount": 1}]'
    )
    content = template % {
        "id": body["clientTransactionId"],
        "collector": collector,
        "sponsor": world.sponsor,
        "moment": body["transactionDateTime"],
        "rest": rest,
    }
    key = str(uuid.uuid4())

    response = raw_post(world, content.encode(), path=path, headers={"Idempotency-Key": key})

    problem = assert_problem(response, 400, "MALFORMED_JSON", field)
    name = field.rsplit(".", 1)[-1].split("[")[0]
    assert f'"{name}"' in problem["detail"]
    assert_nothing_stored(
        world.db, world.partner.client_id, collector, str(body["clientTransactionId"]), key
    )
    assert world.balance(collector) == 0


@pytest.mark.parametrize("path", [POST_EVENT, REVERSE_EVENT], ids=ENDPOINT_NAMES.get)
def test_empty_optional_fields_are_left_out_of_the_response_its_replay_and_the_lookup(
    world: World, path: str
) -> None:
    """SPEC §2.5 (amended): an optional field that is absent or empty is not echoed."""
    collector = world.collector()
    body = world.body(collector, deviceId="", coupon=[], context={})
    body["issuances"] = [line(3, offerDescription=""), line(2, offerDescription="Bonus")]
    key = str(uuid.uuid4())

    first = call(world.partner, path, body, key=key)
    replay = call(world.partner, path, body, key=key)

    assert first.status_code == 200, first.text
    assert replay.headers.get("idempotent-replayed") == "true"
    echoed = first.json()
    lookup = world.partner.http.get(
        f"/checkout/issuance/transactions/{echoed['transactionId']}",
        headers={"Authorization": f"Bearer {world.partner.token}"},
    )
    assert lookup.status_code == 200, lookup.text
    for answer in (echoed, replay.json(), lookup.json()):
        assert not {"deviceId", "coupon", "context"} & set(answer), answer
        assert "offerDescription" not in answer["issuances"][0], answer
        assert answer["issuances"][1]["offerDescription"] == "Bonus"
    assert replay.json() == echoed


def test_response_stored_with_empty_optionals_renders_without_them(world: World) -> None:
    """A transaction stored before empty optionals were left out answers its replay and its
    lookup as one stored now."""
    collector = world.collector()
    body = world.body(collector)
    key = str(uuid.uuid4())
    first = world.partner.post_event(body, key=key)
    assert first.status_code == 200, first.text
    transaction_id = first.json()["transactionId"]
    old = dict(first.json(), deviceId="", coupon=[])
    old["issuances"] = [dict(old["issuances"][0], offerDescription="")]
    with world.db.unit_of_work() as session:
        session.execute(
            update(Transaction)
            .where(Transaction.id == transaction_id)
            .values(response_json=json.dumps(old))
        )

    replay = world.partner.post_event(body, key=key)
    lookup = world.partner.http.get(
        f"/checkout/issuance/transactions/{transaction_id}",
        headers={"Authorization": f"Bearer {world.partner.token}"},
    )

    assert replay.json() == first.json()
    assert lookup.status_code == 200, lookup.text
    assert {k: v for k, v in lookup.json().items() if k != "transactionType"} == {
        **first.json(),
        "issuances": [dict(first.json()["issuances"][0], milesReversed=0)],
    }


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("text/plain", id="text-plain"),
        pytest.param("application/x-www-form-urlencoded", id="form"),
        pytest.param(None, id="no-content-type"),
    ],
)
def test_body_not_sent_as_json_is_415_and_stores_nothing(
    world: World, content_type: str | None
) -> None:
    collector = world.collector()
    body = world.body(collector)

    response = raw_post(
        world, httpx.Request("POST", "/", json=body).content, content_type=content_type
    )

    assert_problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert_nothing_stored(
        world.db, world.partner.client_id, collector, str(body["clientTransactionId"])
    )


def test_json_media_type_with_charset_parameter_is_accepted(world: World) -> None:
    collector = world.collector()
    body = world.body(collector, miles=3)
    content = httpx.Request("POST", "/", json=body).content

    response = raw_post(world, content, content_type="application/json; charset=utf-8")

    assert response.status_code == 200, response.text
    assert world.balance(collector) == 3


def _padded_to(body: dict[str, Any], size: int) -> bytes:
    """The body's JSON, padded with insignificant whitespace to exactly `size` bytes."""
    content = httpx.Request("POST", "/", json=body).content
    assert len(content) < size
    return content[:-1] + b" " * (size - len(content)) + b"}"


def test_body_of_exactly_one_mebibyte_is_accepted(world: World) -> None:
    collector = world.collector()
    content = _padded_to(world.body(collector, miles=2), limits.request_body_bytes_max)

    response = raw_post(world, content)

    assert response.status_code == 200, response.text
    assert world.balance(collector) == 2


def test_body_one_byte_over_one_mebibyte_is_413_and_stores_nothing(world: World) -> None:
    collector = world.collector()
    body = world.body(collector, miles=2)
    content = _padded_to(body, limits.request_body_bytes_max + 1)

    response = raw_post(world, content)

    assert_problem(response, 413, "PAYLOAD_TOO_LARGE")
    assert_nothing_stored(
        world.db, world.partner.client_id, collector, str(body["clientTransactionId"])
    )


def test_chunked_body_over_one_mebibyte_is_413_and_stores_nothing(world: World) -> None:
    collector = world.collector()
    body = world.body(collector, miles=2)
    content = _padded_to(body, limits.request_body_bytes_max + 64 * 1024)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count as it reads
        for start in range(0, len(content), 64 * 1024):
            yield content[start : start + 64 * 1024]

    response = raw_post(world, chunks())

    assert_problem(response, 413, "PAYLOAD_TOO_LARGE")
    assert_nothing_stored(
        world.db, world.partner.client_id, collector, str(body["clientTransactionId"])
    )


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("k" * (limits.idempotency_key_chars_max + 1), id="256-chars"),
        pytest.param("ab\tc", id="tab-control-char"),
        pytest.param(b"caf\xe9-key", id="non-ascii-latin1-byte"),
        pytest.param('""', id="empty-quoted-string"),
    ],
)
def test_invalid_idempotency_key_is_400_and_stores_nothing(world: World, key: str | bytes) -> None:
    collector = world.collector()
    body = world.body(collector)
    headers = {"Authorization": f"Bearer {world.partner.token}", "Idempotency-Key": key}

    try:
        response = world.partner.http.post(POST_EVENT, json=body, headers=headers)  # type: ignore[arg-type]
    except httpx.LocalProtocolError as exc:
        pytest.skip(f"httpx will not send this header value: {exc}")

    assert_problem(response, 400, "IDEMPOTENCY_KEY_INVALID", "Idempotency-Key")
    assert_nothing_stored(
        world.db, world.partner.client_id, collector, str(body["clientTransactionId"])
    )


def test_idempotency_key_of_255_printable_chars_is_accepted(world: World) -> None:
    collector = world.collector()
    body = world.body(collector, miles=4)
    key = ("!~" * 128)[: limits.idempotency_key_chars_max - 36] + str(uuid.uuid4())

    first = world.partner.post_event(body, key=key)
    replay = world.partner.post_event(body, key=key)

    assert first.status_code == 200, first.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert world.balance(collector) == 4


# --------------------------------------------------------------------------- B. sponsor


def test_sponsor_the_token_does_not_name_is_403_and_stores_nothing(world: World) -> None:
    collector = world.collector()
    body = world.body(collector, sponsorCode="NOSUCH99")

    response = world.partner.post_event(body)

    assert_problem(response, 403, "SPONSOR_NOT_ALLOWED", "sponsorCode")
    assert_nothing_stored(
        world.db, world.partner.client_id, collector, str(body["clientTransactionId"])
    )


def test_sponsor_removed_after_the_token_was_issued_is_400_sponsor_unknown(world: World) -> None:
    sponsor = data.new_sponsor(world.db)
    partner = world.new_partner(sponsor)
    with world.db.unit_of_work() as session:
        session.execute(
            delete(PartnerClientSponsor).where(PartnerClientSponsor.sponsor_code == sponsor)
        )
        session.execute(delete(Offer).where(Offer.sponsor_code == sponsor))
        session.execute(delete(Sponsor).where(Sponsor.code == sponsor))
    collector = world.collector()
    body = data.event_body(sponsor, collector)

    response = partner.post_event(body)
    partner.close()

    assert_problem(response, 400, "SPONSOR_UNKNOWN", "sponsorCode")
    assert_recorded_rejection(
        world, sponsor, POST_EVENT, body["clientTransactionId"], "SPONSOR_UNKNOWN"
    )
    assert world.balance(collector) == 0
    assert ledger_entry_count(world.db, collector) == 0


@pytest.mark.parametrize("path", [POST_EVENT, REVERSE_EVENT], ids=ENDPOINT_NAMES.get)
def test_inactive_sponsor_is_400_sponsor_inactive_and_recorded(world: World, path: str) -> None:
    sponsor = data.new_sponsor(world.db, active=False)
    partner = world.new_partner(sponsor)
    collector = world.collector()
    body = data.event_body(sponsor, collector)

    response = call(partner, path, body)
    partner.close()

    assert_problem(response, 400, "SPONSOR_INACTIVE", "sponsorCode")
    assert_recorded_rejection(world, sponsor, path, body["clientTransactionId"], "SPONSOR_INACTIVE")
    assert world.balance(collector) == 0
    assert ledger_entry_count(world.db, collector) == 0


# --------------------------------------------------------------------------- B. offers, locations


@pytest.mark.parametrize("path", [POST_EVENT, REVERSE_EVENT], ids=ENDPOINT_NAMES.get)
def test_unknown_offer_is_400_at_its_line_and_recorded(world: World, path: str) -> None:
    collector = world.collector()
    body = world.body(collector, issuances=[line(3), line(4, offer="NOSUCH")])

    response = call(world.partner, path, body)

    assert_problem(response, 400, "OFFER_UNKNOWN", "issuances[1].issuanceOfferCode")
    assert_recorded_rejection(
        world, world.sponsor, path, data.text_field(body, "clientTransactionId"), "OFFER_UNKNOWN"
    )
    assert world.balance(collector) == 0
    assert ledger_entry_count(world.db, collector) == 0


def _disabled(today: date) -> dict[str, Any]:
    return {"active": False}


def _ended_yesterday(today: date) -> dict[str, Any]:
    return {"valid_to": today - timedelta(days=1)}


def _starts_tomorrow(today: date) -> dict[str, Any]:
    return {"valid_from": today + timedelta(days=1)}


def _ends_today(today: date) -> dict[str, Any]:
    return {"valid_to": today}


def _started_today(today: date) -> dict[str, Any]:
    return {"valid_from": today}


@pytest.mark.parametrize(
    "offer_values",
    [
        pytest.param(_disabled, id="disabled"),
        pytest.param(_ended_yesterday, id="valid-to-yesterday"),
        pytest.param(_starts_tomorrow, id="valid-from-tomorrow"),
    ],
)
def test_inactive_offer_is_400_offer_inactive_and_recorded(
    world: World, offer_values: Callable[[date], dict[str, Any]]
) -> None:
    sponsor = data.new_sponsor(world.db)
    partner = world.new_partner(sponsor)
    collector = world.collector()
    # Dated on a Toronto evening, when the UTC date is already the next day.
    body = data.event_body(sponsor, collector, transactionDateTime=EVENING)
    with world.db.unit_of_work() as session:
        session.execute(
            update(Offer)
            .where(Offer.sponsor_code == sponsor, Offer.code == "STANDARD")
            .values(**offer_values(program_date(body)))
        )

    response = partner.post_event(body)
    partner.close()

    assert_problem(response, 400, "OFFER_INACTIVE", "issuances[0].issuanceOfferCode")
    assert_recorded_rejection(
        world, sponsor, POST_EVENT, body["clientTransactionId"], "OFFER_INACTIVE"
    )
    assert world.balance(collector) == 0
    assert ledger_entry_count(world.db, collector) == 0


@pytest.mark.parametrize(
    "offer_values",
    [
        pytest.param(_ends_today, id="valid-to-today"),
        pytest.param(_started_today, id="valid-from-today"),
    ],
)
def test_offer_validity_bounds_are_inclusive(
    world: World, offer_values: Callable[[date], dict[str, Any]]
) -> None:
    sponsor = data.new_sponsor(world.db)
    partner = world.new_partner(sponsor)
    collector = world.collector()
    body = data.event_body(sponsor, collector, miles=6, transactionDateTime=EVENING)
    with world.db.unit_of_work() as session:
        session.execute(
            update(Offer)
            .where(Offer.sponsor_code == sponsor, Offer.code == "STANDARD")
            .values(**offer_values(program_date(body)))
        )

    response = partner.post_event(body)
    partner.close()

    assert response.status_code == 200, response.text
    assert world.balance(collector) == 6


def test_unregistered_location_is_400_and_leading_zeros_matter(world: World) -> None:
    sponsor = data.new_sponsor(world.db, locations=["0037"])
    partner = world.new_partner(sponsor)
    collector = world.collector()
    rejected = data.event_body(
        sponsor, collector, issuances=[line(3, locationCode="0037"), line(4, locationCode="37")]
    )
    accepted = data.event_body(sponsor, collector, issuances=[line(3, locationCode="0037")])

    response = partner.post_event(rejected)
    ok = partner.post_event(accepted)
    partner.close()

    assert_problem(response, 400, "LOCATION_UNKNOWN", "issuances[1].locationCode")
    assert_recorded_rejection(
        world, sponsor, POST_EVENT, rejected["clientTransactionId"], "LOCATION_UNKNOWN"
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["issuances"][0]["locationCode"] == "0037"
    assert world.balance(collector) == 3


def test_any_location_is_accepted_when_the_sponsor_registers_none(world: World) -> None:
    collector = world.collector()
    body = world.body(
        collector, issuances=[line(2, locationCode="37"), line(3, locationCode="X-9")]
    )

    response = world.partner.post_event(body)

    assert response.status_code == 200, response.text
    assert [i["locationCode"] for i in response.json()["issuances"]] == ["37", "X-9"]
    assert world.balance(collector) == 5


# --------------------------------------------------------------------------- B. dates


@pytest.mark.parametrize(
    "offset",
    [
        pytest.param(timedelta(minutes=6), id="6-minutes-ahead"),
        pytest.param(-timedelta(days=31), id="31-days-ago"),
    ],
)
@pytest.mark.parametrize("path", [POST_EVENT, REVERSE_EVENT], ids=ENDPOINT_NAMES.get)
def test_date_outside_the_window_is_400_date_out_of_range_and_recorded(
    world: World, path: str, offset: timedelta
) -> None:
    collector = world.collector()
    moment = (data.now() + offset).astimezone(PROGRAM_ZONE)  # any offset, not just Z
    body = world.body(collector, transactionDateTime=moment.isoformat(timespec="milliseconds"))

    response = call(world.partner, path, body)

    assert_problem(response, 400, "DATE_OUT_OF_RANGE", "transactionDateTime")
    assert_recorded_rejection(
        world,
        world.sponsor,
        path,
        data.text_field(body, "clientTransactionId"),
        "DATE_OUT_OF_RANGE",
    )
    assert world.balance(collector) == 0
    assert ledger_entry_count(world.db, collector) == 0


@pytest.mark.parametrize(
    "offset",
    [
        pytest.param(timedelta(minutes=4), id="4-minutes-ahead"),
        pytest.param(-timedelta(days=29), id="29-days-ago"),
    ],
)
def test_date_inside_the_window_is_accepted(world: World, offset: timedelta) -> None:
    collector = world.collector()
    body = world.body(collector, miles=7, transactionDateTime=data.iso(data.now() + offset))

    response = world.partner.post_event(body)

    assert response.status_code == 200, response.text
    assert world.balance(collector) == 7


# --------------------------------------------------------------------------- B. duplicates


def test_same_id_with_another_body_is_400_duplicate_and_identical_resend_is_a_replay(
    world: World,
) -> None:
    collector = world.collector()
    body = world.body(collector, miles=10)
    changed = {**body, "issuances": [line(11)]}

    first = world.partner.post_event(body, key=None)
    resent = world.partner.post_event(body, key=None)
    duplicate = world.partner.post_event(changed, key=None)

    assert first.status_code == 200, first.text
    assert resent.status_code == 200
    assert resent.headers["Idempotent-Replayed"] == "true"
    assert resent.json() == first.json()
    assert_problem(duplicate, 400, "DUPLICATE_TRANSACTION", "clientTransactionId")
    assert_recorded_rejection(
        world,
        world.sponsor,
        POST_EVENT,
        data.text_field(body, "clientTransactionId"),
        "DUPLICATE_TRANSACTION",
    )
    assert world.balance(collector) == 10
    assert ledger_entry_count(world.db, collector) == 1


def test_id_is_unique_per_sponsor_and_endpoint_only(world: World) -> None:
    other = data.new_sponsor(world.db)
    partner = world.new_partner(world.sponsor, other)
    collector = world.collector()
    body = data.event_body(world.sponsor, collector, miles=10)

    issued = partner.post_event(body)
    reversed_ = partner.reverse_event({**body, "issuances": [line(4)]})
    other_sponsor = partner.post_event({**body, "sponsorCode": other, "issuances": [line(1)]})
    partner.close()

    assert issued.status_code == 200, issued.text
    assert reversed_.status_code == 200, reversed_.text
    assert "Idempotent-Replayed" not in reversed_.headers
    assert other_sponsor.status_code == 200, other_sponsor.text
    assert "Idempotent-Replayed" not in other_sponsor.headers
    assert world.balance(collector) == 10 - 4 + 1


# --------------------------------------------------------------------------- B. reversals


def _issue(
    world: World,
    collector: str,
    *lines: dict[str, Any],
    partner: Partner | None = None,
    sponsor: str | None = None,
) -> dict[str, Any]:
    body = data.event_body(sponsor or world.sponsor, collector, issuances=list(lines))
    response = (partner or world.partner).post_event(body)
    assert response.status_code == 200, response.text
    return body


def _reverse(
    world: World,
    collector: str,
    original: str,
    *lines: dict[str, Any],
    partner: Partner | None = None,
    sponsor: str | None = None,
) -> tuple[dict[str, Any], httpx.Response]:
    body = data.event_body(
        sponsor or world.sponsor,
        collector,
        issuances=list(lines),
        originalClientTransactionId=original,
    )
    return body, (partner or world.partner).reverse_event(body)


def test_reversal_of_an_unknown_original_is_400_original_not_found(world: World) -> None:
    collector = world.collector()

    body, response = _reverse(world, collector, data.txn_id("never-sent"), line(5))

    assert_problem(response, 400, "ORIGINAL_NOT_FOUND", "originalClientTransactionId")
    assert_recorded_rejection(
        world, world.sponsor, REVERSE_EVENT, body["clientTransactionId"], "ORIGINAL_NOT_FOUND"
    )
    assert world.balance(collector) == 0


def test_reversal_of_a_rejected_original_is_400_original_not_found(world: World) -> None:
    collector = world.collector()
    original = world.body(collector, issuances=[line(5, offer="NOSUCH")])
    assert world.partner.post_event(original).json()["code"] == "OFFER_UNKNOWN"

    body, response = _reverse(
        world, collector, data.text_field(original, "clientTransactionId"), line(5)
    )

    assert_problem(response, 400, "ORIGINAL_NOT_FOUND", "originalClientTransactionId")
    assert_recorded_rejection(
        world, world.sponsor, REVERSE_EVENT, body["clientTransactionId"], "ORIGINAL_NOT_FOUND"
    )
    assert world.balance(collector) == 0


def test_reversal_naming_a_reversal_is_400_original_not_found(world: World) -> None:
    collector = world.collector()
    original = _issue(world, collector, line(20))
    first, first_response = _reverse(world, collector, original["clientTransactionId"], line(5))
    assert first_response.status_code == 200, first_response.text

    body, response = _reverse(world, collector, first["clientTransactionId"], line(5))

    assert_problem(response, 400, "ORIGINAL_NOT_FOUND", "originalClientTransactionId")
    assert_recorded_rejection(
        world, world.sponsor, REVERSE_EVENT, body["clientTransactionId"], "ORIGINAL_NOT_FOUND"
    )
    assert world.balance(collector) == 15


def test_reversal_of_another_sponsors_original_is_400_original_not_found(world: World) -> None:
    other = data.new_sponsor(world.db)
    partner = world.new_partner(world.sponsor, other)
    collector = world.collector()
    original = _issue(world, collector, line(20), partner=partner, sponsor=other)

    body, response = _reverse(
        world, collector, original["clientTransactionId"], line(5), partner=partner
    )
    partner.close()

    assert_problem(response, 400, "ORIGINAL_NOT_FOUND", "originalClientTransactionId")
    assert_recorded_rejection(
        world, world.sponsor, REVERSE_EVENT, body["clientTransactionId"], "ORIGINAL_NOT_FOUND"
    )
    assert world.balance(collector) == 20


def test_reversal_for_another_collector_is_400_original_collector_mismatch(world: World) -> None:
    collector, someone_else = world.collector(), world.collector()
    original = _issue(world, collector, line(20))

    body, response = _reverse(world, someone_else, original["clientTransactionId"], line(5))

    assert_problem(response, 400, "ORIGINAL_COLLECTOR_MISMATCH", "originalClientTransactionId")
    assert_recorded_rejection(
        world,
        world.sponsor,
        REVERSE_EVENT,
        body["clientTransactionId"],
        "ORIGINAL_COLLECTOR_MISMATCH",
    )
    assert world.balance(collector) == 20
    assert world.balance(someone_else) == 0


def test_reversal_above_the_original_is_400_reversal_exceeds_original(world: World) -> None:
    collector = world.collector()
    original = _issue(world, collector, line(20))

    body, response = _reverse(world, collector, original["clientTransactionId"], line(21))

    assert_problem(response, 400, "REVERSAL_EXCEEDS_ORIGINAL", "issuances[0].milesAmount")
    assert_recorded_rejection(
        world,
        world.sponsor,
        REVERSE_EVENT,
        body["clientTransactionId"],
        "REVERSAL_EXCEEDS_ORIGINAL",
    )
    assert world.balance(collector) == 20


def test_two_lines_of_one_offer_are_summed_against_the_original(world: World) -> None:
    collector = world.collector()
    original = _issue(world, collector, line(20))

    body, response = _reverse(world, collector, original["clientTransactionId"], line(15), line(6))

    assert_problem(response, 400, "REVERSAL_EXCEEDS_ORIGINAL", "issuances[1].milesAmount")
    assert_recorded_rejection(
        world,
        world.sponsor,
        REVERSE_EVENT,
        body["clientTransactionId"],
        "REVERSAL_EXCEEDS_ORIGINAL",
    )
    assert world.balance(collector) == 20


def test_partial_reversals_add_up_to_the_original_and_never_beyond(world: World) -> None:
    collector = world.collector()
    original = str(_issue(world, collector, line(20))["clientTransactionId"])
    outcomes = []
    for miles in (8, 8, 5, 4, 1):
        body, response = _reverse(world, collector, original, line(miles))
        outcomes.append((miles, response.status_code, response.json().get("code")))
        if response.status_code == 400:
            assert_problem(response, 400, "REVERSAL_EXCEEDS_ORIGINAL", "issuances[0].milesAmount")
            assert_recorded_rejection(
                world,
                world.sponsor,
                REVERSE_EVENT,
                body["clientTransactionId"],
                "REVERSAL_EXCEEDS_ORIGINAL",
            )

    assert outcomes == [
        (8, 200, None),
        (8, 200, None),
        (5, 400, "REVERSAL_EXCEEDS_ORIGINAL"),
        (4, 200, None),
        (1, 400, "REVERSAL_EXCEEDS_ORIGINAL"),
    ]
    assert world.balance(collector) == 0


def test_reversal_is_bounded_per_offer_code(world: World) -> None:
    sponsor = data.new_sponsor(world.db)
    add_offer(world, sponsor, "BONUS")
    partner = world.new_partner(sponsor)
    collector = world.collector()
    original = _issue(world, collector, line(20), partner=partner, sponsor=sponsor)
    ctid = original["clientTransactionId"]

    other_offer, other_response = _reverse(
        world, collector, ctid, line(1, offer="BONUS"), partner=partner, sponsor=sponsor
    )
    mixed, mixed_response = _reverse(
        world, collector, ctid, line(5), line(1, offer="BONUS"), partner=partner, sponsor=sponsor
    )
    _, own_offer = _reverse(world, collector, ctid, line(20), partner=partner, sponsor=sponsor)
    partner.close()

    assert_problem(other_response, 400, "REVERSAL_EXCEEDS_ORIGINAL", "issuances[0].milesAmount")
    assert_recorded_rejection(
        world,
        sponsor,
        REVERSE_EVENT,
        other_offer["clientTransactionId"],
        "REVERSAL_EXCEEDS_ORIGINAL",
    )
    assert_problem(mixed_response, 400, "REVERSAL_EXCEEDS_ORIGINAL", "issuances[1].milesAmount")
    assert_recorded_rejection(
        world, sponsor, REVERSE_EVENT, mixed["clientTransactionId"], "REVERSAL_EXCEEDS_ORIGINAL"
    )
    assert own_offer.status_code == 200, own_offer.text
    assert world.balance(collector) == 0
