"""Partner calls run in-process through the same service the HTTP routes call.

`partner_call` runs a body as any partner endpoint does after authentication: parsed and
validated as the route's model (a malformed body raises the route's `ProblemError`), turned into
the route's `Command`, then run as the route runs it: `routes.run_write` (`service.execute` in a
unit of work) or, for CALCULATE, `routes.run_calculate`.
`call` is its POST/EVENT and REVERSE/EVENT shorthand.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rewardmiles import clock
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.http.partner_json import json_object_of
from rewardmiles.http.validation import validate_body
from rewardmiles.idempotency import service as idempotency
from rewardmiles.idempotency.service import InFlightRegistry
from rewardmiles.issuance import calls, lookups
from rewardmiles.issuance.routes import (
    BASKET_ENDPOINTS,
    EVENT_ENDPOINTS,
    run_calculate,
    run_write,
)
from rewardmiles.issuance.schemas import (
    FIELD_CODES,
    FIELD_RULES,
    CalculateRequest,
    Command,
    IssueRequest,
    PostBasketRequest,
    PostEventRequest,
    RecordRequest,
    ReturnRequest,
    ReverseBasketRequest,
    ReverseEventRequest,
    WireModel,
    basket_command,
    event_command,
    program_command,
)
from rewardmiles.vocabulary import Endpoint

_REGISTRY = InFlightRegistry()


def _event(request: Any) -> Command:
    return event_command(request)


def _basket(request: Any) -> Command:
    return basket_command(request, request.sponsor_code)


def _program(request: Any) -> Command:
    return program_command(request, request.sponsor_code)


# Each endpoint's path (what the route fingerprints), model and command, as routes.py has them.
ROUTES: dict[Endpoint, tuple[str, type[WireModel], Callable[[Any], Command]]] = {
    Endpoint.POST: ("/checkout/issuance/post", PostBasketRequest, _basket),
    Endpoint.POST_EVENT: ("/checkout/issuance/post/event", PostEventRequest, _event),
    Endpoint.REVERSE: ("/checkout/issuance/reverse", ReverseBasketRequest, _basket),
    Endpoint.REVERSE_EVENT: ("/checkout/issuance/reverse/event", ReverseEventRequest, _event),
    Endpoint.RECORD: ("/checkout/issuance/record", RecordRequest, _basket),
    Endpoint.CALCULATE: ("/checkout/issuance/calculate", CalculateRequest, _program),
    Endpoint.ISSUE: ("/checkout/issuance/issue", IssueRequest, _program),
    Endpoint.RETURN: ("/checkout/issuance/return", ReturnRequest, _program),
}


def build_call(
    settings: Settings,
    endpoint: Endpoint,
    body: dict[str, Any],
    *,
    client_id: str = "in-process",
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
    request_id: str = "test",
) -> calls.PartnerCall:
    """The `PartnerCall` the route of `endpoint` builds for `body` (with its `sponsorCode`):
    parsed and validated as the route does (a malformed body raises the route's
    `ProblemError`), fingerprinted as the route does (the same body resent is the same request)
    unless `fingerprint` is given; RECORD, like its route, takes no `Idempotency-Key`."""
    path, model, to_command = ROUTES[endpoint]
    obj, canonical = json_object_of(json.dumps(body).encode())
    request = validate_body(
        model,
        obj,
        context={"miles_per_line_max": settings.miles_per_line_max},
        rules=FIELD_RULES,
        codes=FIELD_CODES,
    )
    return calls.PartnerCall(
        endpoint=endpoint,
        client_id=client_id,
        command=to_command(request),
        request_json=canonical.decode(),
        fingerprint=fingerprint or idempotency.fingerprint("POST", path, canonical),
        idempotency_key=idempotency_key if endpoint is not Endpoint.RECORD else None,
        request_id=request_id,
    )


def run(
    db: Database,
    settings: Settings,
    partner: calls.PartnerCall,
    *,
    now: datetime | None = None,
    registry: InFlightRegistry | None = None,
) -> calls.Outcome:
    """`partner` run as its route runs it (`run_calculate` for CALCULATE, `run_write`
    otherwise), at `now` (default: the real clock), in flight in `registry` (default: one shared
    by the calls that name none)."""
    runner = run_calculate if partner.endpoint is Endpoint.CALCULATE else run_write
    return runner(
        db, settings, registry or _REGISTRY, partner, (lambda: now) if now else clock.utc_now
    )


def partner_call(
    db: Database,
    settings: Settings,
    endpoint: Endpoint,
    body: dict[str, Any],
    *,
    now: datetime | None = None,
    idempotency_key: str | None = None,
    registry: InFlightRegistry | None = None,
    client_id: str = "in-process",
    fingerprint: str | None = None,
    request_id: str = "test",
) -> calls.Outcome:
    """`body` as a call of `endpoint` by `client_id` (`build_call`), run at `now` (`run`)."""
    made = build_call(
        settings,
        endpoint,
        body,
        client_id=client_id,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        request_id=request_id,
    )
    return run(db, settings, made, now=now, registry=registry)


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
) -> calls.Outcome:
    """`body` as a POST/EVENT (or, with `reverse`, a REVERSE/EVENT) call of `client_id`, at `now`
    (default: the real clock), under `idempotency_key` if given, in flight in `registry` (default:
    one shared by the calls that name none). Its fingerprint is the
    route's: the same body sent again under the same key is a replay."""
    return partner_call(
        db,
        settings,
        Endpoint.REVERSE_EVENT if reverse else Endpoint.POST_EVENT,
        body,
        now=now,
        idempotency_key=idempotency_key,
        registry=registry,
        client_id=client_id,
    )


# --------------------------------------------------------------------------- lookups


def lookup(db: Database, transaction_id: str, sponsor_codes: list[str]) -> dict[str, Any] | None:
    """GET /transactions/{transactionId} of a client acting for `sponsor_codes`."""
    with db.reader() as session:
        return lookups.lookup(session, transaction_id, sponsor_codes)


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
        return lookups.lookup_by_partner_id(session, sponsor_code, partner_id, endpoints)
