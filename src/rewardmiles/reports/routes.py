"""Partner-scoped reports: the audit report and the reconciliation file of a Transaction Day."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from fastapi import APIRouter, Request
from starlette.responses import Response

from rewardmiles import clock
from rewardmiles.auth.tokens import Principal
from rewardmiles.errors import ProblemError
from rewardmiles.reports import audit, reconciliation
from rewardmiles.web import (
    bearer_token,
    json_response,
    problem_responses,
    require_sponsor,
    run_sync,
)

router = APIRouter(prefix="/checkout/issuance/reports", tags=["reports"])


def _principal(request: Request) -> Principal:
    principal: Principal = request.app.state.ctx.tokens.verify(
        bearer_token(request), clock.utc_now()
    )
    request.scope["state"]["client_id"] = principal.client_id
    return principal


def _scope(principal: Principal, sponsor_code: str | None, day: str) -> tuple[str, date]:
    if sponsor_code is None:
        if len(principal.sponsor_codes) != 1:
            raise ProblemError(
                "FIELD_REQUIRED", "sponsorCode is required for this client.", field="sponsorCode"
            )
        (sponsor_code,) = principal.sponsor_codes
    require_sponsor(principal, sponsor_code)
    try:
        return sponsor_code, date.fromisoformat(day)
    except ValueError as exc:
        raise ProblemError(
            "FIELD_INVALID", "date must be a day, YYYY-MM-DD.", field="date"
        ) from exc


@router.get(
    "/audit",
    summary="Every request of a sponsor's Transaction Day, with its lines, status and error codes",
    responses={
        200: {"content": {"application/json": {}, "text/csv": {}}, "description": "The report."},
        **problem_responses(400, 401, 403),
    },
)
async def audit_report(
    request: Request,
    date: str,
    sponsorCode: str | None = None,  # noqa: N803
    format: Literal["json", "csv"] = "json",
    unmaskCollectors: bool = False,  # noqa: N803
) -> Response:
    ctx = request.app.state.ctx
    sponsor, day = _scope(_principal(request), sponsorCode, date)

    def build() -> audit.AuditReport:
        with ctx.db.reader() as session:
            return audit.audit_report(session, sponsor, day, ctx.settings.program_time_zone)

    report = await run_sync(ctx.limiter, build)
    if format == "csv":
        return Response(
            report.as_csv(unmask=unmaskCollectors), media_type="text/csv; charset=utf-8"
        )
    return json_response(200, report.as_json())


@router.get(
    "/reconciliation",
    summary="The reconciliation file of a sponsor's Transaction Day (docs/reconciliation.md)",
    responses={
        200: {"content": {"text/plain": {}}, "description": "ASCII, `%%`-separated records."},
        **problem_responses(400, 401, 403),
    },
)
async def reconciliation_file(
    request: Request,
    date: str,
    sponsorCode: str | None = None,  # noqa: N803
) -> Response:
    ctx = request.app.state.ctx
    sponsor, day = _scope(_principal(request), sponsorCode, date)

    def build() -> Any:
        with ctx.db.reader() as session:
            return reconciliation.build(
                session, sponsor, day, ctx.settings.program_time_zone, clock.utc_now()
            )

    recon = await run_sync(ctx.limiter, build)
    filename = f"recon-{sponsor}-{day.isoformat()}.txt"
    return Response(
        reconciliation.render(recon),
        media_type="text/plain; charset=us-ascii",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
