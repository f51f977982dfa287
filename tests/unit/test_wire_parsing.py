"""Pure rules of how a partner's body is read (SPEC §2.5, §6 as amended 2026-11-30): RFC 3339
date-times, duplicated member names, unknown fields whatever their value, and which optional
fields a response leaves out."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from rewardmiles.clock import RFC3339_PATTERN, parse_partner_datetime
from rewardmiles.errors import ProblemError
from rewardmiles.http.partner_json import loads_partner_json, parse_json_object
from rewardmiles.http.validation import validate_body
from rewardmiles.issuance.schemas import (
    FIELD_CODES,
    FIELD_RULES,
    PostBasketRequest,
    PostEventRequest,
    basket_command,
    event_command,
)

MILES_MAX = 100_000


def _event(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "clientTransactionId": "t-1",
        "collectorNumber": "80085102028",
        "sponsorCode": "KENY",
        "transactionDateTime": "2026-11-30T04:10:41Z",
        "issuances": [{"issuanceOfferCode": "STANDARD", "milesAmount": 8}],
    }
    body.update(overrides)
    return body


def _problem(model: Any, body: dict[str, Any]) -> ProblemError:
    with pytest.raises(ProblemError) as caught:
        validate_body(
            model,
            body,
            context={"miles_per_line_max": MILES_MAX},
            rules=FIELD_RULES,
            codes=FIELD_CODES,
        )
    return caught.value


# --------------------------------------------------------------------------- date-times

ACCEPTED = [
    ("2026-11-30T04:10:41Z", datetime(2026, 11, 30, 4, 10, 41, tzinfo=UTC)),
    ("2026-11-30T04:10:41.7Z", datetime(2026, 11, 30, 4, 10, 41, 700000, tzinfo=UTC)),
    ("2026-11-30T04:10:41.123Z", datetime(2026, 11, 30, 4, 10, 41, 123000, tzinfo=UTC)),
    # Nine digits: kept to the microsecond (truncated, never rounded up into the next second).
    ("2026-11-30T04:10:41.999999999Z", datetime(2026, 11, 30, 4, 10, 41, 999999, tzinfo=UTC)),
    ("2026-11-30T04:10:41+00:00", datetime(2026, 11, 30, 4, 10, 41, tzinfo=UTC)),
    ("2026-11-30T04:10:41-00:00", datetime(2026, 11, 30, 4, 10, 41, tzinfo=UTC)),
    (
        "2026-11-30T04:10:41-05:00",
        datetime(2026, 11, 30, 4, 10, 41, tzinfo=timezone(timedelta(hours=-5))),
    ),
    (
        "2026-11-30T04:10:41.5+05:45",
        datetime(2026, 11, 30, 4, 10, 41, 500000, tzinfo=timezone(timedelta(hours=5, minutes=45))),
    ),
    (
        "2026-11-30T04:10:41+14:00",
        datetime(2026, 11, 30, 4, 10, 41, tzinfo=timezone(timedelta(hours=14))),
    ),
    (
        "2026-11-30T04:10:41-12:00",
        datetime(2026, 11, 30, 4, 10, 41, tzinfo=timezone(timedelta(hours=-12))),
    ),
    ("2028-02-29T23:59:59Z", datetime(2028, 2, 29, 23, 59, 59, tzinfo=UTC)),
]

REFUSED = [
    pytest.param("2026-11-30 04:10:41Z", id="space-separator"),
    pytest.param("2026-11-30t04:10:41Z", id="lowercase-t"),
    pytest.param("2026-11-30T04:10:41z", id="lowercase-z"),
    pytest.param("2026-11-30T04:10:41+01", id="hour-only-offset"),
    pytest.param("2026-11-30T04:10:41+0100", id="offset-without-colon"),
    pytest.param("2026-11-30T04:10:41+01:00:30", id="offset-with-seconds"),
    pytest.param("2026-11-30T04:10:41+15:00", id="offset-above-plus-14"),
    pytest.param("2026-11-30T04:10:41+14:01", id="offset-just-above-plus-14"),
    pytest.param("2026-11-30T04:10:41-12:01", id="offset-just-below-minus-12"),
    pytest.param("2026-11-30T04:10:41+01:60", id="offset-minutes-60"),
    pytest.param("20261130T041041Z", id="basic-format"),
    pytest.param("2026-W48-1T04:10:41Z", id="week-date"),
    pytest.param("2026-334T04:10:41Z", id="ordinal-date"),
    pytest.param("2026-11-30T04:10Z", id="no-seconds"),
    pytest.param("2026-11-30T04Z", id="hour-only"),
    pytest.param("2026-11-30T04:10:41", id="no-offset"),
    pytest.param("2026-11-30", id="date-only"),
    pytest.param("2026-11-30T04:10:41.Z", id="empty-fraction"),
    pytest.param("2026-11-30T04:10:41.1234567890Z", id="ten-digit-fraction"),
    pytest.param("2026-11-30T04:10:41,5Z", id="comma-fraction"),
    pytest.param("2026-11-30T24:00:00Z", id="hour-24"),
    pytest.param("2026-11-30T04:10:60Z", id="leap-second"),
    pytest.param("2026-02-30T04:10:41Z", id="february-30"),
    pytest.param("2026-13-01T04:10:41Z", id="month-13"),
    pytest.param("0000-01-01T00:00:00Z", id="year-0"),
    pytest.param("0001-01-01T00:00:00+01:00", id="before-year-1-in-utc"),
    pytest.param("9999-12-31T23:59:59-01:00", id="after-year-9999-in-utc"),
    pytest.param("2026-11-30T04:10:41Z\n", id="trailing-newline"),
    pytest.param(" 2026-11-30T04:10:41Z", id="leading-space"),
    pytest.param("２０２６-11-30T04:10:41Z", id="non-ascii-digits"),
    pytest.param("+2026-11-30T04:10:41Z", id="signed-year"),
    pytest.param("", id="empty"),
    pytest.param(1796011841, id="number"),
    pytest.param(None, id="null"),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED, ids=[t for t, _ in ACCEPTED])
def test_rfc3339_date_times_are_accepted(text: str, expected: datetime) -> None:
    parsed = parse_partner_datetime(text)
    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset()
    assert re.fullmatch(RFC3339_PATTERN, text)


@pytest.mark.parametrize("value", REFUSED)
def test_anything_else_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match=r"must|out of range"):
        parse_partner_datetime(value)


@pytest.mark.parametrize("value", REFUSED)
def test_refused_date_time_is_field_invalid_at_the_field(value: object) -> None:
    problem = _problem(PostEventRequest, _event(transactionDateTime=value))
    field = "transactionDateTime"
    code = "FIELD_REQUIRED" if value is None else "FIELD_INVALID"
    assert [(e.code, e.field) for e in problem.errors] == [(code, field)]


def test_openapi_pattern_refuses_what_the_parser_refuses_by_shape() -> None:
    """The published pattern is the parser's own: every string refused for its shape (not for a
    calendar or range reason `datetime` decides) fails the pattern too."""
    calendar_only = {"2026-02-30T04:10:41Z", "0000-01-01T00:00:00Z"}
    range_only = {"0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"}
    for param in REFUSED:
        (value,) = param.values
        if not isinstance(value, str) or value in calendar_only | range_only:
            continue
        # ECMA `$` matches only at the very end; Python's before a final newline too.
        assert not re.fullmatch(RFC3339_PATTERN, value) or value.endswith("\n"), value


# --------------------------------------------------------------------------- duplicate members


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param(b'{"a": 1, "b": 2, "a": 1}', "a", id="top-level"),
        pytest.param(b'{"a": {"x": 1, "x": 2}}', "a.x", id="nested-object"),
        pytest.param(
            b'{"issuances": [{"m": 1}, {"m": 1, "n": 2, "m": 3}]}', "issuances[1].m", id="in-array"
        ),
        pytest.param(b'{"context": {"k": "v", "k": "w"}, "z": 0}', "context.k", id="context"),
        pytest.param(b'{"a": 1, "a": null}', "a", id="second-is-null"),
    ],
)
def test_duplicated_member_is_malformed_json_naming_it(raw: bytes, field: str) -> None:
    with pytest.raises(ProblemError) as caught:
        parse_json_object(raw)
    problem = caught.value
    assert problem.code == "MALFORMED_JSON"
    assert [(e.code, e.field) for e in problem.errors] == [("MALFORMED_JSON", field)]
    name = field.rsplit(".", 1)[-1].split("[")[0]
    assert f'"{name}"' in problem.detail


def test_same_name_in_different_objects_is_fine() -> None:
    obj = parse_json_object(b'{"a": {"id": 1}, "b": [{"id": 2}, {"id": 3}], "id": 4}')
    assert obj == {"a": {"id": 1}, "b": [{"id": 2}, {"id": 3}], "id": 4}


def test_strict_parsing_is_kept() -> None:
    obj = parse_json_object(b'{"amount": 24.970, "big": 123456789012345678901234567890}')
    assert obj["amount"] == Decimal("24.970")
    assert isinstance(obj["amount"], Decimal)
    assert obj["big"] == 123456789012345678901234567890
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        with pytest.raises(ProblemError) as caught:
            parse_json_object(b'{"a": ' + constant + b"}")
        assert caught.value.code == "MALFORMED_JSON"


def test_loads_partner_json_refuses_duplicates_in_any_json_value() -> None:
    assert loads_partner_json('[{"a": 1}, {"a": 2}]') == [{"a": 1}, {"a": 2}]
    with pytest.raises(ValueError, match='"a"'):
        loads_partner_json('[{"a": 1, "a": 2}]')


# --------------------------------------------------------------------------- unknown fields


@pytest.mark.parametrize("value", [None, 1, "x", [], {}])
def test_unknown_field_is_field_unknown_whatever_its_value(value: object) -> None:
    problem = _problem(PostEventRequest, _event(surprise=value))
    assert [(e.code, e.field) for e in problem.errors] == [("FIELD_UNKNOWN", "surprise")]


def test_unknown_null_field_of_a_line_or_an_item_is_field_unknown() -> None:
    lines = [{"issuanceOfferCode": "STANDARD", "milesAmount": 8, "bonus": None}]
    problem = _problem(PostEventRequest, _event(issuances=lines))
    assert [(e.code, e.field) for e in problem.errors] == [("FIELD_UNKNOWN", "issuances[0].bonus")]
    basket = {
        "checkoutTransactionId": "c-1",
        "collectorNumber": "80085102028",
        "checkoutDateTime": "2026-11-30T04:10:41Z",
        "basketPreTaxAmount": Decimal("1.00"),
        "basketPostTaxAmount": Decimal("1.00"),
        "items": [{"id": "A", "quantity": 1, "finalAmount": Decimal("1.00"), "colour": None}],
        "issuances": [{"issuanceOfferCode": "STANDARD", "milesAmount": 8}],
    }
    problem = _problem(PostBasketRequest, basket)
    assert [(e.code, e.field) for e in problem.errors] == [("FIELD_UNKNOWN", "items[0].colour")]


def test_known_null_field_is_still_as_if_absent_and_a_required_one_required() -> None:
    problem = _problem(PostEventRequest, _event(collectorNumber=None, deviceId=None))
    assert [(e.code, e.field) for e in problem.errors] == [("FIELD_REQUIRED", "collectorNumber")]


# --------------------------------------------------------------------------- echo


def test_empty_optional_fields_are_left_out_of_the_echo() -> None:
    event = PostEventRequest.model_validate(
        _event(
            deviceId="",
            coupon=[],
            context={},
            issuances=[{"issuanceOfferCode": "STANDARD", "milesAmount": 8, "offerDescription": ""}],
        ),
        context={"miles_per_line_max": MILES_MAX},
    )
    assert event_command(event).echo == {
        "clientTransactionId": "t-1",
        "collectorNumber": "80085102028",
        "issuances": [{"issuanceOfferCode": "STANDARD", "milesAmount": 8}],
        "sponsorCode": "KENY",
    }
    basket = PostBasketRequest.model_validate(
        {
            "checkoutTransactionId": "c-1",
            "collectorNumber": "80085102028",
            "checkoutDateTime": "2026-11-30T04:10:41Z",
            "basketPreTaxAmount": Decimal("0.00"),
            "basketPostTaxAmount": Decimal("0.00"),
            "deviceId": "",
            "items": [
                {
                    "id": "A",
                    "quantity": 1,
                    "finalAmount": Decimal("0.00"),
                    "name": "",
                    "departmentId": "",
                    "categoryId": "",
                }
            ],
            "issuances": [
                {
                    "issuanceOfferCode": "STANDARD",
                    "milesAmount": 8,
                    "offerDescription": "",
                    "contributingItemIds": [],
                }
            ],
        },
        context={"miles_per_line_max": MILES_MAX},
    )
    echoed = basket_command(basket, "KENY").echo
    assert "deviceId" not in echoed
    assert echoed["items"] == [{"finalAmount": 0.0, "id": "A", "quantity": 1}]
    assert echoed["issuances"] == [{"issuanceOfferCode": "STANDARD", "milesAmount": 8}]
    # Zero is a value, not an empty field.
    assert echoed["basketPreTaxAmount"] == 0.0
