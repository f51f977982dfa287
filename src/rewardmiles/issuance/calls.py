"""The partner use cases' terms: what sets each endpoint (`vocabulary.Endpoint`) apart (`RULES`:
the direction its lines move miles, what its original may name), a call as the use cases receive
it (`PartnerCall`), what they answer (`Outcome`), a line as the rules plan it (`PlannedLine`), and
a line's status as the partner sees it (`wire_status`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rewardmiles.issuance.schemas import Command
from rewardmiles.vocabulary import Direction, Endpoint, IssuanceStatus, LineStatus, PendingReason


@dataclass(frozen=True, slots=True)
class EndpointRules:
    wire_name: str
    direction: Direction
    reversible_origins: tuple[Endpoint, ...] = ()  # what its original may name, preferred first
    # Originals of the other family (partner- or program-calculated) the same id may name: found,
    # but their miles go back through another endpoint (`TAKEN_BACK_BY`).
    other_family: tuple[Endpoint, ...] = ()


RULES: dict[Endpoint, EndpointRules] = {
    Endpoint.POST: EndpointRules("POST", Direction.CREDIT),
    Endpoint.POST_EVENT: EndpointRules("POST/EVENT", Direction.CREDIT),
    Endpoint.REVERSE: EndpointRules(
        "REVERSE", Direction.DEBIT, (Endpoint.POST,), (Endpoint.ISSUE,)
    ),
    # The seed: originalClientTransactionId names a POST/EVENT, or a POST's checkoutTransactionId.
    Endpoint.REVERSE_EVENT: EndpointRules(
        "REVERSE/EVENT", Direction.DEBIT, (Endpoint.POST_EVENT, Endpoint.POST), (Endpoint.ISSUE,)
    ),
    Endpoint.RECORD: EndpointRules("RECORD", Direction.NONE),
    Endpoint.ISSUE: EndpointRules("ISSUE", Direction.CREDIT),
    Endpoint.RETURN: EndpointRules("RETURN", Direction.DEBIT, (Endpoint.ISSUE,), (Endpoint.POST,)),
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
    status: LineStatus
    pending_reason: PendingReason | None


# A line's status as the partner sees it, by (direction, stored status): ISSUED or REVERSED once
# posted, PENDING, REJECTED; none for a RECORD line (nothing issued). A table, so that a line's
# answer reads no enum member (on Python 3.11 each read of a member from its class costs ~50 ns).
WIRE_STATUSES: dict[tuple[str, str], IssuanceStatus] = {
    (direction, status): wire
    for direction in Direction
    for status, wire in (
        (LineStatus.PENDING, IssuanceStatus.PENDING),
        (LineStatus.REJECTED, IssuanceStatus.REJECTED),
        (
            LineStatus.POSTED,
            IssuanceStatus.ISSUED if direction is Direction.CREDIT else IssuanceStatus.REVERSED,
        ),
    )
}


def wire_status(direction: str, status: str) -> IssuanceStatus | None:
    """`WIRE_STATUSES`: ISSUED/REVERSED once posted, PENDING, REJECTED; None for a RECORD line."""
    return WIRE_STATUSES.get((direction, status))
