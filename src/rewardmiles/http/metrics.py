"""`GET /metrics`: the Prometheus exposition (`rewardmiles.metrics`), for the addresses allowed
to read it (docs/operations.md, Metrics).

A scrape is answered when it comes from loopback (`REWARDMILES_METRICS_ALLOW_LOOPBACK`, on by
default) or from one of `REWARDMILES_METRICS_ALLOW_NETWORKS`, judged on the connection's peer
address (never a forwarded header), or when it sends `Authorization: Bearer` with
`REWARDMILES_METRICS_TOKEN`. Otherwise: 401 `METRICS_UNAUTHORIZED` when a token is configured (it
could open it), 403 `METRICS_FORBIDDEN` when none is. The route is an operations endpoint, not
part of the partner API: it is left out of the OpenAPI document."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from rewardmiles import metrics
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.errors import ProblemError
from rewardmiles.http.threads import run_sync
from rewardmiles.settlement import repository as settlement_repository
from rewardmiles.webhooks import repository as webhooks_repository

router = APIRouter(tags=["operations"])


def database_gauges(db: Database) -> metrics.DatabaseGauges:
    """The gauges a scrape reads from `db`, each scrape's reading opened here (the boundary)."""

    def read() -> metrics.DatabaseReading:
        with db.reader() as session:
            pending, oldest = settlement_repository.pending_summary(session)
            depth, given_up = webhooks_repository.outbox_counts(session)
        return metrics.DatabaseReading(pending, oldest, depth, given_up)

    return metrics.DatabaseGauges(read, time.time)


def check_access(request: Request, settings: Settings) -> None:
    """ProblemError unless this scrape may be answered (see the module's docstring)."""
    host = request.client.host if request.client else None
    if metrics.source_allowed(
        host,
        allow_loopback=settings.metrics_allow_loopback,
        networks=settings.metrics_networks,
    ):
        return
    token = settings.metrics_token
    if token is None:
        raise ProblemError(
            "METRICS_FORBIDDEN", "Metrics are served to loopback and the configured networks."
        )
    if not metrics.token_matches(request.headers.get("authorization"), token.get_secret_value()):
        raise ProblemError(
            "METRICS_UNAUTHORIZED",
            "Send Authorization: Bearer with the metrics token.",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )


@router.get("/metrics", include_in_schema=False)
async def scrape(request: Request) -> Any:
    ctx = request.app.state.ctx
    check_access(request, ctx.settings)
    gauges: metrics.DatabaseGauges = ctx.metrics
    try:
        await run_sync(ctx.limiter, gauges.refresh)
    except Exception:  # the counters are still worth answering; the gauges keep their last value
        metrics.SCRAPE_READ_FAILURES.inc()
    return Response(metrics.scrape(gauges), media_type=metrics.CONTENT_TYPE)
