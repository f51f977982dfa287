"""Audit log: who changed what, newest first, filtered by operator, entity (and entity id) and
day (the program's), paged with the admin API's cursor (`GET /admin/v1/audit-log`'s query). Any
role."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from rewardmiles import clock, limits
from rewardmiles.console import web
from rewardmiles.http import pages
from rewardmiles.support import service as support
from rewardmiles.vocabulary import OperatorRole

router = APIRouter(include_in_schema=False)

PATH = web.PREFIX + "/audit-log"
PAGE_ITEMS = limits.admin_page_items_default


@dataclass
class Filters:
    operator: str = ""
    entity: str = ""
    entity_id: str = ""
    day: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    on: date | None = None

    def query(self, **more: str) -> str:
        kept = {
            "operator": self.operator,
            "entity": self.entity,
            "entity_id": self.entity_id,
            "day": self.day,
            **more,
        }
        encoded = urlencode({k: v for k, v in kept.items() if v})
        return PATH + ("?" + encoded if encoded else "")


@dataclass(frozen=True)
class TextFilter:
    label: str
    chars_max: int  # the admin API's (`GET /admin/v1/audit-log`)
    size: int
    placeholder: str = ""


TEXT_FILTERS = {
    "operator": TextFilter(
        "Operator", limits.audit_actor_chars_max, 28, "e-mail, token:NAME, cli@HOST"
    ),
    "entity": TextFilter("Entity", limits.audit_entity_chars_max, 16, "issuance_line, operator…"),
    "entity_id": TextFilter("Entity id", limits.audit_entity_id_chars_max, 24),
}


def _filters(request: Request) -> Filters:
    params = request.query_params
    found = Filters(
        operator=(params.get("operator") or "").strip(),
        entity=(params.get("entity") or "").strip(),
        entity_id=(params.get("entity_id") or "").strip(),
        day=(params.get("day") or "").strip(),
    )
    for name, text in TEXT_FILTERS.items():
        if len(getattr(found, name)) > text.chars_max:
            found.errors[name] = f"{text.label} is at most {text.chars_max} characters."
    if found.day:
        try:
            found.on = web.day_of(found.day, "Day")
        except web.PageError as exc:
            found.errors["day"] = exc.detail
    return found


def _fields(state: Any) -> dict[str, Any]:
    if state is None:
        return {}
    return state if isinstance(state, dict) else {"value": state}


def _change(entry: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(field, before, after, changed) of an entry's before and after states, each value as
    JSON."""
    before, after = _fields(entry["before"]), _fields(entry["after"])
    rows = []
    for name in [*before, *(k for k in after if k not in before)]:
        rows.append(
            (
                name,
                json.dumps(before[name], ensure_ascii=False) if name in before else "",
                json.dumps(after[name], ensure_ascii=False) if name in after else "",
                before.get(name) != after.get(name) or (name in before) != (name in after),
            )
        )
    return rows


@router.get(PATH)
async def audit_log_page(request: Request) -> Response:
    caller = await web.signed_in(request, OperatorRole.VIEWER)
    filters = _filters(request)
    cursor = request.query_params.get("cursor") or None
    items: list[dict[str, Any]] = []
    following = None
    status = 200
    if filters.errors:
        status = 400
    else:
        key = pages.decode_as(cursor, (int,))
        zone = str(request.app.state.ctx.settings.program_time_zone)
        at_from, at_to = (
            (None, None) if filters.on is None else clock.transaction_day_bounds(filters.on, zone)
        )
        page = await web.read(
            request,
            lambda s: support.audit_log(
                s,
                entity=filters.entity or None,
                entity_id=filters.entity_id or None,
                actor=filters.operator or None,
                at_from=at_from,
                at_to=at_to,
                before_id=None if key is None else key[0],
                limit=PAGE_ITEMS,
                zone=zone,
            ),
        )
        items = page.items
        if page.next_key is not None:
            following = filters.query(cursor=pages.encode_key(page.next_key))
    for item in items:
        item["changes"] = _change(item)
    return web.render(
        request,
        "audit.html",
        {
            "filters": filters,
            "text_filters": TEXT_FILTERS,
            "items": items,
            "next_url": following,
            "first_url": filters.query() if cursor else None,
            "paged": cursor is not None,
        },
        caller=caller,
        status=status,
    )
