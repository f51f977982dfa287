"""Request models (frozen dataclasses with `to_wire()`) and the response model."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

__all__ = [
    "BasketRequest",
    "EventRequest",
    "IssuanceResult",
    "Item",
    "Line",
    "LineResult",
    "ProgramBasketRequest",
    "dumps",
]

_TAX_FIELDS = {"gst": "basketGSTAmount", "hst": "basketHSTAmount", "pst": "basketPSTAmount",
               "qst": "basketQSTAmount"}  # fmt: skip


def dumps(value: Any) -> bytes:
    """JSON text with Decimal written as a JSON number of its exact digits (never a string)."""
    return _encode(value).encode()


def _encode(value: Any) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot send {value} as a JSON number")
        return format(value, "f")
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    if isinstance(value, float):
        raise TypeError("send amounts as decimal.Decimal, not float")
    return json.dumps(value)


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("date-times must be timezone-aware (e.g. datetime.now(UTC))")
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _now() -> datetime:
    return datetime.now(UTC)


def _money(value: Decimal | int | str) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _put(wire: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        wire[key] = value


@dataclass(frozen=True, slots=True)
class Line:
    """One issuance line: `miles` of offer `offer_code`."""

    offer_code: str
    miles: int
    location_code: str | None = None
    offer_id: str | int | None = None
    offer_description: str | None = None
    contributing_item_ids: Sequence[str] | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"issuanceOfferCode": self.offer_code, "milesAmount": self.miles}
        _put(wire, "locationCode", self.location_code)
        _put(wire, "offerId", self.offer_id)
        _put(wire, "offerDescription", self.offer_description)
        if self.contributing_item_ids is not None:
            wire["contributingItemIds"] = list(self.contributing_item_ids)
        return wire


@dataclass(frozen=True, slots=True)
class Item:
    """A basket item; `final_amount` is the line total after discounts, in dollars."""

    id: str
    quantity: int
    final_amount: Decimal
    name: str | None = None
    number: int | None = None
    base_amount: Decimal | None = None
    department_id: str | None = None
    category_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "id": self.id,
            "quantity": self.quantity,
            "finalAmount": _money(self.final_amount),
        }
        _put(wire, "name", self.name)
        _put(wire, "number", self.number)
        _put(wire, "baseAmount", None if self.base_amount is None else _money(self.base_amount))
        _put(wire, "departmentId", self.department_id)
        _put(wire, "categoryId", self.category_id)
        return wire


def _extras(
    wire: dict[str, Any],
    coupon: Sequence[str] | None,
    context: Mapping[str, str] | None,
    device_id: str | None,
) -> None:
    if coupon is not None:
        wire["coupon"] = list(coupon)
    if context is not None:
        wire["context"] = dict(context)
    _put(wire, "deviceId", device_id)


def _basket_core(
    wire: dict[str, Any],
    pre_tax: Decimal,
    post_tax: Decimal,
    taxes: Mapping[str, Decimal] | None,
) -> None:
    wire["basketPreTaxAmount"] = _money(pre_tax)
    for name, amount in (taxes or {}).items():
        key = _TAX_FIELDS.get(name.lower())
        if key is None:
            raise ValueError(f"unknown tax {name!r}: use gst, hst, pst or qst")
        wire[key] = _money(amount)
    wire["basketPostTaxAmount"] = _money(post_tax)


@dataclass(frozen=True, slots=True)
class EventRequest:
    """POST/EVENT and REVERSE/EVENT. `transaction_date_time` defaults to now (UTC), fixed at
    construction so every retry sends the same body."""

    client_transaction_id: str
    collector_number: str
    sponsor_code: str
    lines: Sequence[Line]
    transaction_date_time: datetime | None = None
    original_client_transaction_id: str | None = None
    coupon: Sequence[str] | None = None
    context: Mapping[str, str] | None = None
    device_id: str | None = None

    def __post_init__(self) -> None:
        if self.transaction_date_time is None:
            object.__setattr__(self, "transaction_date_time", _now())

    def to_wire(self) -> dict[str, Any]:
        assert self.transaction_date_time is not None
        wire: dict[str, Any] = {
            "clientTransactionId": self.client_transaction_id,
            "collectorNumber": self.collector_number,
            "sponsorCode": self.sponsor_code,
            "transactionDateTime": _iso(self.transaction_date_time),
            "issuances": [line.to_wire() for line in self.lines],
        }
        _put(wire, "originalClientTransactionId", self.original_client_transaction_id)
        _extras(wire, self.coupon, self.context, self.device_id)
        return wire


@dataclass(frozen=True, slots=True)
class BasketRequest:
    """POST, REVERSE and RECORD (partner-calculated): amounts in dollars as Decimal.

    `taxes` maps gst/hst/pst/qst to amounts; `collector_number` and `lines` may be empty on
    RECORD only. `checkout_date_time` defaults to now (UTC), fixed at construction."""

    checkout_transaction_id: str
    collector_number: str | None
    pre_tax: Decimal
    post_tax: Decimal
    lines: Sequence[Line] | None
    checkout_date_time: datetime | None = None
    sponsor_code: str | None = None
    items: Sequence[Item] | None = None
    original_checkout_transaction_id: str | None = None
    taxes: Mapping[str, Decimal] | None = None
    coupon: Sequence[str] | None = None
    context: Mapping[str, str] | None = None
    device_id: str | None = None

    def __post_init__(self) -> None:
        if self.checkout_date_time is None:
            object.__setattr__(self, "checkout_date_time", _now())

    def to_wire(self) -> dict[str, Any]:
        assert self.checkout_date_time is not None
        wire: dict[str, Any] = {
            "checkoutTransactionId": self.checkout_transaction_id,
            "checkoutDateTime": _iso(self.checkout_date_time),
        }
        _put(wire, "collectorNumber", self.collector_number)
        _put(wire, "sponsorCode", self.sponsor_code)
        _basket_core(wire, self.pre_tax, self.post_tax, self.taxes)
        if self.items is not None:
            wire["items"] = [item.to_wire() for item in self.items]
        if self.lines is not None:
            wire["issuances"] = [line.to_wire() for line in self.lines]
        _put(wire, "originalCheckoutTransactionId", self.original_checkout_transaction_id)
        _extras(wire, self.coupon, self.context, self.device_id)
        return wire


@dataclass(frozen=True, slots=True)
class ProgramBasketRequest:
    """CALCULATE, ISSUE and RETURN (program-calculated): the items decide the miles.

    On RETURN, `items` are the returned items and `original_checkout_transaction_id` names the
    ISSUE."""

    checkout_transaction_id: str
    collector_number: str
    pre_tax: Decimal
    post_tax: Decimal
    items: Sequence[Item]
    checkout_date_time: datetime | None = None
    sponsor_code: str | None = None
    location_code: str | None = None
    original_checkout_transaction_id: str | None = None
    taxes: Mapping[str, Decimal] | None = None
    coupon: Sequence[str] | None = None
    context: Mapping[str, str] | None = None
    device_id: str | None = None

    def __post_init__(self) -> None:
        if self.checkout_date_time is None:
            object.__setattr__(self, "checkout_date_time", _now())

    def to_wire(self) -> dict[str, Any]:
        assert self.checkout_date_time is not None
        wire: dict[str, Any] = {
            "checkoutTransactionId": self.checkout_transaction_id,
            "collectorNumber": self.collector_number,
            "checkoutDateTime": _iso(self.checkout_date_time),
        }
        _put(wire, "sponsorCode", self.sponsor_code)
        _basket_core(wire, self.pre_tax, self.post_tax, self.taxes)
        wire["items"] = [item.to_wire() for item in self.items]
        _put(wire, "locationCode", self.location_code)
        _put(wire, "originalCheckoutTransactionId", self.original_checkout_transaction_id)
        _extras(wire, self.coupon, self.context, self.device_id)
        return wire


@dataclass(frozen=True, slots=True)
class LineResult:
    offer_code: str
    miles: int
    status: str | None


@dataclass(frozen=True, slots=True)
class IssuanceResult:
    """A 200/202 answer of a write endpoint. `pending` when at least one line is PENDING (202)."""

    status_code: int
    body: dict[str, Any]
    transaction_id: str | None
    lines: list[LineResult] = field(default_factory=list)
    total_miles: int | None = None
    replayed: bool = False

    @property
    def pending(self) -> bool:
        return self.status_code == 202

    @classmethod
    def from_response(cls, response: httpx.Response) -> IssuanceResult:
        body = response.json()
        if not isinstance(body, dict):
            body = {"value": body}
        lines = [
            LineResult(
                offer_code=str(line.get("issuanceOfferCode", "")),
                miles=int(line.get("milesAmount", 0)),
                status=line.get("status"),
            )
            for line in body.get("issuances") or []
            if isinstance(line, dict)
        ]
        total = body.get("totalMiles")
        return cls(
            status_code=response.status_code,
            body=body,
            transaction_id=body.get("transactionId"),
            lines=lines,
            total_miles=int(total) if total is not None else None,
            replayed=response.headers.get("idempotent-replayed", "").lower() == "true",
        )
