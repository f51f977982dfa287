"""Partner write calls run in-process through the same service the HTTP routes call."""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from typing import Any

from rewardmiles import clock
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.idempotency import service as idempotency
from rewardmiles.idempotency.service import InFlightRegistry
from rewardmiles.issuance import service
from rewardmiles.issuance.routes import BASKET_ENDPOINTS, EVENT_ENDPOINTS
from rewardmiles.issuance.schemas import (
    BasketRequestBase,
    CalculateRequest,
    EventRequestBase,
    IssueRequest,
    PostBasketRequest,
    PostEventRequest,
    ProgramBasketBase,
    RecordRequest,
    ReturnRequest,
    ReverseBasketRequest,
    ReverseEventRequest,
    WireModel,
    basket_command,
    event_command,
    program_command,
)
from rewardmiles.web import canonical_json, parse_json_object

_REGISTRY = InFlightRegistry()


def call(
    db: Database,
    settings: Settings,
    body: dict[str, Any],
    *,
    reverse: bool = False,
    now: datetime | None = None,
    idempotency_key: str | None = None,
    registry: InFlightRegistry | None = None,
    client_id: str = "in-process",
) -> service.Outcome:
    """`body` as a POST/EVENT (or, with `reverse`, a REVERSE/EVENT) call of `client_id`, at `now`
    (default: the real clock), under `idempotency_key` if given, in flight in `registry` (default:
    one shared by the calls that name none)."""
    model = ReverseEventRequest if reverse else PostEventRequest
    request = model.model_validate(
        body, context={"miles_per_line_max": settings.miles_per_line_max}
    )
    canonical = canonical_json(body)
    outcome_call = service.PartnerCall(
        endpoint=service.Endpoint.REVERSE_EVENT if reverse else service.Endpoint.POST_EVENT,
        client_id=client_id,
        command=event_command(request),
        request_json=canonical.decode(),
        fingerprint=secrets.token_hex(16),
        idempotency_key=idempotency_key,
        request_id="test",
    )
    return service.execute(
        db,
        settings,
        registry or _REGISTRY,
        outcome_call,
        now=(lambda: now) if now else clock.utc_now,
    )


# --------------------------------------------------------------------------- any endpoint, lookups

_ROUTES: dict[service.Endpoint, tuple[type[WireModel], str]] = {
    service.Endpoint.POST: (PostBasketRequest, "/post"),
    service.Endpoint.POST_EVENT: (PostEventRequest, "/post/event"),
    service.Endpoint.REVERSE: (ReverseBasketRequest, "/reverse"),
    service.Endpoint.REVERSE_EVENT: (ReverseEventRequest, "/reverse/event"),
    service.Endpoint.RECORD: (RecordRequest, "/record"),
    service.Endpoint.ISSUE: (IssueRequest, "/issue"),
    service.Endpoint.RETURN: (ReturnRequest, "/return"),
    service.Endpoint.CALCULATE: (CalculateRequest, "/calculate"),
}


def partner_call(
    settings: Settings,
    endpoint: service.Endpoint,
    body: dict[str, Any],
    *,
    client_id: str,
    idempotency_key: str | None = None,
    request_id: str = "in-process",
) -> service.PartnerCall:
    """The `PartnerCall` the route of `endpoint` builds for `body` (which names its sponsor), with
    the route's fingerprint: the same body to the same endpoint is the same request."""
    model, path = _ROUTES[endpoint]
    parsed = parse_json_object(json.dumps(body).encode())  # amounts as the route reads them
    request = model.model_validate(
        parsed, context={"miles_per_line_max": settings.miles_per_line_max}
    )
    canonical = canonical_json(parsed)
    sponsor = body["sponsorCode"]
    if isinstance(request, EventRequestBase):
        command = event_command(request)
    elif isinstance(request, ProgramBasketBase):
        command = program_command(request, sponsor)
    else:
        assert isinstance(request, BasketRequestBase)
        command = basket_command(request, sponsor)
    return service.PartnerCall(
        endpoint=endpoint,
        client_id=client_id,
        command=command,
        request_json=canonical.decode(),
        fingerprint=idempotency.fingerprint("POST", f"/checkout/issuance{path}", canonical),
        idempotency_key=idempotency_key if endpoint is not service.Endpoint.RECORD else None,
        request_id=request_id,
    )


def run(
    db: Database,
    settings: Settings,
    partner: service.PartnerCall,
    *,
    now: datetime,
    registry: InFlightRegistry | None = None,
) -> service.Outcome:
    """`partner` as its route runs it in-process (`calculate` for CALCULATE), at `now`."""
    runner = (
        service.calculate if partner.endpoint is service.Endpoint.CALCULATE else service.execute
    )
    return runner(db, settings, registry or _REGISTRY, partner, now=lambda: now)


def lookup(db: Database, transaction_id: str, sponsor_codes: list[str]) -> dict[str, Any] | None:
    """GET /transactions/{transactionId} of a client acting for `sponsor_codes`."""
    with db.reader() as session:
        return service.lookup(session, transaction_id, sponsor_codes)


def lookup_by_partner_id(
    db: Database,
    sponsor_code: str,
    *,
    client_transaction_id: str | None = None,
    checkout_transaction_id: str | None = None,
) -> list[dict[str, Any]]:
    """GET /transactions?clientTransactionId=… (event endpoints) or ?checkoutTransactionId=…
    (basket endpoints): exactly one of them."""
    assert (client_transaction_id is None) != (checkout_transaction_id is None)
    endpoints = EVENT_ENDPOINTS if client_transaction_id is not None else BASKET_ENDPOINTS
    partner_id = client_transaction_id or checkout_transaction_id or ""
    with db.reader() as session:
        return service.lookup_by_partner_id(session, sponsor_code, partner_id, endpoints)
