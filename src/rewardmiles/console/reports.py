"""The Reports page: a sponsor's audit report of a Transaction Day (a sortable table, CSV and
JSON downloads), its reconciliation file, and the partner logs uploaded (batches) with their
discrepancies. The downloads are the reports API's own bytes (`reports.audit`,
`reports.reconciliation`), authorised by the console session. Any role may see all of it."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from rewardmiles import clock
from rewardmiles.console import web
from rewardmiles.http.responses import json_response
from rewardmiles.reports import audit, batches, reconciliation
from rewardmiles.reports import repository as reports_repository
from rewardmiles.sponsors import service as sponsors
from rewardmiles.vocabulary import IssuanceStatus, OperatorRole

router = APIRouter(include_in_schema=False)

PAGE = web.PREFIX + "/reports"
SPONSORS_LISTED = 500  # the sponsor field's suggestions
BATCHES_LISTED = 50
BATCH_RECORDS_SHOWN = 1000
AUDIT_ROWS_SHOWN = 1000  # the table's; the downloads have every transaction


def _zone(request: Request) -> str:
    return str(request.app.state.ctx.settings.program_time_zone)


def _scope(request: Request) -> tuple[str | None, date]:
    zone = _zone(request)
    day = web.day_of(request.query_params.get("day"), "day") or clock.transaction_day_of(
        clock.utc_now(), zone
    )
    sponsor = web.sponsor_of((request.query_params.get("sponsor") or "").strip())
    return sponsor, day


async def _known_sponsor(request: Request, sponsor: str | None) -> str:
    chosen = web.sponsor_of(sponsor, required=True)
    assert chosen is not None
    await web.read(request, lambda s: web.known_sponsor(s, chosen))
    return chosen


@router.get(PAGE)
async def reports_page(request: Request) -> Response:
    caller = await web.signed_in(request, OperatorRole.VIEWER)
    sponsor, day = _scope(request)
    zone = _zone(request)

    def load(session: Any) -> dict[str, Any]:
        report = None
        if sponsor is not None:
            web.known_sponsor(session, sponsor)
            report = audit.audit_report(session, sponsor, day, zone, AUDIT_ROWS_SHOWN + 1)
        known = [s.code for s in sponsors.list_sponsors(session, None, SPONSORS_LISTED)]
        listed = reports_repository.recent_batches(session, sponsor, BATCHES_LISTED)
        return {"known": known, "report": report, "batches": listed}

    loaded = await web.read(request, load)
    rows = []
    if loaded["report"] is not None:
        for txn in loaded["report"].transactions[:AUDIT_ROWS_SHOWN]:
            lines = txn["issuances"] or []
            rows.append(
                {
                    **txn,
                    "lines": len(lines),
                    "miles": sum(  # the lines not rejected: issued, reversed or pending
                        line["milesAmount"]
                        for line in lines
                        if isinstance(line.get("milesAmount"), int)
                        and line["status"] != IssuanceStatus.REJECTED
                    ),
                }
            )
    return web.render(
        request,
        "reports.html",
        {
            "sponsor": sponsor or "",
            "day": day,
            "known": loaded["known"],
            "rows": rows,
            "has_report": loaded["report"] is not None,
            "more": loaded["report"] is not None
            and len(loaded["report"].transactions) > AUDIT_ROWS_SHOWN,
            "shown_max": AUDIT_ROWS_SHOWN,
            "batches": loaded["batches"],
            "batches_listed": BATCHES_LISTED,
        },
        caller=caller,
    )


@router.get(PAGE + "/audit.{kind}")
async def audit_download(request: Request, kind: str) -> Response:
    """The audit report as the reports API answers it (`format=csv` or json), as a file."""
    await web.signed_in(request, OperatorRole.VIEWER)
    if kind not in ("csv", "json"):
        raise web.PageError(404, "Not found", f"No audit report as {kind}; csv or json.")
    sponsor, day = _scope(request)
    sponsor = await _known_sponsor(request, sponsor)
    zone = _zone(request)
    report = await web.read(request, lambda s: audit.audit_report(s, sponsor, day, zone))
    disposition = {
        "Content-Disposition": f'attachment; filename="audit-{sponsor}-{day.isoformat()}.{kind}"',
        "Cache-Control": "no-store",
    }
    if kind == "csv":
        return Response(report.as_csv(), media_type="text/csv; charset=utf-8", headers=disposition)
    return json_response(200, report.as_json(), disposition)


@router.get(PAGE + "/reconciliation")
async def reconciliation_download(request: Request) -> Response:
    """The reconciliation file of the sponsor's day, as the reports API answers it."""
    await web.signed_in(request, OperatorRole.VIEWER)
    sponsor, day = _scope(request)
    sponsor = await _known_sponsor(request, sponsor)
    zone = _zone(request)
    recon = await web.read(
        request, lambda s: reconciliation.build(s, sponsor, day, zone, clock.utc_now())
    )
    return Response(
        reconciliation.render(recon),
        media_type="text/plain; charset=us-ascii",
        headers={
            "Content-Disposition": f'attachment; filename="recon-{sponsor}-{day.isoformat()}.txt"',
            "Cache-Control": "no-store",
        },
    )


@router.get(PAGE + "/batches/{batch_id}")
async def batch_page(request: Request, batch_id: str) -> Response:
    """A partner log's result: its counts and every record that did not match."""
    caller = await web.signed_in(request, OperatorRole.VIEWER)
    view = await web.read(
        request, lambda s: batches.batch_view(s, batch_id, limit=BATCH_RECORDS_SHOWN)
    )
    if view is None:
        raise web.PageError(404, "Unknown partner log", f"No batch {batch_id}.", "NOT_FOUND")
    return web.render(
        request,
        "reports_batch.html",
        {"batch": view, "shown_max": BATCH_RECORDS_SHOWN},
        caller=caller,
    )
