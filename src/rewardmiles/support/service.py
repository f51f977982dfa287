"""The support desk's look-ups and the review of pending lines in bulk.

Every function takes the caller's session and never commits. Answers are the admin API's wire
shapes (camelCase), timestamps in the program time zone. Collector numbers are masked in every
list item and, for a caller who may not see them in full (`full_numbers=False`, a viewer), in a
transaction's detail too: its request and response included.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from rewardmiles import clock
from rewardmiles.errors import PROBLEM_CODES
from rewardmiles.logs import mask_collector_numbers
from rewardmiles.operators import service as operators
from rewardmiles.operators.service import Actor
from rewardmiles.settlement import service as settlement
from rewardmiles.support import repository
from rewardmiles.support.repository import TransactionFilter
from rewardmiles.vocabulary import LineStatus, PendingReason, ReviewAction

ENTITY_LINE = "issuance_line"


def _at(moment: datetime | None, zone: str) -> str | None:
    return None if moment is None else clock.program_timestamp(moment, zone)


def _masked(text: str) -> str:
    return mask_collector_numbers(text)


def _number(number: str | None, full: bool) -> str | None:
    return number if number is None or full else mask_collector_numbers(number)


# --------------------------------------------------------------------------- failed requests


def failed_request(
    session: Session, request_id: str, zone: str, *, full_numbers: bool
) -> dict[str, Any] | None:
    """The failure recorded under `request_id` (the latest); a collector number its detail
    names is masked unless `full_numbers`."""
    row = repository.failure_by_request_id(session, request_id)
    if row is None:
        return None
    return {
        "requestId": row.request_id,
        "at": _at(row.at, zone),
        "clientId": row.client_id,
        "method": row.method,
        "path": row.path,
        "status": row.status,
        "code": row.code,
        "detail": row.detail if full_numbers or row.detail is None else _masked(row.detail),
        "field": row.field,
    }


# --------------------------------------------------------------------------- transactions


def _summary(row: Any, zone: str, *, full_numbers: bool) -> dict[str, Any]:
    return {
        "transactionId": row["id"],
        "partnerTransactionId": row["partner_transaction_id"],
        "clientId": row["client_id"],
        "sponsorCode": row["sponsor_code"],
        "endpoint": row["endpoint"],
        "collectorNumber": _number(row["collector_number"], full_numbers),
        "originalTransactionId": row["original_transaction_id"],
        "status": row["status"],
        "httpStatus": row["http_status"],
        "errorCode": row["error_code"],
        "partnerDateTime": _at(row["partner_datetime"], zone),
        "processedAt": _at(row["processed_at"], zone),
    }


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    next_key: tuple[Any, ...] | None  # the last item's key when there may be more


def search_transactions(
    session: Session,
    where: TransactionFilter,
    after: tuple[datetime, str] | None,
    limit: int,
    zone: str,
) -> Page:
    """Transactions newest first; collector numbers masked."""
    rows = repository.transactions_page(session, where, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    return Page(
        [_summary(r, zone, full_numbers=False) for r in rows],
        None if last is None else (last["processed_at"], last["id"]),
    )


def _stored_json(text: str | None, full_numbers: bool) -> Any:
    if text is None:
        return None
    return json.loads(text if full_numbers else mask_collector_numbers(text))


def _history(line: Any, processed_at: datetime, zone: str) -> list[dict[str, Any]]:
    """What is stored of a line's statuses: a line posted by the call itself has `settled_at`
    equal to the call's time; one with a later `settled_at` was pending from the call until
    then (settled or rejected by the worker or a review); without one, its status is the
    call's (pending still, rejected or recorded by the call)."""
    if line["settled_at"] is None or line["settled_at"] == processed_at:
        return [{"status": line["status"], "at": _at(processed_at, zone)}]
    return [
        {"status": LineStatus.PENDING, "at": _at(processed_at, zone)},
        {
            "status": line["status"],
            "at": _at(line["settled_at"], zone),
            "errorCode": line["error_code"],
        },
    ]


def transaction(
    session: Session, transaction_id: str, zone: str, *, full_numbers: bool
) -> dict[str, Any] | None:
    """One transaction: its summary, the request as received and the response as answered, its
    lines with their status history, and its reversals."""
    row = repository.transaction_detail(session, transaction_id)
    if row is None:
        return None
    lines = repository.transaction_lines(session, transaction_id)
    reversals = repository.reversals_of(session, transaction_id)
    return {
        **_summary(row, zone, full_numbers=full_numbers),
        "request": _stored_json(row["request_json"], full_numbers),
        "response": _stored_json(row["response_json"], full_numbers),
        "calculation": _stored_json(row["calculation_json"], full_numbers),
        "lines": [
            {
                "lineId": settlement.line_id(transaction_id, line["line_no"]),
                "lineNo": line["line_no"],
                "direction": line["direction"],
                "offerCode": line["offer_code"],
                "locationCode": line["location_code"],
                "miles": line["miles"],
                "status": line["status"],
                "pendingReason": line["pending_reason"],
                "errorCode": line["error_code"],
                "settledAt": _at(line["settled_at"], zone),
                "history": _history(line, row["processed_at"], zone),
            }
            for line in lines
        ],
        "reversals": [_summary(r, zone, full_numbers=full_numbers) for r in reversals],
    }


# --------------------------------------------------------------------------- pending review


def pending(
    session: Session,
    sponsor_code: str | None,
    reason: PendingReason | None,
    after: tuple[datetime, str, int] | None,
    limit: int,
    now: datetime,
    zone: str,
    *,
    processed_before: datetime | None = None,
) -> Page:
    """Pending lines, oldest first, with their age in seconds; collector numbers masked. With
    `processed_before`, only the lines of calls processed before it (older than an age)."""
    rows = repository.pending_page(
        session, sponsor_code, reason, after, limit + 1, processed_before=processed_before
    )
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    return Page(
        [
            {
                "lineId": settlement.line_id(r["transaction_id"], r["line_no"]),
                "transactionId": r["transaction_id"],
                "lineNo": r["line_no"],
                "sponsorCode": r["sponsor_code"],
                "collectorNumber": _number(r["collector_number"], False),
                "endpoint": r["endpoint"],
                "direction": r["direction"],
                "offerCode": r["offer_code"],
                "miles": r["miles"],
                "reason": r["reason"],
                "processedAt": _at(r["processed_at"], zone),
                "ageSeconds": max(0, int((now - r["processed_at"]).total_seconds())),
            }
            for r in rows
        ],
        None if last is None else (last["processed_at"], last["transaction_id"], last["line_no"]),
    )


class LineReviewError(settlement.ReviewError):
    """One line of a review could not be reviewed (not found, not pending review, or named
    twice): nothing of the review is kept. `index` is its place in the list given."""

    def __init__(self, index: int, line_id: str, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.line_id = line_id


def review(
    session: Session,
    action: ReviewAction,
    line_ids: Sequence[str],
    note: str | None,
    now: datetime,
    actor: Actor,
) -> list[str]:
    """Approve or reject (`REVIEW_REJECTED`) every line of `line_ids`, held for review, in the
    caller's unit of work, with one audit entry per line; the first line that cannot be reviewed
    raises `LineReviewError` and the caller's unit of work, rolled back, keeps nothing."""
    seen: set[str] = set()
    for index, text in enumerate(line_ids):
        if text in seen:
            raise LineReviewError(index, text, f"line {text} is named twice")
        seen.add(text)
        try:
            if action is ReviewAction.APPROVE:
                settlement.approve(session, text)
                after: dict[str, Any] = {
                    "status": LineStatus.PENDING,
                    "pendingReason": PendingReason.APPROVED,
                }
            else:
                settlement.reject(
                    session,
                    text,
                    settlement.REVIEW_REJECTED,
                    now,
                    known_codes=list(PROBLEM_CODES),
                )
                after = {"status": LineStatus.REJECTED, "errorCode": settlement.REVIEW_REJECTED}
        except settlement.ReviewError as exc:
            raise LineReviewError(index, text, str(exc)) from exc
        operators.audit(
            session,
            actor,
            f"pending.{action}",
            ENTITY_LINE,
            text,
            now,
            before={"status": LineStatus.PENDING, "pendingReason": PendingReason.REVIEW},
            after=after,
            note=note,
        )
    return list(line_ids)


# --------------------------------------------------------------------------- audit log


def _parsed(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def audit_log(
    session: Session,
    *,
    entity: str | None = None,
    entity_id: str | None = None,
    actor: str | None = None,
    at_from: datetime | None = None,
    at_to: datetime | None = None,
    before_id: int | None = None,
    limit: int,
    zone: str,
) -> Page:
    """Audit entries newest first."""
    rows = repository.audit_page(
        session,
        entity=entity,
        entity_id=entity_id,
        actor=actor,
        at_from=at_from,
        at_to=at_to,
        before_id=before_id,
        limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        [
            {
                "id": r["id"],
                "at": _at(r["at"], zone),
                "actor": r["actor"],
                "action": r["action"],
                "entity": r["entity"],
                "entityId": r["entity_id"],
                "before": _parsed(r["before_json"]),
                "after": _parsed(r["after_json"]),
                "note": r["note"],
                "requestId": r["request_id"],
            }
            for r in rows
        ],
        (rows[-1]["id"],) if more else None,
    )
