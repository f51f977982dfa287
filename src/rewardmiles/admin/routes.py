"""`/admin/v1` routes: authenticate and check the role (`operators.access.require`), parse, call
one service function in a unit of work, answer."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel
from starlette.responses import Response

from rewardmiles import clock, limits
from rewardmiles.collectors import service as collectors
from rewardmiles.collectors.service import CollectorOverview
from rewardmiles.errors import ProblemError
from rewardmiles.http.openapi import admin_problem_responses
from rewardmiles.http.responses import json_response
from rewardmiles.http.threads import run_sync
from rewardmiles.operators.access import auth_problems, require
from rewardmiles.vocabulary import CollectorStatus, OperatorRole

router = APIRouter(prefix="/admin/v1", tags=["admin"])


class CollectorOut(BaseModel):
    collectorNumber: str  # noqa: N815
    status: CollectorStatus
    balance: int
    pendingCount: int  # noqa: N815
    firstActivityAt: str | None  # noqa: N815
    lastActivityAt: str | None  # noqa: N815


def _at(moment: datetime | None, zone: str) -> str | None:
    return None if moment is None else clock.program_timestamp(moment, zone)


@router.get(
    "/collectors/{number}",
    summary="A collector: status, balance in miles, pending lines, first and last activity",
    description="Activity is the first and last transaction naming the collector (accepted or "
    "rejected), in the program time zone. Any role.",
    response_model=CollectorOut,
    responses=admin_problem_responses(
        *auth_problems(OperatorRole.VIEWER), "COLLECTOR_NUMBER_INVALID", "NOT_FOUND"
    ),
)
async def collector(
    request: Request,
    number: str = Path(
        description="The collector number, 11 digits.",
        json_schema_extra={"pattern": limits.collector_number_pattern},
    ),
) -> Response:
    await require(request, OperatorRole.VIEWER)
    if not collectors.COLLECTOR_NUMBER.fullmatch(number):
        raise ProblemError(
            "COLLECTOR_NUMBER_INVALID",
            f"A collector number is exactly {limits.collector_number_digits} digits.",
            field="number",
        )
    ctx = request.app.state.ctx

    def read() -> CollectorOverview | None:
        with ctx.db.reader() as session:
            return collectors.overview(session, number)

    found = await run_sync(ctx.limiter, read)
    if found is None:
        raise ProblemError("NOT_FOUND", f"No collector {number}.")
    zone = ctx.settings.program_time_zone
    return json_response(
        200,
        {
            "collectorNumber": found.number,
            "status": found.status,
            "balance": found.balance_miles,
            "pendingCount": found.pending_lines,
            "firstActivityAt": _at(found.first_activity_at, zone),
            "lastActivityAt": _at(found.last_activity_at, zone),
        },
    )
