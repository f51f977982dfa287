"""Pending review: the lines pending, filtered by sponsor, reason and age (the admin API's
`GET /admin/v1/pending` query), and their review in bulk (`POST /admin/v1/pending/bulk`'s: at
most 500 lines, all or nothing, one audit entry per line; agent or admin).

The bulk form posts with htmx and gets the refreshed list back as a fragment, with what was done
or why nothing was; without JavaScript it posts normally and is sent back to the list (303) with
the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from rewardmiles import clock, limits
from rewardmiles.admin import support as admin_support
from rewardmiles.console import web
from rewardmiles.errors import ProblemError
from rewardmiles.http import pages
from rewardmiles.http.validation import validate_body
from rewardmiles.operators.service import Caller
from rewardmiles.support import service as support
from rewardmiles.vocabulary import OperatorRole, PendingReason, ReviewAction

router = APIRouter(include_in_schema=False)

PATH = web.PREFIX + "/pending"
BULK_PATH = PATH + "/bulk"

# "Older than": the form's choices, each an age a line's call was processed before.
AGES: dict[str, tuple[str, timedelta]] = {
    "1h": ("1 hour", timedelta(hours=1)),
    "1d": ("1 day", timedelta(days=1)),
    "3d": ("3 days", timedelta(days=3)),
    "7d": ("7 days", timedelta(days=7)),
}
PAGE_SIZES = (limits.admin_page_items_default, 100, 200, limits.pending_bulk_lines_max)
FIELD_LABELS = {"action": "Action", "lineIds": "Lines", "note": "Note"}


@dataclass
class Filters:
    """The list's filters as sent (for the form and the links) and as read."""

    sponsor: str = ""
    reason: str = ""
    age: str = ""
    limit: str = ""
    cursor: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    why: PendingReason | None = None
    older_than: timedelta | None = None
    size: int = limits.admin_page_items_default
    after: tuple[datetime, str, int] | None = None

    def query(self, **more: str) -> str:
        """The list's URL with these filters (the cursor left out) and `more`."""
        kept = {
            "sponsor": self.sponsor,
            "reason": self.reason,
            "age": self.age,
            "limit": self.limit,
            **more,
        }
        encoded = urlencode({k: v for k, v in kept.items() if v})
        return PATH + ("?" + encoded if encoded else "")


def _filters(get: Any) -> Filters:
    """The filters of a query string or form (`get(name)` → its value or None); what is wrong
    with them in `errors`, by field."""
    found = Filters(
        sponsor=(get("sponsor") or "").strip().upper(),
        reason=(get("reason") or "").strip(),
        age=(get("age") or "").strip(),
        limit=(get("limit") or "").strip(),
        cursor=(get("cursor") or "").strip(),
    )
    if len(found.sponsor) > limits.sponsor_code_chars_max:
        found.errors["sponsor"] = (
            f"A sponsor code has at most {limits.sponsor_code_chars_max} characters."
        )
    if found.reason:
        try:
            found.why = admin_support.choice(found.reason, "reason", PendingReason)
        except ProblemError as exc:
            found.errors["reason"] = exc.detail
    if found.age:
        if found.age not in AGES:
            found.errors["age"] = "Older than is one of " + ", ".join(AGES) + "."
        else:
            found.older_than = AGES[found.age][1]
    if found.limit:
        try:
            size = int(found.limit)
        except ValueError:
            size = 0
        if not 1 <= size <= limits.admin_page_items_max:
            found.errors["limit"] = (
                f"Lines per page is a number from 1 to {limits.admin_page_items_max}."
            )
        else:
            found.size = size
    try:
        key = pages.decode_as(found.cursor or None, (datetime, str, int))
    except ProblemError as exc:
        found.errors["cursor"] = exc.detail
    else:
        found.after = None if key is None else (key[0], key[1], key[2])
    return found


@dataclass
class Outcome:
    """What a bulk review did, or why it did nothing, for the list shown after it."""

    done: str | None = None
    problem: str | None = None
    selected: list[str] = field(default_factory=list)
    note: str = ""


async def _listing(request: Request, filters: Filters) -> tuple[list[dict[str, Any]], str | None]:
    """The page of pending lines the filters select, and the next page's URL."""
    if filters.errors:
        return [], None
    now = clock.utc_now()
    zone = str(request.app.state.ctx.settings.program_time_zone)
    before = None if filters.older_than is None else now - filters.older_than
    page = await web.read(
        request,
        lambda s: support.pending(
            s,
            filters.sponsor or None,
            filters.why,
            filters.after,
            filters.size,
            now,
            zone,
            processed_before=before,
        ),
    )
    following = (
        None if page.next_key is None else filters.query(cursor=pages.encode_key(page.next_key))
    )
    return page.items, following


def _done_message(action: ReviewAction, count: int) -> str:
    verb = "Approved" if action is ReviewAction.APPROVE else "Rejected"
    return f"{verb} {count} line{'' if count == 1 else 's'}."


async def _page(
    request: Request,
    caller: Caller,
    filters: Filters,
    outcome: Outcome,
    *,
    fragment: bool,
    status: int = 200,
) -> Response:
    items, following = await _listing(request, filters)
    for item in items:
        item["age"] = web.age_text(item["ageSeconds"])
    if filters.errors and status == 200:
        status = 400
    return web.render(
        request,
        "pending_list.html" if fragment else "pending.html",
        {
            "filters": filters,
            "reasons": list(PendingReason),
            "ages": [(key, label) for key, (label, _) in AGES.items()],
            "sizes": PAGE_SIZES,
            "items": items,
            "next_url": following,
            "first_url": filters.query() if filters.cursor else None,
            "may_review": caller.may(OperatorRole.AGENT),
            "outcome": outcome,
            "note_max": limits.review_note_chars_max,
            "sponsor_max": limits.sponsor_code_chars_max,
            "reviewable": PendingReason.REVIEW.value,
        },
        caller=caller,
        status=status,
    )


@router.get(PATH)
async def pending_page(request: Request) -> Response:
    caller = await web.signed_in(request, OperatorRole.VIEWER)
    params = request.query_params
    filters = _filters(params.get)
    outcome = Outcome()
    try:
        action = ReviewAction(params.get("done", ""))
        count = int(params.get("count", ""))
    except ValueError:
        pass
    else:
        if 1 <= count <= limits.pending_bulk_lines_max:
            outcome.done = _done_message(action, count)
    return await _page(request, caller, filters, outcome, fragment=web.is_htmx(request))


def _problem_text(exc: ProblemError) -> str:
    """A refusal of the bulk form as one sentence per field (`Note: must be …`)."""
    if not exc.errors or exc.errors[0].message == exc.detail:
        return exc.detail
    parts = []
    for error in exc.errors:
        name = (error.field or "").split("[", 1)[0]
        label = FIELD_LABELS.get(name, name)
        parts.append(f"{label}: {error.message}." if label else error.message)
    return " ".join(parts)


@router.post(BULK_PATH)
async def bulk_review(request: Request) -> Response:
    """Approve or reject the lines checked (agent or admin), with the note; then the list."""
    caller = await web.signed_in(request, OperatorRole.AGENT)
    fields = await web.form(request)
    filters = _filters(lambda name: web.one(fields, name, required=False))
    lines = [line.strip() for line in fields.get("line", [])]
    note = web.one(fields, "note", required=False)
    outcome = Outcome(selected=lines, note=note)
    fragment = web.is_htmx(request)
    if filters.errors:
        outcome.problem = "Nothing was changed. " + " ".join(filters.errors.values())
        return await _page(request, caller, filters, outcome, fragment=fragment, status=400)
    if not lines:
        outcome.problem = "Select one or more lines to approve or reject."
        return await _page(request, caller, filters, outcome, fragment=fragment, status=400)
    try:
        body = validate_body(
            admin_support.BulkReviewRequest,
            {
                "action": web.one(fields, "action", required=False) or None,
                "lineIds": lines,
                "note": note or None,
            },
            context={},
            rules=admin_support.REVIEW_RULES,
            codes={},
        )
        done = await admin_support.review_lines(
            request, caller, body.action, list(body.lineIds), body.note, "lineIds[]"
        )
    except ProblemError as exc:
        outcome.problem = _problem_text(exc)
        status = exc.spec.status
        return await _page(request, caller, filters, outcome, fragment=fragment, status=status)
    if not fragment:
        back = filters.query(cursor=filters.cursor, done=body.action, count=str(len(done)))
        return web.redirect(back)
    outcome = Outcome(done=_done_message(body.action, len(done)))
    return await _page(request, caller, filters, outcome, fragment=True)
