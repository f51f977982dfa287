"""The partner endpoints. Thin: authenticate, parse, call one service function in the unit of
work the route opens (`run_write`, `run_calculate`), respond."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from starlette.responses import Response

from rewardmiles import clock
from rewardmiles.auth.tokens import Principal
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.errors import ProblemError
from rewardmiles.http.access import authorize, require_sponsor, sponsor_for
from rewardmiles.http.bodies import read_validated_body
from rewardmiles.http.direct import DirectRoute
from rewardmiles.http.middleware import request_id_of
from rewardmiles.http.openapi import problem_responses
from rewardmiles.http.responses import json_response
from rewardmiles.http.threads import run_sync
from rewardmiles.idempotency import service as idempotency
from rewardmiles.issuance import calculated, calls, lookups, service
from rewardmiles.issuance.schemas import (
    FIELD_CODES,
    FIELD_RULES,
    BasketRequestBase,
    BasketResponse,
    CalculateRequest,
    Command,
    EventRequestBase,
    EventResponse,
    IssueRequest,
    PostBasketRequest,
    PostEventRequest,
    ProgramBasketBase,
    ProgramResponse,
    RecordRequest,
    ReturnRequest,
    ReverseBasketRequest,
    ReverseEventRequest,
    TransactionList,
    TransactionView,
    WireModel,
    basket_command,
    event_command,
    program_command,
)
from rewardmiles.metrics import count_call
from rewardmiles.vocabulary import Endpoint

router = APIRouter(prefix="/checkout/issuance", tags=["issuance"])

M = TypeVar("M", bound=WireModel)

IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "1–255 printable ASCII characters (a V4 UUID is a good choice); scoped to the "
    "client. A retry with the same key and body returns the stored result with "
    "`Idempotent-Replayed: true` and has no new effect.",
    "schema": {"type": "string", "maxLength": 255},
}


def _write_responses(model: type[WireModel], *, pending: bool = True) -> dict[int | str, Any]:
    out: dict[int | str, Any] = {200: {"model": model, "description": "Every line posted."}}
    if pending:
        out[202] = {"model": model, "description": "At least one line is PENDING."}
        out.update(problem_responses(400, 401, 403, 409, 413, 415, 422, 500))
    else:
        out.update(problem_responses(400, 401, 403, 413, 415, 500))
    return out


def _request_body(model: type[WireModel], *, idempotent: bool = True) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        },
    }
    if idempotent:
        extra["parameters"] = [IDEMPOTENCY_HEADER]
    return extra


def run_write(
    db: Database,
    settings: Settings,
    registry: idempotency.InFlightRegistry,
    call: calls.PartnerCall,
    now: Callable[[], datetime] = clock.utc_now,
) -> calls.Outcome:
    """A call of an endpoint that records a transaction: `service.execute` in a unit of work
    (again after a lost unique-index race: `Database.run_in_unit_of_work`), with the call's key
    held in this process. Synchronous: a route runs it in a worker thread."""
    with registry.hold(call.client_id, call.idempotency_key):
        return db.run_in_unit_of_work(service.execute, settings, call, now)


def run_calculate(
    db: Database,
    settings: Settings,
    registry: idempotency.InFlightRegistry,
    call: calls.PartnerCall,
    now: Callable[[], datetime] = clock.utc_now,
) -> calls.Outcome:
    """CALCULATE: without a key, `calculated.preview` on a read-only session, storing nothing;
    with one, `calculated.calculate` in a unit of work under the key, as `run_write` runs a
    write call."""
    if call.idempotency_key is None:
        with db.reader() as session:
            return calculated.preview(session, settings, call, now)
    with registry.hold(call.client_id, call.idempotency_key):
        return db.run_in_unit_of_work(calculated.calculate, settings, call, now)


Runner = Callable[
    [Database, Settings, idempotency.InFlightRegistry, calls.PartnerCall], calls.Outcome
]


async def _handle(
    request: Request,
    endpoint: Endpoint,
    model: type[M],
    to_command: Callable[[M, Principal], Command],
    *,
    idempotent: bool = True,
    run: Runner = run_write,
) -> Response:
    """Authenticate, parse, then `run` the call in a worker thread: `run_write` (after the
    one-statement path, where the server has one) for the endpoints that record a transaction."""
    ctx = request.app.state.ctx
    principal = await authorize(request)
    key = idempotency.parse_key(request.headers.get("idempotency-key")) if idempotent else None
    body, canonical = await read_validated_body(
        request,
        model,
        context={"miles_per_line_max": ctx.settings.miles_per_line_max},
        rules=FIELD_RULES,
        codes=FIELD_CODES,
    )
    call = calls.PartnerCall(
        endpoint=endpoint,
        client_id=principal.client_id,
        command=to_command(body, principal),
        request_json=canonical.decode(),
        fingerprint=idempotency.fingerprint(request.method, _url_path(request), canonical),
        idempotency_key=key,
        request_id=request_id_of(request),
    )
    outcome = None
    if run is run_write and ctx.issue_writer is not None:
        outcome = await service.execute_at_once(
            ctx.issue_writer, ctx.db, ctx.settings, ctx.registry, call
        )
    if outcome is None:
        outcome = await run_sync(ctx.limiter, run, ctx.db, ctx.settings, ctx.registry, call)
    if not outcome.replayed:  # committed by now; a replay's lines were counted by its first answer
        count_call(
            endpoint,
            call.command.sponsor_code,
            outcome.status,
            outcome.body,
            len(call.command.lines),
        )
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return json_response(outcome.status, outcome.body, headers)


def _url_path(request: Request) -> str:
    """`request.url.path` (what fingerprints have always hashed), without building the URL for a
    path of the direct lane, where the two are equal. Elsewhere they may not be: the router also
    takes `…/post/event%0A`, whose URL path drops the line feed."""
    path: str = request.scope["path"]
    return path if path in _DIRECT_PATHS else request.url.path


def _event(body: EventRequestBase, principal: Principal) -> Command:
    require_sponsor(principal, body.sponsor_code)
    return event_command(body)


def _basket(body: BasketRequestBase, principal: Principal) -> Command:
    return basket_command(body, sponsor_for(principal, body.sponsor_code))


@router.post(
    "/post",
    summary="POST: issue partner-calculated miles for a checkout basket",
    responses=_write_responses(BasketResponse),
    openapi_extra=_request_body(PostBasketRequest),
)
async def post_basket(request: Request) -> Response:
    return await _handle(request, Endpoint.POST, PostBasketRequest, _basket)


@router.post(
    "/post/event",
    summary="POST/EVENT: issue partner-calculated miles for a non-purchase event",
    responses=_write_responses(EventResponse),
    openapi_extra=_request_body(PostEventRequest),
)
async def post_event(request: Request) -> Response:
    return await _handle(request, Endpoint.POST_EVENT, PostEventRequest, _event)


@router.post(
    "/reverse",
    summary="REVERSE: reverse miles of a basket (return or correction)",
    responses=_write_responses(BasketResponse),
    openapi_extra=_request_body(ReverseBasketRequest),
)
async def reverse_basket(request: Request) -> Response:
    return await _handle(request, Endpoint.REVERSE, ReverseBasketRequest, _basket)


@router.post(
    "/reverse/event",
    summary="REVERSE/EVENT: reverse partner-calculated miles (correction or reversal of an event)",
    responses=_write_responses(EventResponse),
    openapi_extra=_request_body(ReverseEventRequest),
)
async def reverse_event(request: Request) -> Response:
    return await _handle(request, Endpoint.REVERSE_EVENT, ReverseEventRequest, _event)


@router.post(
    "/record",
    summary="RECORD: store a transaction for audit and reconciliation; no miles move",
    description="Validated like the other endpoints; `collectorNumber` and `issuances` are "
    "optional. The Idempotency-Key header is ignored (a resend with the same id and body "
    "returns the stored result).",
    responses=_write_responses(BasketResponse, pending=False),
    openapi_extra=_request_body(RecordRequest, idempotent=False),
)
async def record(request: Request) -> Response:
    return await _handle(request, Endpoint.RECORD, RecordRequest, _basket, idempotent=False)


# --------------------------------------------------------------------------- program-calculated


def _program(body: ProgramBasketBase, principal: Principal) -> Command:
    return program_command(body, sponsor_for(principal, body.sponsor_code))


@router.post(
    "/calculate",
    summary="CALCULATE: the miles ISSUE would issue for this basket now (no miles move)",
    description="A preview: no transaction is recorded and no balance moves. With an "
    "Idempotency-Key, the answer (the preview, or a business rule's 400) is stored under the key "
    "like any other endpoint's: a retry with the same key and body replays it with "
    "`Idempotent-Replayed: true` and the same miles even if the offers changed in between. "
    "Without a key, nothing is stored and every call previews the offers as they are now.",
    response_model=ProgramResponse,
    responses=problem_responses(400, 401, 403, 409, 413, 415, 422, 500),
    openapi_extra=_request_body(CalculateRequest),
)
async def calculate(request: Request) -> Response:
    return await _handle(request, Endpoint.CALCULATE, CalculateRequest, _program, run=run_calculate)


@router.post(
    "/issue",
    summary="ISSUE: calculate the miles of a basket with the sponsor's offers and post them",
    responses=_write_responses(ProgramResponse),
    openapi_extra=_request_body(IssueRequest),
)
async def issue(request: Request) -> Response:
    return await _handle(request, Endpoint.ISSUE, IssueRequest, _program)


@router.post(
    "/return",
    summary="RETURN: take back the miles of returned items, with the rules of the original ISSUE",
    responses=_write_responses(ProgramResponse),
    openapi_extra=_request_body(ReturnRequest),
)
async def return_items(request: Request) -> Response:
    return await _handle(request, Endpoint.RETURN, ReturnRequest, _program)


# --------------------------------------------------------------------------- lookup

EVENT_ENDPOINTS = (Endpoint.POST_EVENT, Endpoint.REVERSE_EVENT)
BASKET_ENDPOINTS = (
    Endpoint.POST,
    Endpoint.REVERSE,
    Endpoint.RECORD,
    Endpoint.ISSUE,
    Endpoint.RETURN,
)


@router.get(
    "/transactions/{transactionId}",
    summary="One accepted transaction of the client's sponsors, as it stands now",
    response_model=TransactionView,
    responses=problem_responses(401, 404),
)
async def get_transaction(request: Request, transactionId: str) -> Response:  # noqa: N803
    ctx = request.app.state.ctx
    principal = await authorize(request)

    def find() -> dict[str, Any] | None:
        with ctx.db.reader() as session:
            return lookups.lookup(session, transactionId, principal.sponsor_codes)

    found = await run_sync(ctx.limiter, find)
    if found is None:
        raise ProblemError(
            "NOT_FOUND", f"No transaction {transactionId} for this client's sponsors."
        )
    return json_response(200, found)


@router.get(
    "/transactions",
    summary="Accepted transactions with a partner transaction id",
    description="Give `clientTransactionId` (event endpoints) or `checkoutTransactionId` (basket "
    "endpoints). `sponsorCode` may be left out when the client acts for one sponsor.",
    response_model=TransactionList,
    responses=problem_responses(400, 401, 403),
)
async def find_transactions(
    request: Request,
    sponsorCode: str | None = None,  # noqa: N803
    clientTransactionId: str | None = None,  # noqa: N803
    checkoutTransactionId: str | None = None,  # noqa: N803
) -> Response:
    ctx = request.app.state.ctx
    principal = await authorize(request)
    sponsor = sponsor_for(principal, sponsorCode)
    if (clientTransactionId is None) == (checkoutTransactionId is None):
        raise ProblemError(
            "FIELD_REQUIRED",
            "Give exactly one of clientTransactionId and checkoutTransactionId.",
            field="clientTransactionId" if clientTransactionId is None else "checkoutTransactionId",
        )
    partner_id = clientTransactionId or checkoutTransactionId or ""
    endpoints = EVENT_ENDPOINTS if clientTransactionId is not None else BASKET_ENDPOINTS

    def find() -> list[dict[str, Any]]:
        with ctx.db.reader() as session:
            return lookups.lookup_by_partner_id(session, sponsor, partner_id, endpoints)

    return json_response(200, {"transactions": await run_sync(ctx.limiter, find)})


# The partner calls served on the direct lane (`http.direct`), past the framework's routing: each
# keeps its route above (same method and path) and takes the request as its only parameter.
DIRECT_ROUTES = (
    DirectRoute("POST", "/checkout/issuance/post", post_basket),
    DirectRoute("POST", "/checkout/issuance/post/event", post_event),
    DirectRoute("POST", "/checkout/issuance/reverse", reverse_basket),
    DirectRoute("POST", "/checkout/issuance/reverse/event", reverse_event),
    DirectRoute("POST", "/checkout/issuance/record", record),
    DirectRoute("POST", "/checkout/issuance/calculate", calculate),
    DirectRoute("POST", "/checkout/issuance/issue", issue),
    DirectRoute("POST", "/checkout/issuance/return", return_items),
)
_DIRECT_PATHS = frozenset(route.path for route in DIRECT_ROUTES)
