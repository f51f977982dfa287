"""Partner-scoped reports: the audit report and the reconciliation file of a Transaction Day."""

from __future__ import annotations

import os
import tempfile
from datetime import date
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from rewardmiles import clock, limits, logs
from rewardmiles.auth.tokens import Principal
from rewardmiles.errors import ProblemError
from rewardmiles.http.access import authorize, sponsor_for
from rewardmiles.http.openapi import problem_responses
from rewardmiles.http.responses import json_response
from rewardmiles.http.threads import run_sync
from rewardmiles.reports import audit, batches, reconciliation
from rewardmiles.vocabulary import BatchStatus

router = APIRouter(prefix="/checkout/issuance/reports", tags=["reports"])
batch_router = APIRouter(prefix="/checkout/issuance/batches", tags=["reports"])

log = logs.get_logger("rewardmiles.batches")
BATCH_MEDIA = {"text/csv": "csv", "application/x-ndjson": "jsonl", "application/jsonl": "jsonl"}


# The Transaction Day of a report: `YYYY-MM-DD` exactly (`clock.parse_transaction_day`).
ReportDay = Annotated[
    str,
    Query(
        description="The Transaction Day, YYYY-MM-DD (program time zone).",
        json_schema_extra={"format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
    ),
]


def _scope(principal: Principal, sponsor_code: str | None, day: str) -> tuple[str, date]:
    sponsor = sponsor_for(principal, sponsor_code)
    try:
        parsed = clock.parse_transaction_day(day)
    except ValueError as exc:
        raise ProblemError("FIELD_INVALID", f"date {exc}", field="date") from None
    return sponsor, parsed


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
    date: ReportDay,
    sponsorCode: str | None = None,  # noqa: N803
    format: Literal["json", "csv"] = "json",
) -> Response:
    """Collector numbers are in full in both formats: the partner sent them for its own sponsor
    and reconciles against them (the reconciliation file and batch results carry them too). CSV
    cells that a spreadsheet would run as formulas are neutralised; the JSON is exact."""
    ctx = request.app.state.ctx
    sponsor, day = _scope(await authorize(request), sponsorCode, date)

    def build() -> audit.AuditReport:
        with ctx.db.reader() as session:
            return audit.audit_report(session, sponsor, day, ctx.settings.program_time_zone)

    report = await run_sync(ctx.limiter, build)
    if format == "csv":
        return Response(report.as_csv(), media_type="text/csv; charset=utf-8")
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
    date: ReportDay,
    sponsorCode: str | None = None,  # noqa: N803
) -> Response:
    ctx = request.app.state.ctx
    sponsor, day = _scope(await authorize(request), sponsorCode, date)

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


@batch_router.post(
    "",
    status_code=202,
    summary="Upload a partner transaction log (CSV or JSON lines) to match against real-time records",
    description="The body is streamed to disk and matched in the background; poll "
    "`GET /checkout/issuance/batches/{batchId}`. A log may be at most "
    "`REWARDMILES_BATCH_UPLOAD_BYTES_MAX` (256 MiB; 413, before the body is read when "
    "`Content-Length` says so) with lines of at most `REWARDMILES_BATCH_LINE_BYTES_MAX` (64 KiB; "
    "a longer line is one refused record). A few logs are matched at once and a few wait; when "
    "every place is taken the upload gets 503 `BATCH_QUEUE_FULL` with `Retry-After`. With `issueMissing=true`, records never seen in "
    "real time are issued through the normal write path (importing the same log again issues "
    "nothing twice).",
    responses={
        202: {"description": "Accepted: `{batchId, status}` and a Location header."},
        **problem_responses(400, 401, 403, 413, 415, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {media: {"schema": {"type": "string"}} for media in BATCH_MEDIA},
        }
    },
)
async def upload_batch(
    request: Request,
    sponsorCode: str | None = None,  # noqa: N803
    issueMissing: bool = False,  # noqa: N803
) -> Response:
    ctx = request.app.state.ctx
    principal = await authorize(request)
    sponsor = sponsor_for(principal, sponsorCode)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    kind = BATCH_MEDIA.get(media)
    if kind is None:
        raise ProblemError("UNSUPPORTED_MEDIA_TYPE", f"Send the log as {' or '.join(BATCH_MEDIA)}.")
    size_max = ctx.settings.batch_upload_bytes_max
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > size_max:  # refused before a byte of it is read
        raise _too_large(size_max)
    jobs = ctx.batch_jobs
    if not jobs.reserve():
        seconds = limits.batch_queue_retry_after_seconds
        raise ProblemError(
            "BATCH_QUEUE_FULL",
            f"Every place for partner logs is taken ({jobs.workers} running, {jobs.queue_max} "
            f"waiting); retry after {seconds} s.",
            headers={"Retry-After": str(seconds)},
        )
    spool = tempfile.NamedTemporaryFile(prefix="rm-batch-", suffix=f".{kind}", delete=False)  # noqa: SIM115
    submitted = False
    try:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > size_max:
                raise _too_large(size_max)
            spool.write(chunk)
        spool.close()
        now = clock.utc_now()

        def start() -> str:
            with ctx.db.unit_of_work() as session:
                return batches.start_batch(session, sponsor, "upload", issueMissing, now)

        batch_id = await run_sync(ctx.limiter, start)
        jobs.submit(partial(_run_upload, ctx, batch_id, spool.name, kind, principal.client_id))
        submitted = True
    finally:
        if not submitted:  # the upload failed: its file and its place go
            spool.close()
            os.unlink(spool.name)
            jobs.release()
    return json_response(
        202,
        {"batchId": batch_id, "status": BatchStatus.PROCESSING},
        {"Location": f"/checkout/issuance/batches/{batch_id}"},
    )


def _too_large(size_max: int) -> ProblemError:
    return ProblemError("PAYLOAD_TOO_LARGE", f"A log may be at most {size_max} bytes.")


def _run_upload(ctx: Any, batch_id: str, path: str, kind: str, client_id: str) -> None:
    try:
        with open(path, "rb") as raw:
            batches.run_batch(ctx.db, ctx.settings, batch_id, raw, kind, client_id=client_id)
    except Exception as exc:  # recorded on the batch as failed; the log has the trace
        log.error("batch_failed", batch_id=batch_id, error=type(exc).__name__, detail=str(exc))
    finally:
        os.unlink(path)


@batch_router.get(
    "/{batchId}",
    summary="A batch's status, counts and discrepancies (matched records are left out unless asked)",
    responses=problem_responses(400, 401, 404),
)
async def get_batch(
    request: Request,
    batchId: str,  # noqa: N803
    offset: Annotated[int, Query(ge=0, le=limits.batch_records_offset_max)] = 0,
    limit: Annotated[int, Query(ge=1, le=limits.batch_records_page_max)] = 1000,
    outcome: str | None = None,
) -> Response:
    ctx = request.app.state.ctx
    principal = await authorize(request)

    def find() -> dict[str, Any] | None:
        with ctx.db.reader() as session:
            if batches.batch_sponsor(session, batchId) not in principal.sponsor_codes:
                return None
            return batches.batch_view(session, batchId, offset=offset, limit=limit, outcome=outcome)

    view = await run_sync(ctx.limiter, find)
    if view is None:
        raise ProblemError("NOT_FOUND", f"No batch {batchId} for this client's sponsors.")
    return json_response(200, view)
