"""Wire models of the event endpoints (SPEC §2.1, §2.3, §2.5). Field names follow the seed.

Models validate shape only (types, lengths, formats, ranges): a failure here is a malformed request
and stores nothing. Rules that need the database or the clock live in `service.py`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic.alias_generators import to_camel

from rewardmiles import limits

PRINTABLE_NO_SPACE = r"^[!-~]+$"
ISO_DATETIME_CHARS_MAX = 40


def _aware_iso8601(value: object) -> datetime:
    if not isinstance(value, str) or len(value) > ISO_DATETIME_CHARS_MAX:
        raise ValueError("must be an ISO-8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError("must be an ISO-8601 date-time") from exc
    if parsed.tzinfo is None:
        raise ValueError("must carry a UTC offset or Z")
    return parsed


PartnerTransactionId = Annotated[
    str,
    StringConstraints(
        strict=True,
        min_length=1,
        max_length=limits.partner_transaction_id_chars_max,
        pattern=PRINTABLE_NO_SPACE,
    ),
]
CollectorNumber = Annotated[str, StringConstraints(strict=True, pattern=r"^[0-9]{11}$")]
SponsorCode = Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Z0-9]{2,10}$")]
OfferCode = Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Z0-9]{1,8}$")]
LocationCode = Annotated[
    str,
    StringConstraints(
        strict=True,
        min_length=1,
        max_length=limits.location_code_chars_max,
        pattern=PRINTABLE_NO_SPACE,
    ),
]
IsoDateTime = Annotated[
    datetime,
    PlainValidator(_aware_iso8601),
    WithJsonSchema({"type": "string", "format": "date-time", "maxLength": ISO_DATETIME_CHARS_MAX}),
]
Coupon = Annotated[str, StringConstraints(strict=True, max_length=limits.coupon_chars_max)]
ContextKey = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=limits.context_key_chars_max)
]
ContextValue = Annotated[
    str, StringConstraints(strict=True, max_length=limits.context_value_chars_max)
]

# Human wording of each field's rule, used in error messages instead of the validator's own.
FIELD_RULES: dict[str, str] = {
    "clientTransactionId": "must be 1–64 printable ASCII characters without spaces",
    "originalClientTransactionId": "must be 1–64 printable ASCII characters without spaces",
    "collectorNumber": "must be a string of exactly 11 digits",
    "sponsorCode": "must be 2–10 uppercase letters or digits",
    "transactionDateTime": "must be an ISO-8601 date-time with a UTC offset or Z",
    "issuances": f"must be an array of 1–{limits.issuance_lines_per_request_max} issuance lines",
    "issuanceOfferCode": "must be 1–8 uppercase letters or digits",
    "locationCode": "must be 1–10 printable ASCII characters without spaces",
    "milesAmount": "must be a JSON integer from 1 to the per-line maximum",
    "offerDescription": f"must be a string of at most {limits.offer_description_chars_max} characters",
    "offerId": f"must be a string or integer of at most {limits.offer_id_chars_max} characters",
    "coupon": f"must be an array of at most {limits.coupons_per_request_max} strings of at most "
    f"{limits.coupon_chars_max} characters",
    "context": f"must be an object of at most {limits.context_keys_max} string keys (≤ "
    f"{limits.context_key_chars_max} chars) to string values (≤ {limits.context_value_chars_max})",
    "deviceId": f"must be a string of at most {limits.device_id_chars_max} characters",
}

FIELD_CODES: dict[str, str] = {
    "collectorNumber": "COLLECTOR_NUMBER_INVALID",
    "milesAmount": "MILES_AMOUNT_INVALID",
}


class WireModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class IssuanceLineIn(WireModel):
    issuance_offer_code: OfferCode
    location_code: LocationCode | None = None
    miles_amount: StrictInt = Field(ge=1, description="1 … per-line maximum (default 100,000)")
    offer_description: (
        Annotated[
            str, StringConstraints(strict=True, max_length=limits.offer_description_chars_max)
        ]
        | None
    ) = None
    offer_id: StrictStr | StrictInt | None = Field(
        default=None, description="Echoed back as a string."
    )

    @field_validator("miles_amount")
    @classmethod
    def _miles_within_line_max(cls, value: int, info: ValidationInfo) -> int:
        ceiling = (info.context or {}).get("miles_per_line_max")
        if ceiling is not None and value > ceiling:
            raise ValueError(f"must be at most {ceiling}")
        return value

    @field_validator("offer_id")
    @classmethod
    def _offer_id_as_string(cls, value: str | int | None) -> str | None:
        if value is None:
            return None
        text = str(value)
        if not text or len(text) > limits.offer_id_chars_max:
            raise ValueError("out of range")
        return text


class EventRequestBase(WireModel):
    client_transaction_id: PartnerTransactionId
    collector_number: CollectorNumber
    sponsor_code: SponsorCode
    transaction_date_time: IsoDateTime
    issuances: list[IssuanceLineIn] = Field(
        min_length=1, max_length=limits.issuance_lines_per_request_max
    )
    coupon: list[Coupon] | None = Field(default=None, max_length=limits.coupons_per_request_max)
    context: dict[ContextKey, ContextValue] | None = Field(
        default=None, max_length=limits.context_keys_max
    )
    device_id: (
        Annotated[str, StringConstraints(strict=True, max_length=limits.device_id_chars_max)] | None
    ) = None


class PostEventRequest(EventRequestBase):
    """POST /checkout/issuance/post/event."""


class ReverseEventRequest(EventRequestBase):
    """REVERSE/EVENT: `originalClientTransactionId` names a POST/EVENT's `clientTransactionId` or a
    POST's `checkoutTransactionId`; without it the reversal is a standalone correction."""

    original_client_transaction_id: PartnerTransactionId | None = None


LineStatus = Literal["ISSUED", "REVERSED", "PENDING", "REJECTED"]


class IssuanceLineOut(WireModel):
    issuance_offer_code: str
    location_code: str | None = None
    miles_amount: int
    offer_description: str | None = None
    offer_id: str | None = None
    status: LineStatus
    error_code: str | None = Field(default=None, description="Only on REJECTED lines.")


class EventResponse(WireModel):
    """200: every line posted. 202: at least one line PENDING."""

    client_transaction_id: str
    collector_number: str
    coupon: list[str] | None = None
    device_id: str | None = None
    issuances: list[IssuanceLineOut]
    original_client_transaction_id: str | None = None
    sponsor_code: str
    transaction_date_time: str = Field(
        description="When the program processed the request, program time zone, milliseconds."
    )
    transaction_id: str


def echo(request: EventRequestBase) -> dict[str, Any]:
    """The request as echoed in the response: `context` dropped, empty optionals omitted."""
    out: dict[str, Any] = {
        "clientTransactionId": request.client_transaction_id,
        "collectorNumber": request.collector_number,
    }
    if request.coupon:
        out["coupon"] = list(request.coupon)
    if request.device_id:
        out["deviceId"] = request.device_id
    lines = []
    for line in request.issuances:
        item: dict[str, Any] = {"issuanceOfferCode": line.issuance_offer_code}
        if line.location_code:
            item["locationCode"] = line.location_code
        item["milesAmount"] = line.miles_amount
        if line.offer_description:
            item["offerDescription"] = line.offer_description
        if line.offer_id:
            item["offerId"] = line.offer_id
        lines.append(item)
    out["issuances"] = lines
    original = getattr(request, "original_client_transaction_id", None)
    if original:
        out["originalClientTransactionId"] = original
    out["sponsorCode"] = request.sponsor_code
    return out
