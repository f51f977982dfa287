"""The Transaction page: one search box for a transaction id, a partner's transaction id
(`clientTransactionId`) or the request id of a failed partner call, answered by the support
desk's look-ups (`support.search_transactions`, `support.failed_request`); a transaction's detail
as `GET /admin/v1/transactions/{id}` shows it (request, response, lines with their status
history, reversals; collector numbers masked for a viewer)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from rewardmiles.console import web
from rewardmiles.console.web import PREFIX, PageError
from rewardmiles.support import service as support
from rewardmiles.support.repository import TransactionFilter
from rewardmiles.vocabulary import OperatorRole

router = APIRouter(include_in_schema=False)

BASE = PREFIX + "/transactions"
QUERY_CHARS_MAX = 64  # the longest of the three: a partner's id or a request id
TRANSACTION_ID_CHARS_MAX = 36
MATCHES_MAX = 50


def _zone(request: Request) -> str:
    return str(request.app.state.ctx.settings.program_time_zone)


def _pretty(value: Any) -> str | None:
    return None if value is None else json.dumps(value, indent=2, ensure_ascii=False)


def _found(session: Session, text: str, zone: str, full: bool) -> dict[str, Any]:
    """The transactions whose id or partner id is `text` (newest first, each once) and the
    failed partner request kept under it."""
    matches: list[dict[str, Any]] = []
    wheres = [TransactionFilter(partner_transaction_id=text)]
    if len(text) <= TRANSACTION_ID_CHARS_MAX:
        wheres.insert(0, TransactionFilter(transaction_id=text))
    seen: set[str] = set()
    for where in wheres:
        for item in support.search_transactions(session, where, None, MATCHES_MAX, zone).items:
            if item["transactionId"] not in seen:
                seen.add(item["transactionId"])
                matches.append(item)
    failed = support.failed_request(session, text, zone, full_numbers=full)
    return {"matches": matches, "failed": failed}


@router.get(BASE)
async def search(request: Request) -> Response:
    caller = await web.signed_in(request, OperatorRole.VIEWER)
    text = request.query_params.get("q", "").strip()
    context: dict[str, Any] = {
        "q": text,
        "query_max": QUERY_CHARS_MAX,
        "error": None,
        "matches": [],
        "failed": None,
    }
    if not text:
        return web.render(request, "transaction_search.html", context, caller=caller)
    if len(text) > QUERY_CHARS_MAX or not all(" " < ch <= "~" for ch in text):
        context["error"] = (
            f"Enter an id of 1 to {QUERY_CHARS_MAX} printable characters without spaces."
        )
        return web.render(request, "transaction_search.html", context, caller=caller, status=400)
    full = caller.may(OperatorRole.AGENT)
    zone = _zone(request)
    found = await web.read(request, lambda s: _found(s, text, zone, full))
    matches, failed = found["matches"], found["failed"]
    if len(matches) == 1 and failed is None:
        return web.redirect(
            f"{BASE}/{web.templates.filters['urlpart'](matches[0]['transactionId'])}"
        )
    context.update(matches=matches, failed=failed)
    if not matches and failed is None:
        context["error"] = f"No transaction or failed request has the id {text}."
        return web.render(request, "transaction_search.html", context, caller=caller, status=404)
    return web.render(request, "transaction_search.html", context, caller=caller)


@router.get(BASE + "/{transaction_id}")
async def detail(request: Request, transaction_id: str) -> Response:
    caller = await web.signed_in(request, OperatorRole.VIEWER)
    if len(transaction_id) > TRANSACTION_ID_CHARS_MAX:
        raise PageError(
            400,
            "Invalid transaction id",
            f"A transaction id has at most {TRANSACTION_ID_CHARS_MAX} characters.",
            "FIELD_INVALID",
        )
    full = caller.may(OperatorRole.AGENT)
    zone = _zone(request)
    found = await web.read(
        request, lambda s: support.transaction(s, transaction_id, zone, full_numbers=full)
    )
    if found is None:
        raise PageError(404, "Not found", f"No transaction {transaction_id}.", "NOT_FOUND")
    return web.render(
        request,
        "transaction.html",
        {
            "t": found,
            "full_numbers": full,
            "request_json": _pretty(found["request"]),
            "response_json": _pretty(found["response"]),
            "calculation_json": _pretty(found["calculation"]),
        },
        caller=caller,
    )
