"""The rows an accepted or rejected call writes, built before the first of them is sent: one
builder for both write paths (the unit of work and `ledger.batched`), so both store the same."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from rewardmiles import clock, ids, ledger
from rewardmiles.config import Settings
from rewardmiles.issuance.calls import Outcome, PartnerCall, PlannedLine, wire_status
from rewardmiles.vocabulary import Direction, LineStatus, TransactionStatus


@dataclass(frozen=True, slots=True)
class WriteSet:
    """Every row an accepted call writes, built before the first of them is sent."""

    outcome: Outcome
    transaction: dict[str, object]
    lines: list[dict[str, object]]
    postings: list[ledger.Posting]  # the posted lines' moves, for the call's collector


def build_write(
    settings: Settings,
    call: PartnerCall,
    planned: list[PlannedLine],
    direction: Direction,
    original_id: str | None,
    now: datetime,
) -> WriteSet:
    command = call.command
    transaction_id = ids.uuid4_text()
    pending, posted = LineStatus.PENDING, LineStatus.POSTED  # read once, not once per line
    any_pending = any(p.status == pending for p in planned)
    status = 202 if any_pending else 200
    transaction_status = (
        TransactionStatus.RECORDED
        if direction == Direction.NONE
        else TransactionStatus.PENDING
        if any_pending
        else TransactionStatus.POSTED
    )

    body = dict(command.echo)
    body["issuances"] = [dict(line) for line in body.get("issuances", ())]
    for out_line, p in zip(body["issuances"], planned, strict=True):
        line_status = wire_status(direction, p.status)
        if line_status is not None:
            out_line["status"] = line_status
    if not body["issuances"]:
        del body["issuances"]
    body["transactionDateTime"] = clock.program_timestamp(now, settings.program_time_zone)
    body["transactionId"] = transaction_id

    lines: list[dict[str, object]] = [
        {
            "transaction_id": transaction_id,
            "line_no": p.line_no,
            "direction": direction,
            "offer_code": p.offer_code,
            "location_code": p.location_code,
            "miles": p.miles,
            "status": p.status,
            "pending_reason": p.pending_reason,
            "error_code": None,
            "settled_at": now if p.status == posted else None,
        }
        for p in planned
    ]
    postings = [
        ledger.Posting(
            transaction_id,
            p.line_no,
            command.collector_number or "",
            command.sponsor_code,
            ledger.signed_miles(direction, p.miles),
        )
        for p in planned
        if p.status == posted
    ]
    return WriteSet(
        Outcome(status, body, transaction_id),
        transaction_row(
            call, transaction_id, original_id, transaction_status, status, None, body, now
        ),
        lines,
        postings,
    )


def transaction_row(
    call: PartnerCall,
    transaction_id: str,
    original_id: str | None,
    status: TransactionStatus,
    http_status: int,
    error_code: str | None,
    response: dict[str, Any],
    now: datetime,
) -> dict[str, object]:
    command = call.command
    return {
        "id": transaction_id,
        "client_id": call.client_id,
        "sponsor_code": command.sponsor_code,
        "endpoint": call.endpoint.value,
        "partner_transaction_id": command.partner_transaction_id,
        "collector_number": command.collector_number,
        "original_transaction_id": original_id,
        "status": status,
        "http_status": http_status,
        "error_code": error_code,
        "fingerprint": call.fingerprint,
        "partner_datetime": command.moment,
        "processed_at": now,
        "request_json": call.request_json,
        "response_json": orjson.dumps(response).decode(),
        "calculation_json": (
            orjson.dumps(command.calculation).decode() if command.calculation is not None else None
        ),
    }
