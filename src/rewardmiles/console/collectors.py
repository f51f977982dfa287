"""The Collector page: find a collector by number; its status (changed by an agent or admin,
after a confirm step), balance, pending lines and ledger history (the admin API's keyset pages of
`ledger.history`, narrowed by sponsor, offer and days), and adjustments of its miles through
`collectors.adjustments` (the admin API's rules, agent limit and idempotency key; the key is made
when the confirm step is shown, so a second submit of it posts nothing more)."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from rewardmiles import clock, limits
from rewardmiles.admin.collectors import (
    ADJUSTMENT_RULES,
    STATUS_RULES,
    AdjustmentBody,
    StatusRequest,
    adjust_collector,
    change_collector_status,
    collector_refusal,
    history_cursor_key,
)
from rewardmiles.collectors import adjustments, service
from rewardmiles.collectors.adjustments import AdjustmentRequest
from rewardmiles.console import web
from rewardmiles.console.web import PREFIX, PageError
from rewardmiles.errors import OperatorError, ProblemError
from rewardmiles.http.threads import run_sync
from rewardmiles.http.validation import validate_body
from rewardmiles.idempotency.service import parse_key
from rewardmiles.ledger import history
from rewardmiles.operators.service import Caller
from rewardmiles.vocabulary import AdjustmentReason, CollectorStatus, OperatorRole

router = APIRouter(include_in_schema=False)

BASE = PREFIX + "/collectors"
PAGE_ENTRIES = limits.admin_page_items_default
SPONSOR = re.compile(limits.sponsor_code_pattern)
OFFER = re.compile(limits.offer_code_pattern)


# --------------------------------------------------------------------------- parsing


def _number(raw: str) -> str:
    if not service.COLLECTOR_NUMBER.fullmatch(raw):
        raise PageError(
            400,
            "Invalid collector number",
            f"A collector number is exactly {limits.collector_number_digits} digits.",
            "COLLECTOR_NUMBER_INVALID",
        )
    return raw


@dataclass(frozen=True)
class LedgerQuery:
    """The history's filter as the page's query string has it (kept in every link)."""

    sponsor: str = ""
    offer: str = ""
    first: str = ""  # YYYY-MM-DD, program time zone, included
    last: str = ""  # included

    def params(self) -> dict[str, str]:
        named = {"sponsor": self.sponsor, "offer": self.offer, "from": self.first, "to": self.last}
        return {k: v for k, v in named.items() if v}

    def narrows(self) -> bool:
        return bool(self.params())


def _ledger_query(request: Request) -> tuple[LedgerQuery, history.HistoryFilter]:
    params = request.query_params
    query = LedgerQuery(
        params.get("sponsor", "").strip(),
        params.get("offer", "").strip(),
        params.get("from", "").strip(),
        params.get("to", "").strip(),
    )
    if query.sponsor and not SPONSOR.fullmatch(query.sponsor):
        raise PageError(
            400,
            "Invalid filter",
            f"Sponsor is a sponsor code of {limits.sponsor_code_chars_min} to "
            f"{limits.sponsor_code_chars_max} capital letters or digits.",
            "FIELD_INVALID",
        )
    if query.offer and not OFFER.fullmatch(query.offer):
        raise PageError(
            400,
            "Invalid filter",
            f"Offer is an offer code of 1 to {limits.offer_code_chars_max} capital letters or "
            "digits.",
            "FIELD_INVALID",
        )
    zone = str(request.app.state.ctx.settings.program_time_zone)
    first, last = web.day_of(query.first, "From"), web.day_of(query.last, "To")
    if first is not None and last is not None and last < first:
        raise PageError(400, "Invalid filter", "To is before From.", "FIELD_INVALID")
    where = history.HistoryFilter(
        sponsor_code=query.sponsor or None,
        offer_code=query.offer or None,
        posted_from=None if first is None else clock.transaction_day_bounds(first, zone)[0],
        posted_to=None if last is None else clock.transaction_day_bounds(last, zone)[1],
    )
    return query, where


# --------------------------------------------------------------------------- reads


@dataclass(frozen=True)
class Ledger:
    entries: list[history.HistoryEntry]
    cursor: str | None  # the next page's


def _cursor_key(request: Request, where: history.HistoryFilter) -> bytes:
    """The admin API's history cursor key, or for a filtered list a key of that filter: a
    filtered page's cursor (whose balance is no balance) continues only the same filter."""
    key = history_cursor_key(request)
    if not where.narrows():
        return key
    return hmac.new(key, f"history-filter:{where!r}".encode(), hashlib.sha256).digest()


async def _ledger(
    request: Request, number: str, cursor: str | None, where: history.HistoryFilter
) -> Ledger:
    """One page of the history, as `GET /admin/v1/collectors/{number}/ledger` reads it."""
    key = _cursor_key(request, where)
    after = None
    if cursor:
        try:
            after = history.decode_cursor(key, number, cursor)
        except history.CursorError:
            raise PageError(
                400,
                "Invalid cursor",
                "This cursor was not given by this list; start again.",
                "CURSOR_INVALID",
            ) from None
    ctx = request.app.state.ctx

    def read() -> history.HistoryPage | None:
        with ctx.db.snapshot_reader() as session:
            return history.page(session, number, PAGE_ENTRIES, after, where)

    found = await run_sync(ctx.limiter, read)
    if found is None:
        raise PageError(404, "Not found", f"No collector {number}.", "NOT_FOUND")
    following = found.next_position
    return Ledger(
        found.entries,
        None if following is None else history.encode_cursor(key, number, following),
    )


async def _overview(request: Request, number: str) -> service.CollectorOverview:
    found = await web.read(request, lambda s: service.overview(s, number))
    if found is None:
        raise PageError(404, "Not found", f"No collector {number}.", "NOT_FOUND")
    return found


def _ledger_links(number: str, query: LedgerQuery, cursor: str | None) -> dict[str, str | None]:
    if cursor is None:
        return {"more_fragment": None, "more_page": None}
    params = urlencode({**query.params(), "cursor": cursor})
    base = f"{BASE}/{web.templates.filters['urlpart'](number)}"
    return {"more_fragment": f"{base}/ledger?{params}", "more_page": f"{base}?{params}#history"}


async def _page(
    request: Request,
    caller: Caller,
    number: str,
    *,
    status: int = 200,
    adjustment: dict[str, Any] | None = None,
    status_change: dict[str, Any] | None = None,
) -> Response:
    query, where = _ledger_query(request)
    found = await _overview(request, number)
    cursor = request.query_params.get("cursor") or None
    ledger = await _ledger(request, number, cursor, where)
    settings = request.app.state.ctx.settings
    return web.render(
        request,
        "collector.html",
        {
            "collector": found,
            "entries": ledger.entries,
            **_ledger_links(number, query, ledger.cursor),
            "query": query,
            "paged": cursor is not None,
            "may_act": caller.may(OperatorRole.AGENT),
            "reasons": list(AdjustmentReason),
            "statuses": list(CollectorStatus),
            "agent_limit": settings.adjustment_agent_limit_miles,
            "is_admin": caller.may(OperatorRole.ADMIN),
            "adjustment": adjustment or {"fields": {}, "errors": {}, "confirm": None},
            "status_change": status_change or {"fields": {}, "errors": {}, "confirm": None},
            "note_max": limits.adjustment_note_chars_max,
        },
        caller=caller,
        status=status,
    )


# --------------------------------------------------------------------------- pages


@router.get(BASE)
async def search(request: Request) -> Response:
    caller = await web.signed_in(request, OperatorRole.VIEWER)
    raw = request.query_params.get("number")
    error = None
    if raw is not None:
        wanted = raw.strip()
        if service.COLLECTOR_NUMBER.fullmatch(wanted):
            found = await web.read(request, lambda s: service.get_collector(s, wanted))
            if found is not None:
                return web.redirect(f"{BASE}/{wanted}")
            error = f"No collector {wanted}."
        else:
            error = f"A collector number is exactly {limits.collector_number_digits} digits."
    return web.render(
        request,
        "collector_search.html",
        {"number": raw or "", "error": error},
        caller=caller,
        status=200 if error is None else (404 if error.startswith("No ") else 400),
    )


@router.get(BASE + "/{number}")
async def collector(request: Request, number: str) -> Response:
    caller = await web.signed_in(request, OperatorRole.VIEWER)
    return await _page(request, caller, _number(number))


@router.get(BASE + "/{number}/ledger")
async def ledger_rows(request: Request, number: str) -> Response:
    """The next page of the history: its rows for htmx, else the whole page from there."""
    caller = await web.signed_in(request, OperatorRole.VIEWER)
    _number(number)
    if not web.is_htmx(request):
        return await _page(request, caller, number)
    query, where = _ledger_query(request)
    ledger = await _ledger(request, number, request.query_params.get("cursor") or None, where)
    return web.render(
        request,
        "collector_ledger_rows.html",
        {"entries": ledger.entries, **_ledger_links(number, query, ledger.cursor)},
        caller=caller,
    )


# --------------------------------------------------------------------------- adjustments


def _field_errors(exc: ProblemError) -> dict[str, str]:
    found: dict[str, str] = {}
    for error in exc.errors:
        found.setdefault(error.field or "", error.message)
    if not found:
        found[""] = exc.detail
    return found


def _checked_adjustment(
    fields: dict[str, list[str]],
) -> tuple[dict[str, str], AdjustmentBody | None, dict[str, str]]:
    """The form's values, the body the admin API would take (None when invalid), the errors by
    field."""
    values = {name: web.one(fields, name, required=False) for name in ("miles", "reason", "note")}
    errors: dict[str, str] = {}
    miles: Any = values["miles"]
    if not re.fullmatch(r"[+-]?[0-9]{1,12}", values["miles"]):
        errors["miles"] = (
            "Miles " + ADJUSTMENT_RULES["miles"].replace("JSON integer", "whole number") + "."
        )
        miles = 0
    else:
        miles = int(values["miles"])
    try:
        body = validate_body(
            AdjustmentBody,
            {"miles": miles, "reason": values["reason"], "note": values["note"]},
            context={},
            rules=ADJUSTMENT_RULES,
            codes={},
        )
    except ProblemError as exc:
        for field, message in _field_errors(exc).items():
            errors.setdefault(field, f"{field.capitalize()} {message}." if field else message)
        return values, None, errors
    return values, (None if errors else body), errors


@router.post(BASE + "/{number}/adjustments")
async def adjust(request: Request, number: str) -> Response:
    """First post: the confirm step (the balance after, a new idempotency key). Second post
    (`confirm=1`, the key): the adjustment, once."""
    caller = await web.signed_in(request, OperatorRole.AGENT)
    _number(number)
    fields = await web.form(request)
    values, body, errors = _checked_adjustment(fields)
    if body is None:
        return await _page(
            request,
            caller,
            number,
            status=400,
            adjustment={"fields": values, "errors": errors, "confirm": None},
        )
    ctx = request.app.state.ctx
    if web.one(fields, "confirm", required=False) != "1":
        found = await _overview(request, number)
        try:
            adjustments.check_role(body.miles, caller.role, ctx.settings)
        except OperatorError as exc:
            problem = collector_refusal(exc)
            return await _page(
                request,
                caller,
                number,
                status=problem.spec.status,
                adjustment={"fields": values, "errors": {"miles": problem.detail}, "confirm": None},
            )
        confirm = {
            "balance_before": found.balance_miles,
            "balance_after": found.balance_miles + body.miles,
            "key": str(uuid.uuid4()),
        }
        return await _page(
            request,
            caller,
            number,
            adjustment={"fields": values, "errors": {}, "confirm": confirm},
        )
    try:
        key = parse_key(web.one(fields, "key"))
    except ProblemError as exc:
        raise PageError(400, "Invalid form", exc.detail, exc.code) from None
    assert key is not None
    wanted = AdjustmentRequest(number, body.miles, body.reason, body.note, key)
    try:
        outcome = await adjust_collector(request, caller, wanted)
    except OperatorError as exc:
        problem = collector_refusal(exc)
        field = problem.errors[0].field if problem.errors else None
        return await _page(
            request,
            caller,
            number,
            status=problem.spec.status,
            adjustment={
                "fields": values,
                "errors": {field if field in ("miles", "reason", "note") else "": problem.detail},
                "confirm": None,
            },
        )
    made = outcome.adjustment
    said = "already made" if outcome.replayed else "made"
    done = f"Adjustment of {made.miles:+,} miles {said}; balance {made.balance_after:,}."
    return web.redirect(f"{BASE}/{number}?{urlencode(web.done_query(caller, done))}")


# --------------------------------------------------------------------------- status


@router.post(BASE + "/{number}/status")
async def change_status(request: Request, number: str) -> Response:
    """First post: the confirm step (from and to). Second post (`confirm=1`): the change,
    audited as the admin API's."""
    caller = await web.signed_in(request, OperatorRole.AGENT)
    _number(number)
    fields = await web.form(request)
    values = {"status": web.one(fields, "status", required=False)}
    values["note"] = web.one(fields, "note", required=False)
    try:
        body = validate_body(
            StatusRequest,
            {"status": values["status"], "note": values["note"] or None},
            context={},
            rules=STATUS_RULES,
            codes={},
        )
    except ProblemError as exc:
        errors = {f: f"{f.capitalize()} {m}." for f, m in _field_errors(exc).items()}
        return await _page(
            request,
            caller,
            number,
            status=400,
            status_change={"fields": values, "errors": errors, "confirm": None},
        )
    if web.one(fields, "confirm", required=False) != "1":
        found = await _overview(request, number)
        return await _page(
            request,
            caller,
            number,
            status_change={
                "fields": values,
                "errors": {},
                "confirm": {"before": found.status, "after": body.status},
            },
        )
    try:
        before = await change_collector_status(request, caller, number, body)
    except OperatorError as exc:
        problem = collector_refusal(exc)
        raise PageError(
            problem.spec.status, problem.spec.title, problem.detail, problem.code
        ) from None
    if before is None:
        raise PageError(404, "Not found", f"No collector {number}.", "NOT_FOUND")
    done = f"Status changed from {before} to {body.status}."
    return web.redirect(f"{BASE}/{number}?{urlencode(web.done_query(caller, done))}")
