"""`/admin/v1` routes of a collector's ledger history, status and adjustments, and the list of
adjustments. Each authenticates and checks the role (`operators.access.require`), parses, runs
one function in a unit of work (or snapshot) it opens, and answers."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, StrictInt, StringConstraints
from sqlalchemy.orm import Session
from starlette.responses import Response

from rewardmiles import clock, limits, secretbox
from rewardmiles.admin.boundary import BODY_PROBLEMS
from rewardmiles.codec import b64url, unb64url
from rewardmiles.collectors import adjustments, service
from rewardmiles.collectors.adjustments import AdjustmentError, AdjustmentRequest
from rewardmiles.collectors.repository import StoredAdjustment
from rewardmiles.errors import OperatorError, ProblemError
from rewardmiles.http.bodies import read_json_object
from rewardmiles.http.middleware import request_id_of
from rewardmiles.http.openapi import admin_problem_responses
from rewardmiles.http.responses import json_response
from rewardmiles.http.threads import run_sync
from rewardmiles.http.validation import validate_body
from rewardmiles.idempotency.service import parse_key
from rewardmiles.ledger import history
from rewardmiles.operators.access import auth_problems, auth_problems_unsafe, require
from rewardmiles.operators.service import Actor, Caller
from rewardmiles.vocabulary import AdjustmentReason, CollectorStatus, OperatorRole

router = APIRouter(prefix="/admin/v1", tags=["admin"])

BODY_BYTES_MAX = 4096
NUMBER = Path(
    description="The collector number, 11 digits.",
    json_schema_extra={"pattern": limits.collector_number_pattern},
)
CURSOR = Query(None, description="The `nextCursor` of the page before; none for the first.")
LIMIT = Query(
    None,
    description=f"Entries per page, 1 to {limits.admin_page_items_max} "
    f"(default {limits.admin_page_items_default}).",
)


# --------------------------------------------------------------------------- shapes


class LedgerItem(BaseModel):
    time: str
    transactionId: str  # noqa: N815
    partnerTransactionId: str | None  # noqa: N815
    sponsorCode: str | None  # noqa: N815
    offerCode: str | None  # noqa: N815
    endpoint: str
    miles: int
    balanceAfter: int  # noqa: N815


class LedgerPage(BaseModel):
    items: list[LedgerItem]
    nextCursor: str | None  # noqa: N815


class StatusRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    status: CollectorStatus
    note: Annotated[
        str | None,
        StringConstraints(strict=True, min_length=1, max_length=limits.adjustment_note_chars_max),
    ] = None


class StatusOut(BaseModel):
    collectorNumber: str  # noqa: N815
    previousStatus: CollectorStatus  # noqa: N815
    status: CollectorStatus


def _nonzero_miles(miles: int) -> int:
    if miles == 0 or abs(miles) > limits.adjustment_miles_max:
        raise ValueError("out of range")
    return miles


def _known_reason(reason: str) -> str:
    if reason not in tuple(AdjustmentReason):
        raise ValueError("unknown reason")
    return reason


class AdjustmentBody(BaseModel):
    """Checked whole, so that every member at fault is named in one answer (the service checks
    the same again for the CLI)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    miles: Annotated[StrictInt, AfterValidator(_nonzero_miles)]
    reason: Annotated[str, StringConstraints(strict=True), AfterValidator(_known_reason)]
    note: Annotated[
        str,
        StringConstraints(strict=True, min_length=1, max_length=limits.adjustment_note_chars_max),
    ]


class AdjustmentOut(BaseModel):
    id: str
    collectorNumber: str  # noqa: N815
    miles: int
    reason: str
    note: str
    operator: str
    createdAt: str  # noqa: N815
    balanceAfter: int  # noqa: N815


class AdjustmentPage(BaseModel):
    items: list[AdjustmentOut]
    nextCursor: str | None  # noqa: N815


NOTE_RULE = f"must be a string of 1 to {limits.adjustment_note_chars_max} characters"
STATUS_RULES = {"status": f"must be one of {', '.join(CollectorStatus)}", "note": NOTE_RULE}
ADJUSTMENT_RULES = {
    "miles": f"must be a non-zero JSON integer of at most {limits.adjustment_miles_max:,} "
    "either way",
    "reason": f"must be one of {', '.join(AdjustmentReason)}",
    "note": NOTE_RULE,
}


# --------------------------------------------------------------------------- parsing


def _number(number: str) -> str:
    if not service.COLLECTOR_NUMBER.fullmatch(number):
        raise ProblemError(
            "COLLECTOR_NUMBER_INVALID",
            f"A collector number is exactly {limits.collector_number_digits} digits.",
            field="number",
        )
    return number


def _limit(raw: str | None) -> int:
    if raw is None:
        return limits.admin_page_items_default
    if not re.fullmatch(r"[1-9][0-9]{0,3}", raw) or int(raw) > limits.admin_page_items_max:
        raise ProblemError(
            "FIELD_INVALID",
            f"limit must be an integer from 1 to {limits.admin_page_items_max}.",
            field="limit",
        )
    return int(raw)


def history_cursor_key(request: Request) -> bytes:
    return secretbox.for_settings(request.app.state.ctx.settings).derive(history.CURSOR_PURPOSE)


def _bad_cursor() -> ProblemError:
    return ProblemError(
        "CURSOR_INVALID", "This cursor was not given by this list; start again.", field="cursor"
    )


def collector_refusal(exc: OperatorError) -> ProblemError:
    if isinstance(exc, AdjustmentError):
        return ProblemError(exc.code, str(exc), field=exc.field)
    return ProblemError("FIELD_INVALID", str(exc))


def _at(moment: datetime, zone: str) -> str:
    return clock.program_timestamp(moment, zone)


# --------------------------------------------------------------------------- ledger history


@router.get(
    "/collectors/{number}/ledger",
    summary="A collector's ledger entries, newest first, with the balance after each",
    description="Each entry: when it posted (program time zone), the transaction (or "
    "adjustment) id, the partner's transaction id, sponsor, offer, endpoint (`adjustment` for an "
    "operator's adjustment), the signed miles and the collector's balance right after it. "
    "Pages by keyset; the cursor is signed (it carries the running balance). Any role.",
    response_model=LedgerPage,
    responses=admin_problem_responses(
        *auth_problems(OperatorRole.VIEWER),
        "COLLECTOR_NUMBER_INVALID",
        "FIELD_INVALID",
        "CURSOR_INVALID",
        "NOT_FOUND",
    ),
)
async def collector_ledger(
    request: Request,
    number: str = NUMBER,
    limit: str | None = LIMIT,
    cursor: str | None = CURSOR,
) -> Response:
    await require(request, OperatorRole.VIEWER)
    _number(number)
    size = _limit(limit)
    key = history_cursor_key(request)
    after = None
    if cursor is not None:
        try:
            after = history.decode_cursor(key, number, cursor)
        except history.CursorError as exc:
            raise _bad_cursor() from exc
    ctx = request.app.state.ctx

    def read() -> history.HistoryPage | None:
        with ctx.db.snapshot_reader() as session:
            return history.page(session, number, size, after)

    found = await run_sync(ctx.limiter, read)
    if found is None:
        raise ProblemError("NOT_FOUND", f"No collector {number}.")
    zone = ctx.settings.program_time_zone
    items = [
        {
            "time": _at(e.posted_at, zone),
            "transactionId": e.reference_id,
            "partnerTransactionId": e.partner_transaction_id,
            "sponsorCode": e.sponsor_code,
            "offerCode": e.offer_code,
            "endpoint": e.endpoint,
            "miles": e.miles,
            "balanceAfter": e.balance_after,
        }
        for e in found.entries
    ]
    following = found.next_position
    return json_response(
        200,
        {
            "items": items,
            "nextCursor": None
            if following is None
            else history.encode_cursor(key, number, following),
        },
    )


# --------------------------------------------------------------------------- status


async def change_collector_status(
    request: Request, caller: Caller, number: str, body: StatusRequest
) -> str | None:
    """The change `body` asks for, audited, in a unit of work: the previous status, or None for
    a number no collector has; a refusal raised as the service's `OperatorError`."""
    ctx = request.app.state.ctx
    actor = Actor(caller.actor, request_id_of(request))

    def change() -> str | None:
        with ctx.db.unit_of_work() as session:
            if service.get_collector(session, number) is None:
                return None
            return service.change_status(
                session, number, body.status, body.note, actor, clock.utc_now()
            )

    return await run_sync(ctx.limiter, change)


@router.post(
    "/collectors/{number}/status",
    summary="Change a collector's status (ACTIVE, ON_HOLD, CLOSED), with a note; audited",
    description="The same change as `rewardmiles collector set-status`. Pending lines settle "
    "once the worker sees it. Agent or admin.",
    response_model=StatusOut,
    responses=admin_problem_responses(
        *auth_problems_unsafe(OperatorRole.AGENT),
        "COLLECTOR_NUMBER_INVALID",
        *BODY_PROBLEMS,
        "NOT_FOUND",
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/StatusRequest"}}
            },
        }
    },
)
async def collector_status(request: Request, number: str = NUMBER) -> Response:
    caller = await require(request, OperatorRole.AGENT)
    _number(number)
    obj = await read_json_object(request, BODY_BYTES_MAX)
    body = validate_body(StatusRequest, obj, context={}, rules=STATUS_RULES, codes={})
    try:
        before = await change_collector_status(request, caller, number, body)
    except OperatorError as exc:
        raise collector_refusal(exc) from exc
    if before is None:
        raise ProblemError("NOT_FOUND", f"No collector {number}.")
    return json_response(
        200, {"collectorNumber": number, "previousStatus": before, "status": body.status}
    )


# --------------------------------------------------------------------------- adjustments


def _adjustment(made: StoredAdjustment, zone: str) -> dict[str, Any]:
    return {
        "id": made.id,
        "collectorNumber": made.collector_number,
        "miles": made.miles,
        "reason": made.reason,
        "note": made.note,
        "operator": made.operator,
        "createdAt": _at(made.created_at, zone),
        "balanceAfter": made.balance_after,
    }


async def adjust_collector(
    request: Request, caller: Caller, wanted: AdjustmentRequest
) -> adjustments.AdjustmentOutcome:
    """`collectors.adjustments.adjust` for `caller` in a unit of work (run again when a
    concurrent request under the same key won the race); a refusal raised as the service's
    `AdjustmentError`."""
    ctx = request.app.state.ctx
    actor = Actor(caller.actor, request_id_of(request))

    def work(session: Session, attempt: int) -> adjustments.AdjustmentOutcome:
        return adjustments.adjust(
            session,
            wanted,
            actor=actor,
            role=caller.role,
            settings=ctx.settings,
            now=clock.utc_now(),
        )

    return await run_sync(ctx.limiter, ctx.db.run_in_unit_of_work, work)


@router.post(
    "/collectors/{number}/adjustments",
    summary="Adjust a collector's miles (credit or debit), with a reason and a note; audited",
    description="Posts one balanced pair: the collector against the program's `ADJUSTMENTS` "
    "account. `Idempotency-Key` is required (scoped to the caller): the same key and body "
    "answer the same adjustment again with `Idempotent-Replayed: true`; another body is 422. "
    "Agent up to `REWARDMILES_ADJUSTMENT_AGENT_LIMIT_MILES` (1,000) either way, admin above. "
    "A collector ON_HOLD or CLOSED takes FRAUD and CORRECTION adjustments only; a debit "
    "follows the negative-balance policy.",
    status_code=201,
    response_model=AdjustmentOut,
    responses=admin_problem_responses(
        *auth_problems_unsafe(OperatorRole.AGENT),
        "COLLECTOR_NUMBER_INVALID",
        *BODY_PROBLEMS,
        "IDEMPOTENCY_KEY_INVALID",
        "INSUFFICIENT_BALANCE",
        "NOT_FOUND",
        "ADJUSTMENT_COLLECTOR_INACTIVE",
        "IDEMPOTENCY_KEY_REUSED",
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/AdjustmentBody"}}
            },
        }
    },
)
async def collector_adjust(request: Request, number: str = NUMBER) -> Response:
    caller = await require(request, OperatorRole.AGENT)
    _number(number)
    key = parse_key(request.headers.get("idempotency-key"))
    if key is None:
        raise ProblemError(
            "FIELD_REQUIRED", "An adjustment needs an Idempotency-Key.", field="Idempotency-Key"
        )
    obj = await read_json_object(request, BODY_BYTES_MAX)
    body = validate_body(AdjustmentBody, obj, context={}, rules=ADJUSTMENT_RULES, codes={})
    ctx = request.app.state.ctx
    wanted = AdjustmentRequest(number, body.miles, body.reason, body.note, key)
    try:
        outcome = await adjust_collector(request, caller, wanted)
    except OperatorError as exc:
        raise collector_refusal(exc) from exc
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return json_response(
        201, _adjustment(outcome.adjustment, ctx.settings.program_time_zone), headers=headers
    )


def _day(raw: str | None, name: str) -> date | None:
    if raw is None:
        return None
    try:
        return clock.parse_transaction_day(raw)
    except ValueError as exc:
        raise ProblemError("FIELD_INVALID", f"{name} {exc}", field=name) from None


def encode_list_cursor(made: StoredAdjustment) -> str:
    return b64url(f"{made.created_at.isoformat()}|{made.id}".encode())


def decode_list_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        text = unb64url(cursor).decode("ascii")
        moment, ident = text.split("|")
        if not re.fullmatch(r"[0-9a-f-]{36}", ident) or b64url(text.encode()) != cursor:
            raise ValueError(cursor)
        at = datetime.fromisoformat(moment)
        if at.tzinfo is None:
            raise ValueError(cursor)
    except ValueError:
        raise _bad_cursor() from None
    return at, ident


@router.get(
    "/adjustments",
    summary="Adjustments, oldest first, by Transaction Day and operator",
    description="`from` and `to` are days (YYYY-MM-DD, program time zone), both included; "
    "`operator` the audit log's name of who made them (an e-mail, `token:NAME`, `cli@HOST`). "
    "Any role.",
    response_model=AdjustmentPage,
    responses=admin_problem_responses(
        *auth_problems(OperatorRole.VIEWER), "FIELD_INVALID", "CURSOR_INVALID"
    ),
)
async def adjustment_list(
    request: Request,
    from_: str | None = Query(None, alias="from", description="First day, YYYY-MM-DD."),
    to: str | None = Query(None, description="Last day, YYYY-MM-DD."),
    operator: str | None = Query(None, description="Who made them."),
    limit: str | None = LIMIT,
    cursor: str | None = CURSOR,
) -> Response:
    await require(request, OperatorRole.VIEWER)
    ctx = request.app.state.ctx
    zone = ctx.settings.program_time_zone
    first, last = _day(from_, "from"), _day(to, "to")
    start = None if first is None else clock.transaction_day_bounds(first, zone)[0]
    end = None if last is None else clock.transaction_day_bounds(last, zone)[1]
    size = _limit(limit)
    after = None if cursor is None else decode_list_cursor(cursor)

    def read() -> list[StoredAdjustment]:
        with ctx.db.reader() as session:
            return adjustments.list_adjustments(session, start, end, operator, after, size + 1)

    rows = await run_sync(ctx.limiter, read)
    shown = rows[:size]
    return json_response(
        200,
        {
            "items": [_adjustment(made, zone) for made in shown],
            "nextCursor": encode_list_cursor(shown[-1]) if len(rows) > size else None,
        },
    )
