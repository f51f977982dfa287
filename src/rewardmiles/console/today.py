"""The Today page: a Transaction Day at a glance (`support.today`), the current day by default,
refreshed every 30 s while it is the current day."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from rewardmiles import clock
from rewardmiles.console import web
from rewardmiles.support import today
from rewardmiles.vocabulary import OperatorRole

router = APIRouter(include_in_schema=False)

REFRESH_SECONDS = 30


@router.get(web.PREFIX + "/today")
async def today_page(request: Request) -> Response:
    caller = await web.signed_in(request, OperatorRole.VIEWER)
    zone = str(request.app.state.ctx.settings.program_time_zone)
    now = clock.utc_now()
    current = clock.transaction_day_of(now, zone)
    day = web.day_of(request.query_params.get("day"), "day") or current
    full = caller.may(OperatorRole.AGENT)
    closed = request.app.state.ctx.closed_hours
    glance = await web.read(
        request,
        lambda s: today.day_glance(s, day, zone, full_numbers=full, now=now, closed=closed),
    )
    return web.render(
        request,
        "today.html",
        {
            "glance": glance,
            "labels": glance.hour_labels(),
            "totals": glance.totals(),
            "chart": glance.chart_data(),
            "outcomes": today.OUTCOMES,
            "is_current": day == current,
            "current_day": current,
            "oldest_age": (
                web.age_text(int((now - glance.oldest_pending_at).total_seconds()))
                if glance.oldest_pending_at is not None
                else ""
            ),
            "refresh_seconds": REFRESH_SECONDS,
            "shown_at": now,
        },
        caller=caller,
    )
