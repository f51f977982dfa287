"""`/admin/v1` routes of the support desk's look-ups: failed partner requests by request id,
transactions (search and detail), pending lines and their review (one or in bulk), the operator
audit log. Each: authenticate and check the role, parse, call one `support.service` function in
a unit of work (or a reader), answer. Lists are cursor pages: `?cursor=&limit=`, answered as
`{"items": [...], "nextCursor": str|null}`; a cursor is opaque (base64url of the last item's
key)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.responses import Response

from rewardmiles import clock, limits
from rewardmiles.admin.boundary import BODY_PROBLEMS
from rewardmiles.collectors import service as collectors
from rewardmiles.errors import ProblemError
from rewardmiles.http import pages
from rewardmiles.http.bodies import read_json_object
from rewardmiles.http.middleware import request_id_of
from rewardmiles.http.openapi import admin_problem_responses
from rewardmiles.http.responses import json_response
from rewardmiles.http.threads import run_sync
from rewardmiles.http.validation import validate_body
from rewardmiles.operators.access import auth_problems, auth_problems_unsafe, require
from rewardmiles.operators.service import Actor, Caller
from rewardmiles.support import service as support
from rewardmiles.support.repository import TransactionFilter
from rewardmiles.vocabulary import (
    Endpoint,
    OperatorRole,
    PendingReason,
    ReviewAction,
    TransactionStatus,
)

router = APIRouter(prefix="/admin/v1", tags=["admin"])

T = TypeVar("T")
Note = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=limits.review_note_chars_max)
]
LineId = Annotated[str, StringConstraints(strict=True, min_length=3, max_length=64)]


class ReviewRequest(BaseModel):
    """The body of `POST /admin/v1/pending/{lineId}/approve` or `/reject` (optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    note: Note | None = None


class BulkReviewRequest(BaseModel):
    """The body of `POST /admin/v1/pending/bulk`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    action: ReviewAction
    lineIds: list[LineId] = Field(  # noqa: N815
        min_length=1, max_length=limits.pending_bulk_lines_max
    )
    note: Note | None = None


REVIEW_RULES = {
    "note": f"must be a string of 1 to {limits.review_note_chars_max} characters",
    "action": "must be approve or reject",
    "lineIds": f"must be a list of 1 to {limits.pending_bulk_lines_max} line ids "
    "(TRANSACTION_ID:LINE_NO)",
}
QUERY_PROBLEMS = ("VALIDATION_FAILED", *pages.PAGE_PROBLEMS)


# --------------------------------------------------------------------------- parsing


def _invalid(field: str, detail: str) -> ProblemError:
    return ProblemError("FIELD_INVALID", detail, field=field)


def _moment(value: str | None, field: str) -> datetime | None:
    """An RFC 3339 date-time with its offset (`2026-11-25T10:00:00Z`), in UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise _invalid(field, f"{field} is an RFC 3339 date-time with its offset.")
    return moment.astimezone(UTC)


def _next(key: tuple[Any, ...] | None) -> str | None:
    return None if key is None else pages.encode_key(key)


def choice(value: str | None, field: str, words: type[T]) -> T | None:
    if value is None:
        return None
    try:
        return words(value)  # type: ignore[call-arg]
    except ValueError:
        allowed = ", ".join(str(w) for w in words)  # type: ignore[attr-defined]
        raise _invalid(field, f"{field} is one of {allowed}.") from None


def _page(items: list[dict[str, Any]], cursor: str | None) -> Response:
    return json_response(200, {"items": items, "nextCursor": cursor})


async def _read(request: Request, work: Callable[..., T], *args: Any) -> T:
    ctx = request.app.state.ctx

    def run() -> T:
        with ctx.db.reader() as session:
            return work(session, *args)

    return await run_sync(ctx.limiter, run)


def _zone(request: Request) -> str:
    return str(request.app.state.ctx.settings.program_time_zone)


def _actor(request: Request, caller: Caller) -> Actor:
    return Actor(caller.actor, request_id_of(request))


# --------------------------------------------------------------------------- failed requests


@router.get(
    "/requests/{requestId}",
    summary="A failed partner request, by the requestId of its problem document",
    description="Every partner call (`/checkout/…`, `/oauth/token`) answered 4xx or 5xx is kept "
    "`REWARDMILES_REQUEST_FAILURE_RETENTION_DAYS` (90) days: when, the client (if it was "
    "authenticated), method, path, status, and the problem's code, detail and field (the "
    "first error's). Written a fraction of a second after the answer. Any role (a collector "
    "number in the detail masked for a viewer).",
    responses=admin_problem_responses(
        *auth_problems(OperatorRole.VIEWER), *QUERY_PROBLEMS, "NOT_FOUND"
    ),
)
async def failed_request(
    request: Request,
    requestId: str = Path(  # noqa: N803
        description="The problem document's `requestId` (the `X-Request-Id` answered).",
        max_length=64,
    ),
) -> Response:
    caller = await require(request, OperatorRole.VIEWER)
    full = caller.may(OperatorRole.AGENT)
    ctx = request.app.state.ctx

    def read() -> dict[str, Any] | None:
        with ctx.db.reader() as session:
            return support.failed_request(session, requestId, _zone(request), full_numbers=full)

    found = await run_sync(ctx.limiter, read)
    if found is None:
        raise ProblemError("NOT_FOUND", f"No failed partner request {requestId} is kept.")
    return json_response(200, found)


# --------------------------------------------------------------------------- transactions


@router.get(
    "/transactions",
    summary="Search transactions, newest first",
    description="Filters combine (AND). `from` (inclusive) and `to` (exclusive) bound the time "
    "the service processed the call (RFC 3339 with offset). Collector numbers are masked "
    "(`123*****901`). Any role.",
    responses=admin_problem_responses(
        *auth_problems(OperatorRole.VIEWER), *QUERY_PROBLEMS, "COLLECTOR_NUMBER_INVALID"
    ),
)
async def transactions(
    request: Request,
    transactionId: str | None = Query(None, max_length=36),  # noqa: N803
    partnerTransactionId: str | None = Query(None, max_length=64),  # noqa: N803
    collector: str | None = Query(None, description="11 digits."),
    sponsor: str | None = Query(None, max_length=10),
    endpoint: str | None = Query(None, description="post, post_event, reverse, …"),
    status: str | None = Query(None, description="posted, pending, rejected, recorded."),
    from_: str | None = Query(None, alias="from"),
    to: str | None = Query(None),
    cursor: pages.Cursor = None,
    limit: pages.Limit = limits.admin_page_items_default,
) -> Response:
    await require(request, OperatorRole.VIEWER)
    if collector is not None and not collectors.COLLECTOR_NUMBER.fullmatch(collector):
        raise ProblemError(
            "COLLECTOR_NUMBER_INVALID",
            f"A collector number is exactly {limits.collector_number_digits} digits.",
            field="collector",
        )
    where = TransactionFilter(
        transaction_id=transactionId,
        partner_transaction_id=partnerTransactionId,
        collector_number=collector,
        sponsor_code=sponsor,
        endpoint=choice(endpoint, "endpoint", Endpoint),
        status=choice(status, "status", TransactionStatus),
        processed_from=_moment(from_, "from"),
        processed_to=_moment(to, "to"),
    )
    key = pages.decode_as(cursor, (datetime, str))
    after = None if key is None else (key[0], key[1])
    page = await _read(request, support.search_transactions, where, after, limit, _zone(request))
    return _page(page.items, _next(page.next_key))


@router.get(
    "/transactions/{transactionId}",
    summary="A transaction: the request as received, the response, lines and their history, "
    "reversals",
    description="The collector number (also in the request and response) in full for an agent "
    "or admin, masked for a viewer. A line's history is what is stored: pending from the call "
    "until it settled, or its status from the call. Any role.",
    responses=admin_problem_responses(
        *auth_problems(OperatorRole.VIEWER), *QUERY_PROBLEMS, "NOT_FOUND"
    ),
)
async def transaction(
    request: Request,
    transactionId: str = Path(max_length=36),  # noqa: N803
) -> Response:
    caller = await require(request, OperatorRole.VIEWER)
    full = caller.may(OperatorRole.AGENT)
    ctx = request.app.state.ctx

    def read() -> dict[str, Any] | None:
        with ctx.db.reader() as session:
            return support.transaction(session, transactionId, _zone(request), full_numbers=full)

    found = await run_sync(ctx.limiter, read)
    if found is None:
        raise ProblemError("NOT_FOUND", f"No transaction {transactionId}.")
    return json_response(200, found)


# --------------------------------------------------------------------------- pending review


@router.get(
    "/pending",
    summary="Pending lines, oldest first",
    description="Each line's sponsor, reason, age (seconds), miles and line id "
    "(`TRANSACTION_ID:LINE_NO`); collector numbers masked. Any role.",
    responses=admin_problem_responses(*auth_problems(OperatorRole.VIEWER), *QUERY_PROBLEMS),
)
async def pending(
    request: Request,
    sponsor: str | None = Query(None, max_length=10),
    reason: str | None = Query(None, description="review, approved, collector_unknown, …"),
    cursor: pages.Cursor = None,
    limit: pages.Limit = limits.admin_page_items_default,
) -> Response:
    await require(request, OperatorRole.VIEWER)
    why = choice(reason, "reason", PendingReason)
    key = pages.decode_as(cursor, (datetime, str, int))
    after = None if key is None else (key[0], key[1], key[2])
    page = await _read(
        request,
        support.pending,
        sponsor,
        why,
        after,
        limit,
        clock.utc_now(),
        _zone(request),
    )
    return _page(page.items, _next(page.next_key))


async def review_lines(
    request: Request,
    caller: Caller,
    action: ReviewAction,
    line_ids: list[str],
    note: str | None,
    at: str,
) -> list[str]:
    """Review `line_ids` in one unit of work; 409 `LINE_NOT_PENDING_REVIEW` at `at` (the
    offending line's place when `at` ends with `[]`) and nothing changed, else the lines."""
    ctx = request.app.state.ctx
    actor = _actor(request, caller)

    def work() -> list[str]:
        with ctx.db.unit_of_work() as session:
            return support.review(session, action, line_ids, note, clock.utc_now(), actor)

    try:
        return await run_sync(ctx.limiter, work)
    except support.LineReviewError as exc:
        field = f"{at[:-2]}[{exc.index}]" if at.endswith("[]") else at
        raise ProblemError(
            "LINE_NOT_PENDING_REVIEW",
            f"{exc}; nothing was changed.",
            field=field,
        ) from None


async def _note(request: Request) -> str | None:
    """The optional body of a one-line review: `{"note": ...}`."""
    if request.headers.get("content-length") in (None, "0") and (
        "transfer-encoding" not in request.headers
    ):
        return None
    obj = await read_json_object(request, limits.admin_body_bytes_max)
    body = validate_body(ReviewRequest, obj, context={}, rules=REVIEW_RULES, codes={})
    return body.note


REVIEW_BODY = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReviewRequest"}}},
    }
}
REVIEW_PROBLEMS = (
    *auth_problems_unsafe(OperatorRole.AGENT),
    *BODY_PROBLEMS,
    "LINE_NOT_PENDING_REVIEW",
)


@router.post(
    "/pending/{lineId}/approve",
    summary="Approve a line held for review; it posts once its collector allows",
    description="Audited (`pending.approve`, the note kept). Agent or admin.",
    responses=admin_problem_responses(*REVIEW_PROBLEMS),
    openapi_extra=REVIEW_BODY,
)
async def approve(request: Request, lineId: str = Path(max_length=64)) -> Response:  # noqa: N803
    caller = await require(request, OperatorRole.AGENT)
    note = await _note(request)
    await review_lines(request, caller, ReviewAction.APPROVE, [lineId], note, "lineId")
    return json_response(200, {"lineId": lineId, "action": ReviewAction.APPROVE, "note": note})


@router.post(
    "/pending/{lineId}/reject",
    summary="Reject a line held for review (REVIEW_REJECTED)",
    description="The partner sees `REVIEW_REJECTED` as the line's errorCode. Audited "
    "(`pending.reject`, the note kept). Agent or admin.",
    responses=admin_problem_responses(*REVIEW_PROBLEMS),
    openapi_extra=REVIEW_BODY,
)
async def reject(request: Request, lineId: str = Path(max_length=64)) -> Response:  # noqa: N803
    caller = await require(request, OperatorRole.AGENT)
    note = await _note(request)
    await review_lines(request, caller, ReviewAction.REJECT, [lineId], note, "lineId")
    return json_response(200, {"lineId": lineId, "action": ReviewAction.REJECT, "note": note})


@router.post(
    "/pending/bulk",
    summary="Approve or reject up to 500 lines held for review, all or nothing",
    description="One unit of work: when any line is not found, not pending review or named "
    "twice, nothing changes and the 409 problem's field names it (`lineIds[i]`). One audit "
    "entry per line. Agent or admin.",
    responses=admin_problem_responses(*REVIEW_PROBLEMS),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/BulkReviewRequest"}}
            },
        }
    },
)
async def bulk(request: Request) -> Response:
    caller = await require(request, OperatorRole.AGENT)
    obj = await read_json_object(request, limits.admin_body_bytes_max)
    body = validate_body(BulkReviewRequest, obj, context={}, rules=REVIEW_RULES, codes={})
    done = await review_lines(
        request, caller, body.action, list(body.lineIds), body.note, "lineIds[]"
    )
    return json_response(200, {"action": body.action, "lineIds": done, "count": len(done)})


# --------------------------------------------------------------------------- audit log


@router.get(
    "/audit-log",
    summary="The operator audit log, newest first",
    description="`entity` (e.g. `issuance_line`, `operator`, `admin_token`), `entityId`, "
    "`actor` (an e-mail, `token:NAME`, `cli@HOST`), `from`/`to` (RFC 3339, to exclusive). "
    "Any role.",
    responses=admin_problem_responses(*auth_problems(OperatorRole.VIEWER), *QUERY_PROBLEMS),
)
async def audit_log(
    request: Request,
    entity: str | None = Query(None, max_length=limits.audit_entity_chars_max),
    entityId: str | None = Query(None, max_length=limits.audit_entity_id_chars_max),  # noqa: N803
    actor: str | None = Query(None, max_length=limits.audit_actor_chars_max),
    from_: str | None = Query(None, alias="from"),
    to: str | None = Query(None),
    cursor: pages.Cursor = None,
    limit: pages.Limit = limits.admin_page_items_default,
) -> Response:
    await require(request, OperatorRole.VIEWER)
    key = pages.decode_as(cursor, (int,))
    at_from, at_to, zone = _moment(from_, "from"), _moment(to, "to"), _zone(request)
    ctx = request.app.state.ctx

    def read() -> support.Page:
        with ctx.db.reader() as session:
            return support.audit_log(
                session,
                entity=entity,
                entity_id=entityId,
                actor=actor,
                at_from=at_from,
                at_to=at_to,
                before_id=None if key is None else key[0],
                limit=limit,
                zone=zone,
            )

    page = await run_sync(ctx.limiter, read)
    return _page(page.items, _next(page.next_key))
