"""The words of the partner use cases: the endpoints and what sets each apart (`RULES`: the
direction its lines move miles, what its original may name), a call as the use cases receive it
(`PartnerCall`), what they answer (`Outcome`), and a line as the rules plan it (`PlannedLine`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rewardmiles.db.models import PENDING, POSTED, REJECTED
from rewardmiles.issuance.schemas import Command


class Endpoint(StrEnum):
    POST = "post"
    POST_EVENT = "post_event"
    REVERSE = "reverse"
    REVERSE_EVENT = "reverse_event"
    RECORD = "record"
    ISSUE = "issue"
    RETURN = "return"
    CALCULATE = "calculate"  # a preview: never a transaction, only (with a key) a stored answer


CREDIT = "credit"
DEBIT = "debit"
NO_EFFECT = "none"


@dataclass(frozen=True, slots=True)
class EndpointRules:
    wire_name: str
    direction: str
    reversible_origins: tuple[Endpoint, ...] = ()  # what its original may name, preferred first
    # Originals of the other family (partner- or program-calculated) the same id may name: found,
    # but their miles go back through another endpoint (`TAKEN_BACK_BY`).
    other_family: tuple[Endpoint, ...] = ()


RULES: dict[Endpoint, EndpointRules] = {
    Endpoint.POST: EndpointRules("POST", CREDIT),
    Endpoint.POST_EVENT: EndpointRules("POST/EVENT", CREDIT),
    Endpoint.REVERSE: EndpointRules("REVERSE", DEBIT, (Endpoint.POST,), (Endpoint.ISSUE,)),
    # The seed: originalClientTransactionId names a POST/EVENT, or a POST's checkoutTransactionId.
    Endpoint.REVERSE_EVENT: EndpointRules(
        "REVERSE/EVENT", DEBIT, (Endpoint.POST_EVENT, Endpoint.POST), (Endpoint.ISSUE,)
    ),
    Endpoint.RECORD: EndpointRules("RECORD", NO_EFFECT),
    Endpoint.ISSUE: EndpointRules("ISSUE", CREDIT),
    Endpoint.RETURN: EndpointRules("RETURN", DEBIT, (Endpoint.ISSUE,), (Endpoint.POST,)),
}
# The endpoints that record a transaction, each run by `execute`. CALCULATE is not one of them:
# it records nothing and is run by `calculate` alone.
WIRE_NAMES = {endpoint.value: rules.wire_name for endpoint, rules in RULES.items()}
# Program-calculated miles go back through RETURN, with the rules stored with the ISSUE;
# partner-calculated ones (no stored rules) through REVERSE or REVERSE/EVENT, with their amounts.
TAKEN_BACK_BY = {Endpoint.ISSUE: "RETURN", Endpoint.POST: "REVERSE or REVERSE/EVENT"}


@dataclass(frozen=True, slots=True)
class PartnerCall:
    """Everything a write use case needs from the HTTP request, already shape-validated."""

    endpoint: Endpoint
    client_id: str
    command: Command
    request_json: str
    fingerprint: str
    idempotency_key: str | None
    request_id: str


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    body: dict[str, Any]
    transaction_id: str | None = None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class PlannedLine:
    line_no: int
    offer_code: str
    location_code: str | None
    miles: int
    status: str
    pending_reason: str | None


def wire_status(direction: str, status: str) -> str | None:
    """ISSUED/REVERSED once posted, PENDING, REJECTED; None for a RECORD line (nothing issued)."""
    if status == PENDING:
        return "PENDING"
    if status == REJECTED:
        return "REJECTED"
    if status == POSTED:
        return "ISSUED" if direction == CREDIT else "REVERSED"
    return None
