"""Wire models of the event endpoints (SPEC §2.1, §2.3, §2.5). Field names follow the seed.

Models validate shape only (types, lengths, formats, ranges): a failure here is a malformed request
and stores nothing. Rules that need the database or the clock live in `service.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
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
    model_validator,
)
from pydantic.alias_generators import to_camel

from rewardmiles import clock, limits
from rewardmiles.errors import FieldRuleError
from rewardmiles.offers import engine
from rewardmiles.vocabulary import IssuanceStatus

PRINTABLE_NO_SPACE = r"^[!-~]+$"
# The partner date-time format, stated once: in the schema's description and in the rule an
# error message quotes.
DATETIME_FORMAT = (
    "RFC 3339 date-time: YYYY-MM-DDThh:mm:ss, an optional fraction of 1–9 digits, "
    "then Z or ±hh:mm from -12:00 to +14:00 (e.g. 2021-11-11T12:54:31.780-05:00), within "
    "years 1–9999 in UTC"
)
DATETIME_RULE = f"must be an {DATETIME_FORMAT}"


PartnerTransactionId = Annotated[
    str,
    StringConstraints(
        strict=True,
        min_length=1,
        max_length=limits.partner_transaction_id_chars_max,
        pattern=PRINTABLE_NO_SPACE,
    ),
]
CollectorNumber = Annotated[
    str, StringConstraints(strict=True, pattern=limits.collector_number_pattern)
]
SponsorCode = Annotated[str, StringConstraints(strict=True, pattern=limits.sponsor_code_pattern)]
OfferCode = Annotated[str, StringConstraints(strict=True, pattern=limits.offer_code_pattern)]
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
    PlainValidator(clock.parse_partner_datetime),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": clock.RFC3339_PATTERN,
            "maxLength": limits.rfc3339_chars_max,
            "description": f"An {DATETIME_FORMAT}.",
        }
    ),
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
    "transactionDateTime": DATETIME_RULE,
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


class PartnerExtras(WireModel):
    """Optional fields every partner request may carry (SPEC §2.1); `context` is stored only."""

    coupon: list[Coupon] | None = Field(default=None, max_length=limits.coupons_per_request_max)
    context: dict[ContextKey, ContextValue] | None = Field(
        default=None, max_length=limits.context_keys_max
    )
    device_id: (
        Annotated[str, StringConstraints(strict=True, max_length=limits.device_id_chars_max)] | None
    ) = None


class EventRequestBase(PartnerExtras):
    client_transaction_id: PartnerTransactionId
    collector_number: CollectorNumber
    sponsor_code: SponsorCode
    transaction_date_time: IsoDateTime
    issuances: list[IssuanceLineIn] = Field(
        min_length=1, max_length=limits.issuance_lines_per_request_max
    )


class PostEventRequest(EventRequestBase):
    """POST /checkout/issuance/post/event."""


class ReverseEventRequest(EventRequestBase):
    """REVERSE/EVENT: `originalClientTransactionId` names a POST/EVENT's `clientTransactionId` or a
    POST's `checkoutTransactionId`; without it the reversal is a standalone correction."""

    original_client_transaction_id: PartnerTransactionId | None = None


# A line's status on the wire: the schema's enum is IssuanceStatus's values.
WireLineStatus = Literal[
    IssuanceStatus.ISSUED, IssuanceStatus.REVERSED, IssuanceStatus.PENDING, IssuanceStatus.REJECTED
]


class IssuanceLineOut(WireModel):
    issuance_offer_code: str
    location_code: str | None = None
    miles_amount: int
    offer_description: str | None = None
    offer_id: str | None = None
    status: WireLineStatus
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


# --------------------------------------------------------------------------- baskets


CENT = Decimal("0.01")


def _amount(value: object) -> Decimal:
    """Dollars: a JSON number (never a string), ≥ 0, at most 2 decimals, at most 1,000,000."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError("must be a JSON number")
    amount = Decimal(value)
    if not amount.is_finite() or amount < 0 or amount > limits.basket_amount_max:
        raise ValueError(f"must be from 0 to {limits.basket_amount_max}")
    cents = amount.quantize(CENT)
    if cents != amount:  # the value, not the digits written: 24.970 is 24.97
        raise ValueError("must have at most 2 decimals")
    return cents + 0  # + 0 turns -0.00 into 0.00


Amount = Annotated[
    Decimal,
    PlainValidator(_amount),
    WithJsonSchema(
        {"type": "number", "minimum": 0, "maximum": limits.basket_amount_max, "multipleOf": 0.01}
    ),
]
ItemId = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=limits.item_id_chars_max)
]
ShortText = Annotated[str, StringConstraints(strict=True, max_length=limits.item_text_chars_max)]

FIELD_RULES.update(
    {
        "checkoutTransactionId": "must be 1–64 printable ASCII characters without spaces",
        "originalCheckoutTransactionId": "must be 1–64 printable ASCII characters without spaces",
        "checkoutDateTime": DATETIME_RULE,
        "contributingItemIds": f"must be an array of item ids (at most {limits.item_id_chars_max} "
        "characters each)",
        "items": f"must be an array of 1–{limits.items_per_basket_max} items",
        "quantity": f"must be a JSON integer from 1 to {limits.item_quantity_max}",
        "number": f"must be a JSON integer from 1 to {limits.item_number_max}",
        "id": f"must be a string of 1–{limits.item_id_chars_max} characters",
    }
)
for _field in (
    "basketPreTaxAmount",
    "basketPostTaxAmount",
    "basketGSTAmount",
    "basketHSTAmount",
    "basketPSTAmount",
    "basketQSTAmount",
    "baseAmount",
    "finalAmount",
):
    FIELD_RULES[_field] = (
        f"must be a JSON number of dollars from 0 to {limits.basket_amount_max:,} with at most "
        "2 decimals"
    )
TAX_FIELDS = ("basket_gst_amount", "basket_hst_amount", "basket_pst_amount", "basket_qst_amount")
AMOUNT_TOLERANCE = Decimal("0.01")


class BasketItem(WireModel):
    id: ItemId
    name: ShortText | None = None
    number: StrictInt | None = Field(
        default=None, ge=1, le=limits.item_number_max, description="Line number on the receipt."
    )
    quantity: StrictInt = Field(ge=1, le=limits.item_quantity_max)
    base_amount: Amount | None = Field(default=None, description="Unit price.")
    final_amount: Amount = Field(description="Line total after discounts.")
    department_id: ShortText | None = None
    category_id: ShortText | None = None


class BasketIssuanceLineIn(IssuanceLineIn):
    contributing_item_ids: list[ItemId] | None = Field(
        default=None, max_length=limits.items_per_basket_max
    )


class BasketCore(PartnerExtras):
    """The basket fields of SPEC §2.2 shared by both families."""

    model_config = ConfigDict(
        alias_generator=lambda name: (
            to_camel(name)
            .replace("Gst", "GST")
            .replace("Hst", "HST")
            .replace("Pst", "PST")
            .replace("Qst", "QST")
        ),
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    checkout_transaction_id: PartnerTransactionId
    collector_number: CollectorNumber
    sponsor_code: SponsorCode | None = Field(
        default=None, description="Required when the client may act for more than one sponsor."
    )
    checkout_date_time: IsoDateTime
    basket_pre_tax_amount: Amount
    basket_post_tax_amount: Amount
    basket_gst_amount: Amount | None = None
    basket_hst_amount: Amount | None = None
    basket_pst_amount: Amount | None = None
    basket_qst_amount: Amount | None = None
    items: list[BasketItem] | None = Field(
        default=None, min_length=1, max_length=limits.items_per_basket_max
    )

    @model_validator(mode="after")
    def _basket_adds_up(self) -> BasketCore:
        taxes = [getattr(self, name) for name in TAX_FIELDS]
        if any(t is not None for t in taxes):
            total = self.basket_pre_tax_amount + sum(
                (t for t in taxes if t is not None), Decimal(0)
            )
            if abs(total - self.basket_post_tax_amount) > AMOUNT_TOLERANCE:
                raise FieldRuleError(
                    "BASKET_AMOUNTS_INCONSISTENT",
                    "basketPostTaxAmount",
                    f"pre-tax {self.basket_pre_tax_amount} plus taxes is {total}, not the post-tax "
                    f"{self.basket_post_tax_amount}",
                )
        if self.items:
            items_total = sum((item.final_amount for item in self.items), Decimal(0))
            if abs(items_total - self.basket_pre_tax_amount) > AMOUNT_TOLERANCE:
                raise FieldRuleError(
                    "BASKET_AMOUNTS_INCONSISTENT",
                    "items",
                    f"items add up to {items_total}, not the pre-tax {self.basket_pre_tax_amount}",
                )
            ids = [item.id for item in self.items]
            if len(set(ids)) != len(ids):
                raise FieldRuleError(
                    "FIELD_INVALID", "items", "item ids must be unique within the basket"
                )
        known = {item.id for item in self.items or ()}
        for i, line in enumerate(getattr(self, "issuances", None) or ()):
            for j, item_id in enumerate(line.contributing_item_ids or ()):
                if self.items and item_id not in known:
                    raise FieldRuleError(
                        "FIELD_INVALID",
                        f"issuances[{i}].contributingItemIds[{j}]",
                        f"names no item of this basket ({item_id!r})",
                    )
        return self


class BasketRequestBase(BasketCore):
    """The partner-calculated basket endpoints: the partner sends the lines."""

    issuances: list[BasketIssuanceLineIn] = Field(
        min_length=1, max_length=limits.issuance_lines_per_request_max
    )


class PostBasketRequest(BasketRequestBase):
    """POST /checkout/issuance/post."""


class ReverseBasketRequest(BasketRequestBase):
    """REVERSE: with `originalCheckoutTransactionId`, bounded by what that POST issued."""

    original_checkout_transaction_id: PartnerTransactionId | None = None


class RecordRequest(BasketRequestBase):
    """RECORD: stored for audit; the collector is optional and no balance moves."""

    collector_number: CollectorNumber | None = None  # type: ignore[assignment]
    issuances: list[BasketIssuanceLineIn] | None = Field(  # type: ignore[assignment]
        default=None, max_length=limits.issuance_lines_per_request_max
    )


class ProgramBasketBase(BasketCore):
    """The program-calculated endpoints: the partner sends the items, the offers decide."""

    items: list[BasketItem] = Field(min_length=1, max_length=limits.items_per_basket_max)
    location_code: LocationCode | None = Field(
        default=None,
        description="Where the basket was bought; offers may apply at some locations only.",
    )


class CalculateRequest(ProgramBasketBase):
    """CALCULATE: what ISSUE would issue now; no transaction is recorded, no miles move."""


class IssueRequest(ProgramBasketBase):
    """ISSUE: calculate and post."""


class ReturnRequest(ProgramBasketBase):
    """RETURN: `items` are the returned items (quantities returned, amounts refunded)."""

    original_checkout_transaction_id: PartnerTransactionId


class BasketLineOut(IssuanceLineOut):
    contributing_item_ids: list[str] | None = None
    status: WireLineStatus | None = Field(default=None, description="Absent on RECORD lines.")  # type: ignore[assignment]


class BasketResponse(WireModel):
    """The request echoed (alphabetical keys, `context` dropped) plus the program's fields."""

    model_config = ConfigDict(
        alias_generator=BasketRequestBase.model_config["alias_generator"],
        populate_by_name=True,
        extra="allow",
        frozen=True,
    )

    basket_pre_tax_amount: float
    basket_post_tax_amount: float
    checkout_date_time: str
    checkout_transaction_id: str
    collector_number: str | None = None
    issuances: list[BasketLineOut] | None = None
    original_checkout_transaction_id: str | None = None
    sponsor_code: str
    transaction_date_time: str = Field(description="When the program processed the request.")
    transaction_id: str


class ProgramResponse(BasketResponse):
    """The basket echoed plus the computed `issuances[]` (with their contributing items) and
    `totalMiles`. CALCULATE has no `transactionId` and no line `status`."""

    total_miles: int
    transaction_id: str | None = None  # type: ignore[assignment]


class LookupLineOut(BasketLineOut):
    miles_reversed: int | None = Field(
        default=None, description="On issued lines: miles reversed so far by later reversals."
    )


class TransactionView(WireModel):
    """A transaction as its response stands now, with the endpoint that accepted it."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True
    )

    transaction_id: str
    transaction_type: Literal[
        "POST", "POST/EVENT", "REVERSE", "REVERSE/EVENT", "RECORD", "ISSUE", "RETURN"
    ]
    transaction_date_time: str
    sponsor_code: str
    issuances: list[LookupLineOut] | None = None


class TransactionList(WireModel):
    transactions: list[TransactionView]


# --------------------------------------------------------------------------- the service's view


@dataclass(frozen=True, slots=True)
class ProgramBasket:
    """A program-calculated request's input to the offers engine."""

    basket: engine.Basket
    location_code: str | None


@dataclass(frozen=True, slots=True)
class Command:
    """What the use cases need of any partner request, whatever its family's field names.

    For the program-calculated endpoints, `lines` start empty and `program` holds the basket; the
    service computes the lines (and `calculation`, what they were computed from) in the unit of work.
    """

    sponsor_code: str
    partner_transaction_id: str
    collector_number: str | None
    moment: datetime
    lines: Sequence[IssuanceLineIn]
    original_partner_id: str | None
    echo: dict[str, Any]
    id_field: str
    moment_field: str
    original_field: str
    program: ProgramBasket | None = None
    calculation: dict[str, Any] | None = None


def _wire_datetime(moment: datetime) -> str:
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond % 1000 == 0 else "auto")
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


_EMPTY: tuple[object, ...] = (None, "", [], {})


def _wire_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)  # ≤ 2 decimals and ≤ 1e6: the shortest float repr is the same number
    if isinstance(value, datetime):
        return _wire_datetime(value)
    if isinstance(value, dict):
        # SPEC §2.5: an optional field that is absent or empty is left out (every required
        # string of the wire has a minimum length of 1, so only optionals can be "").
        return {k: _wire_value(v) for k, v in sorted(value.items()) if v not in _EMPTY}
    if isinstance(value, list):
        return [_wire_value(v) for v in value]
    return value


def without_empty(value: Any) -> Any:
    """`value` without the empty optionals `_wire_value` leaves out, key order kept."""
    if isinstance(value, dict):
        return {k: without_empty(v) for k, v in value.items() if v not in _EMPTY}
    if isinstance(value, list):
        return [without_empty(v) for v in value]
    return value


def echo(request: WireModel, *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request as echoed in the response: keys in alphabetical order (as the seed's sample),
    `context` dropped, absent or empty optionals omitted, `offerId` a string, amounts numbers."""
    dumped = request.model_dump(by_alias=True, exclude_none=True, exclude={"context"})
    for name in drop:
        dumped.pop(name, None)
    out: dict[str, Any] = _wire_value(dumped)
    return out


def event_command(request: EventRequestBase) -> Command:
    return Command(
        sponsor_code=request.sponsor_code,
        partner_transaction_id=request.client_transaction_id,
        collector_number=request.collector_number,
        moment=request.transaction_date_time,
        lines=request.issuances,
        original_partner_id=getattr(request, "original_client_transaction_id", None),
        # The response's transactionDateTime is the processing time, not the partner's.
        echo=echo(request, drop=("transactionDateTime",)),
        id_field="clientTransactionId",
        moment_field="transactionDateTime",
        original_field="originalClientTransactionId",
    )


def basket_command(request: BasketRequestBase, sponsor_code: str) -> Command:
    body = echo(request)
    body["sponsorCode"] = sponsor_code
    return Command(
        sponsor_code=sponsor_code,
        partner_transaction_id=request.checkout_transaction_id,
        collector_number=request.collector_number,
        moment=request.checkout_date_time,
        lines=request.issuances or (),
        original_partner_id=getattr(request, "original_checkout_transaction_id", None),
        echo=dict(sorted(body.items())),
        id_field="checkoutTransactionId",
        moment_field="checkoutDateTime",
        original_field="originalCheckoutTransactionId",
    )


def program_command(request: ProgramBasketBase, sponsor_code: str) -> Command:
    basket = engine.Basket(
        items=tuple(
            engine.Item(i.id, i.quantity, Fraction(i.final_amount), i.department_id, i.category_id)
            for i in request.items
        ),
        coupons=frozenset(request.coupon or ()),
    )
    body = echo(request)
    body["sponsorCode"] = sponsor_code
    return Command(
        sponsor_code=sponsor_code,
        partner_transaction_id=request.checkout_transaction_id,
        collector_number=request.collector_number,
        moment=request.checkout_date_time,
        lines=(),
        original_partner_id=getattr(request, "original_checkout_transaction_id", None),
        echo=dict(sorted(body.items())),
        id_field="checkoutTransactionId",
        moment_field="checkoutDateTime",
        original_field="originalCheckoutTransactionId",
        program=ProgramBasket(basket, request.location_code),
    )


def computed_lines(
    computed: Sequence[engine.Computed], location_code: str | None
) -> tuple[list[BasketIssuanceLineIn], list[dict[str, Any]]]:
    """The engine's output as request lines (for the write path) and as echoed lines."""
    lines = [
        BasketIssuanceLineIn.model_construct(
            issuance_offer_code=c.offer_code,
            location_code=location_code,
            miles_amount=c.miles,
            offer_description=c.description or None,
            offer_id=c.offer_id,
            contributing_item_ids=list(c.contributing_item_ids),
        )
        for c in computed
    ]
    echoed = [
        {
            key: value
            for key, value in (
                ("contributingItemIds", list(c.contributing_item_ids)),
                ("issuanceOfferCode", c.offer_code),
                ("locationCode", location_code),
                ("milesAmount", c.miles),
                ("offerDescription", c.description or None),
                ("offerId", c.offer_id),
            )
            if value not in (None, [])
        }
        for c in computed
    ]
    return lines, echoed
