"""`create_app(settings)`: routers, error handlers and a lifespan that builds every resource."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import FastAPI

from rewardmiles import __version__, clock, logs, metrics, ratelimit, secretbox
from rewardmiles.admin import catalogue as admin_catalogue
from rewardmiles.admin import collectors as admin_collectors
from rewardmiles.admin import operators as admin_operators
from rewardmiles.admin import partners as admin_partners
from rewardmiles.admin import routes as admin_routes
from rewardmiles.admin import support as admin_support
from rewardmiles.admin.collectors import AdjustmentBody, StatusRequest
from rewardmiles.apidocs import add_api_docs
from rewardmiles.auth import routes as auth_routes
from rewardmiles.auth import service as auth_service
from rewardmiles.auth.external import ClientStanding, ExternalTokens
from rewardmiles.auth.keys import KeyRing
from rewardmiles.auth.revocation import ClientWatch
from rewardmiles.auth.tokens import TokenService
from rewardmiles.config import Settings
from rewardmiles.console import routes as console_routes
from rewardmiles.db import migrate
from rewardmiles.db.engine import Database, StatementPool
from rewardmiles.errors import PROBLEM_CODES, ProblemError
from rewardmiles.health import router as health_router
from rewardmiles.http import metrics as metrics_routes
from rewardmiles.http import openapi
from rewardmiles.http.application import IssuanceApp
from rewardmiles.http.handlers import add_exception_handlers
from rewardmiles.http.middleware import RequestContextMiddleware
from rewardmiles.http.openapi import problem_responses
from rewardmiles.http.responses import json_response
from rewardmiles.idempotency.service import InFlightRegistry
from rewardmiles.issuance import routes as issuance_routes
from rewardmiles.issuance.schemas import (
    CalculateRequest,
    IssueRequest,
    PostBasketRequest,
    PostEventRequest,
    RecordRequest,
    ReturnRequest,
    ReverseBasketRequest,
    ReverseEventRequest,
)
from rewardmiles.ledger import GroupCommit
from rewardmiles.operators import routes as operator_routes
from rewardmiles.operators.routes import SignInRequest
from rewardmiles.reports import routes as reports_routes
from rewardmiles.reports.jobs import BatchJobs
from rewardmiles.settlement.worker import Worker
from rewardmiles.support.recorder import FailureRecorder
from rewardmiles.support.today import ClosedHours

DESCRIPTION = """Real-time issuance of Reward Miles by partners (sponsors) at checkout.

Every partner call is `POST` with a JSON body and `Authorization: Bearer <token>` from
`POST /oauth/token`. Every error is `application/problem+json` with a stable `code`;
see `GET /problems` for the catalogue.
"""


@dataclass
class AppContext:
    settings: Settings
    db: Database
    keys: KeyRing
    tokens: TokenService
    registry: InFlightRegistry
    limiter: anyio.CapacityLimiter
    rate_limiter: ratelimit.RateLimiter
    api_budget: ratelimit.Budget | None
    token_budget: ratelimit.Budget | None  # sign-ins with the right secret, per client_id
    token_failure_budget: ratelimit.Budget | None  # failed ones, per client_id and per address
    statements: StatementPool | None  # the one-statement issue path (PostgreSQL)
    issue_writer: GroupCommit | None  # its group commit
    # CPU-heavy work of one request (secret hashes, large bodies): never the database's threads.
    cpu_limiter: anyio.CapacityLimiter
    migration_head: str | None  # read once at start: what /readyz compares the database with
    batch_jobs: BatchJobs  # partner-log uploads: a few at once, a few waiting
    # Revoked partner clients, re-read every few seconds; last token times written alongside.
    clients: ClientWatch
    metrics: metrics.DatabaseGauges  # what GET /metrics reads from the database, cached
    # Secret checks of one source address run one at a time, each judged by the failure budget
    # the ones before it left (a burst of guesses sent together is no bigger than one sent in turn).
    secret_checks: ratelimit.OneAtATime = field(default_factory=ratelimit.OneAtATime)
    # The console's Today page: the figures of hours that are over, read once.
    closed_hours: ClosedHours = field(default_factory=ClosedHours)


def apply_test_clock(settings: Settings) -> None:
    """REWARDMILES_TEST_CLOCK (a test setting) stands the clock still; say so loudly."""
    clock.freeze_for_tests(settings.frozen_clock)
    if settings.frozen_clock is not None:
        logs.get_logger("rewardmiles").warning(
            "clock_frozen_for_tests", at=settings.frozen_clock.isoformat()
        )


def _client_standing(db: Database) -> Callable[[str], ClientStanding | None]:
    """A partner client's sponsors and whether it is revoked (for an external token mapped to
    it), read once per token, in the database thread that verifies it."""

    def read(client_id: str) -> ClientStanding | None:
        with db.reader() as session:
            row = auth_service.client(session, client_id)
        if row is None:
            return None
        return ClientStanding(frozenset(row.sponsor_codes), revoked=row.revoked_at is not None)

    return read


def build_context(settings: Settings) -> AppContext:
    db = Database.from_url(
        settings.database_url,
        pool_size=settings.database_pool_size,
        statement_timeout_ms=settings.database_statement_timeout_ms,
    )
    # A missing or wrong key-encryption key stops the start here, not a request later.
    box = secretbox.for_settings(settings)
    secretbox.check_and_seal(db, box)
    keys = KeyRing(db, box)
    keys.ensure_key(clock.utc_now())
    provider = settings.external_provider
    tokens = TokenService(
        keys,
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        lifetime_seconds=settings.token_lifetime_seconds,
        external=None if provider is None else ExternalTokens(provider, _client_standing(db)),
    )
    # One worker thread per pooled connection: more threads would only queue on the pool.
    limiter = anyio.CapacityLimiter(1 if db.single_writer else settings.database_pool_size * 2)
    statements = (
        db.statement_pool(settings.database_pool_size) if settings.one_statement_issue else None
    )
    clients = ClientWatch(db, tokens, interval_seconds=settings.revocation_refresh_seconds)
    clients.refresh()  # revoked clients are refused from the first request
    metrics.watch_pool(db.engine.pool)
    return AppContext(
        settings,
        db,
        keys,
        tokens,
        InFlightRegistry(),
        limiter,
        ratelimit.build(settings.redis_url, settings.redis_key_prefix),
        ratelimit.budget(settings.rate_limit_per_second, settings.rate_limit_burst),
        ratelimit.budget(
            settings.token_rate_limit_per_minute / 60, settings.token_rate_limit_burst
        ),
        ratelimit.budget(
            settings.token_failure_rate_limit_per_minute / 60,
            settings.token_failure_rate_limit_burst,
        ),
        statements,
        None
        if statements is None
        else GroupCommit(statements, on_batch=metrics.GROUP_COMMIT_BATCH.observe),
        anyio.CapacityLimiter(settings.cpu_threads),
        migrate.head_revision(),
        BatchJobs(settings.batch_workers, settings.batch_queue_max),
        clients,
        metrics_routes.database_gauges(db),
    )


# The partner request models, added to the document's schemas: their routes read and validate
# their bodies themselves (`http.bodies`) and refer to them by name, so the framework has not.
REQUEST_MODELS = (
    PostEventRequest,
    ReverseEventRequest,
    PostBasketRequest,
    ReverseBasketRequest,
    RecordRequest,
    CalculateRequest,
    IssueRequest,
    ReturnRequest,
    SignInRequest,  # POST /admin/session
    admin_support.ReviewRequest,  # POST /admin/v1/pending/{lineId}/approve|reject
    admin_support.BulkReviewRequest,  # POST /admin/v1/pending/bulk
    StatusRequest,  # POST /admin/v1/collectors/{number}/status
    AdjustmentBody,  # POST /admin/v1/collectors/{number}/adjustments
)


def create_app(settings: Settings | None = None, *, direct_lane: bool = True) -> IssuanceApp:
    """The application. `direct_lane=False` serves the partner calls through the framework's
    routing like every other route (same answers, more work per call): for tests and
    benchmarks that compare the two."""
    settings = settings or Settings.from_env()
    logs.configure(settings.log_level, json=settings.log_json)
    apply_test_clock(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ctx = ctx = await anyio.to_thread.run_sync(build_context, settings)
        failures.start(ctx.db)
        # What is built by now lives as long as the process: keep it out of the collector's
        # full passes, which would otherwise walk it again and again under load.
        gc.collect()
        gc.freeze()
        worker = Worker(ctx.db, settings, poll_seconds=settings.worker_poll_seconds)
        ctx.clients.start()
        if settings.embedded_worker:
            worker.start_thread()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(worker.stop)
            await anyio.to_thread.run_sync(failures.stop)
            await anyio.to_thread.run_sync(ctx.clients.stop)
            ctx.batch_jobs.close()
            await ctx.rate_limiter.close()
            if ctx.statements is not None:
                await ctx.statements.close()
            ctx.db.dispose()
            metrics.process_stopped()

    app = IssuanceApp(
        title="rewardmiles Issuance API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # A path is matched exactly: `/x/` for `/x` is a 404 problem, never a redirect (a 307
        # with an empty body, which a partner's client would replay or report as a failure).
        redirect_slashes=False,
        docs_url=None,  # apidocs: the docs pages with their assets served here, not from a CDN
        redoc_url=None,
    )
    # Failed partner calls, for the support desk: the middleware queues, its thread writes.
    app.state.failures = failures = FailureRecorder()
    if direct_lane:
        app.add_direct_routes(issuance_routes.DIRECT_ROUTES)
        metrics.name_exact_paths(route.path for route in issuance_routes.DIRECT_ROUTES)
    app.add_middleware(RequestContextMiddleware)
    add_exception_handlers(app)
    app.include_router(auth_routes.router)
    app.include_router(issuance_routes.router)
    app.include_router(reports_routes.router)
    app.include_router(reports_routes.batch_router)
    app.include_router(health_router)
    app.include_router(metrics_routes.router)  # GET /metrics: its own access rules
    # The support desk's API: ordinary framework routes, never on the direct lane.
    app.include_router(operator_routes.router)
    app.include_router(admin_routes.router)
    app.include_router(admin_partners.router)
    app.include_router(admin_catalogue.router)
    app.include_router(admin_support.router)
    app.include_router(admin_collectors.router)
    app.include_router(admin_operators.router)
    # The operator console: pages on the same services, its refusals as HTML under /console.
    console_routes.install(app)
    _add_problem_routes(app)
    add_api_docs(app)
    app.openapi = lambda: openapi.document(app, REQUEST_MODELS)  # type: ignore[method-assign]
    return app


def _add_problem_routes(app: FastAPI) -> None:
    def entry(code: str) -> dict[str, Any]:
        spec = PROBLEM_CODES[code]
        return {
            "code": spec.code,
            "status": spec.status,
            "title": spec.title,
            "retryable": spec.retryable,
            "meaning": spec.meaning,
        }

    @app.get("/problems", tags=["errors"], summary="The error catalogue")
    async def problems() -> Any:
        return json_response(200, [entry(code) for code in PROBLEM_CODES])

    @app.get(
        "/problems/{code}",
        tags=["errors"],
        summary="One error code",
        responses=problem_responses(404),
    )
    async def problem_entry(code: str) -> Any:
        if code not in PROBLEM_CODES:
            raise ProblemError("NOT_FOUND", f"No error code {code}.")
        return json_response(200, entry(code))
