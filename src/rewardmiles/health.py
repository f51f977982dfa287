"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from rewardmiles.db import migrate
from rewardmiles.db.engine import refuses_writes
from rewardmiles.errors import problem
from rewardmiles.http.middleware import request_id_of
from rewardmiles.http.openapi import problem_responses
from rewardmiles.http.responses import json_response
from rewardmiles.http.threads import run_sync

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Response:
    return json_response(200, {"status": "ok"})


@router.get(
    "/readyz",
    summary="The database is reachable, takes writes, and migrations are current",
    responses=problem_responses(503),
)
async def readyz(request: Request) -> Response:
    ctx = request.app.state.ctx
    try:
        # The head was read at start: a call costs one small query, not a read of every script.
        current = await run_sync(ctx.limiter, migrate.is_current, ctx.db.engine, ctx.migration_head)
        # A server that takes no writes (a failover's old primary) is no place for partners' calls.
        refused = await run_sync(ctx.limiter, refuses_writes, ctx.db.engine)
    except Exception:
        return json_response(
            503,
            problem("SERVICE_UNAVAILABLE", "The database is unreachable.", request_id_of(request)),
        )
    if refused:
        return json_response(
            503,
            problem(
                "SERVICE_UNAVAILABLE",
                "The database takes no writes (a failover under way?).",
                request_id_of(request),
            ),
        )
    if not current:
        return json_response(
            503,
            problem(
                "SERVICE_UNAVAILABLE",
                "Migrations are not current: run `rewardmiles db upgrade`.",
                request_id_of(request),
            ),
        )
    return json_response(200, {"status": "ready"})
