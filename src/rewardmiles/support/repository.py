"""Queries of the support desk's look-ups: failed partner requests (written in batches, found by
request id, purged), transaction search and detail, the pending lines' pages, the audit log's
pages, a day's figures at a glance. Every list is a keyset page through an index (never OFFSET).
No rules here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Integer,
    RowMapping,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from rewardmiles.db.models import (
    DELIVERY_IS_PENDING,
    LINE_IS_PENDING,
    IssuanceLine,
    LedgerEntry,
    OperatorAuditEntry,
    RequestFailure,
    Transaction,
    WebhookDelivery,
)
from rewardmiles.settlement.repository import PENDING_LINE_COLUMNS
from rewardmiles.vocabulary import AccountKind, DeliveryStatus

# --------------------------------------------------------------------------- failed requests


@dataclass(frozen=True, slots=True)
class FailureRow:
    request_id: str
    at: datetime
    client_id: str | None
    method: str
    path: str
    status: int
    code: str | None
    detail: str | None
    field: str | None


def insert_failures(session: Session, rows: Sequence[FailureRow]) -> None:
    """One multi-row statement for the batch."""
    if rows:
        session.execute(
            insert(RequestFailure),
            [
                {
                    "request_id": r.request_id,
                    "at": r.at,
                    "client_id": r.client_id,
                    "method": r.method,
                    "path": r.path,
                    "status": r.status,
                    "code": r.code,
                    "detail": r.detail,
                    "field": r.field,
                }
                for r in rows
            ],
        )


def failure_by_request_id(session: Session, request_id: str) -> FailureRow | None:
    """The latest failure recorded under `request_id` (a client's own X-Request-Id may repeat)."""
    row = session.execute(
        select(
            RequestFailure.request_id,
            RequestFailure.at,
            RequestFailure.client_id,
            RequestFailure.method,
            RequestFailure.path,
            RequestFailure.status,
            RequestFailure.code,
            RequestFailure.detail,
            RequestFailure.field,
        )
        .where(RequestFailure.request_id == request_id)
        .order_by(RequestFailure.id.desc())
        .limit(1)
    ).first()
    return None if row is None else FailureRow(**row._mapping)


def purge_failures(session: Session, before: datetime, batch: int) -> int:
    """Delete at most `batch` failures recorded before `before` (oldest first); how many."""
    ids = list(
        session.execute(
            select(RequestFailure.id)
            .where(RequestFailure.at < before)
            .order_by(RequestFailure.at)
            .limit(batch)
        ).scalars()
    )
    if ids:
        session.execute(delete(RequestFailure).where(RequestFailure.id.in_(ids)))
    return len(ids)


# --------------------------------------------------------------------------- transactions

_TRANSACTION_COLUMNS = (
    Transaction.id,
    Transaction.client_id,
    Transaction.sponsor_code,
    Transaction.endpoint,
    Transaction.partner_transaction_id,
    Transaction.collector_number,
    Transaction.original_transaction_id,
    Transaction.status,
    Transaction.http_status,
    Transaction.error_code,
    Transaction.partner_datetime,
    Transaction.processed_at,
)


@dataclass(frozen=True, slots=True)
class TransactionFilter:
    transaction_id: str | None = None
    partner_transaction_id: str | None = None
    collector_number: str | None = None
    sponsor_code: str | None = None
    endpoint: str | None = None
    status: str | None = None
    processed_from: datetime | None = None  # inclusive
    processed_to: datetime | None = None  # exclusive


def transactions_page(
    session: Session, where: TransactionFilter, after: tuple[datetime, str] | None, limit: int
) -> list[RowMapping]:
    """At most `limit` transactions matching `where`, newest first by (processed_at, id), those
    after the key `after` only."""
    stmt = select(*_TRANSACTION_COLUMNS)
    conditions: list[Any] = []
    if where.transaction_id is not None:
        conditions.append(Transaction.id == where.transaction_id)
    if where.partner_transaction_id is not None:
        conditions.append(Transaction.partner_transaction_id == where.partner_transaction_id)
    if where.collector_number is not None:
        conditions.append(Transaction.collector_number == where.collector_number)
    if where.sponsor_code is not None:
        conditions.append(Transaction.sponsor_code == where.sponsor_code)
    if where.endpoint is not None:
        conditions.append(Transaction.endpoint == where.endpoint)
    if where.status is not None:
        conditions.append(Transaction.status == where.status)
    if where.processed_from is not None:
        conditions.append(Transaction.processed_at >= where.processed_from)
    if where.processed_to is not None:
        conditions.append(Transaction.processed_at < where.processed_to)
    if after is not None:
        at, last_id = after
        conditions.append(
            or_(
                Transaction.processed_at < at,
                and_(Transaction.processed_at == at, Transaction.id < last_id),
            )
        )
    stmt = stmt.where(*conditions).order_by(Transaction.processed_at.desc(), Transaction.id.desc())
    return [row._mapping for row in session.execute(stmt.limit(limit))]


def transaction_detail(session: Session, transaction_id: str) -> RowMapping | None:
    row = session.execute(
        select(
            *_TRANSACTION_COLUMNS,
            Transaction.request_json,
            Transaction.response_json,
            Transaction.calculation_json,
        ).where(Transaction.id == transaction_id)
    ).first()
    return None if row is None else row._mapping


def transaction_lines(session: Session, transaction_id: str) -> list[RowMapping]:
    return [
        row._mapping
        for row in session.execute(
            select(
                IssuanceLine.line_no,
                IssuanceLine.direction,
                IssuanceLine.offer_code,
                IssuanceLine.location_code,
                IssuanceLine.miles,
                IssuanceLine.status,
                IssuanceLine.pending_reason,
                IssuanceLine.error_code,
                IssuanceLine.settled_at,
            )
            .where(IssuanceLine.transaction_id == transaction_id)
            .order_by(IssuanceLine.line_no)
        )
    ]


def reversals_of(session: Session, transaction_id: str) -> list[RowMapping]:
    """The transactions naming `transaction_id` as their original, oldest first."""
    return [
        row._mapping
        for row in session.execute(
            select(*_TRANSACTION_COLUMNS)
            .where(Transaction.original_transaction_id == transaction_id)
            .order_by(Transaction.processed_at, Transaction.id)
        )
    ]


# --------------------------------------------------------------------------- pending lines


def pending_page(
    session: Session,
    sponsor_code: str | None,
    reason: str | None,
    after: tuple[datetime, str, int] | None,
    limit: int,
    *,
    processed_before: datetime | None = None,
) -> list[RowMapping]:
    """At most `limit` pending lines, oldest first by (processed_at, transaction id, line),
    after the key `after` only; with `processed_before`, those of calls processed before it
    only.

    The pending lines are found first, through their partial index (its predicate written out,
    `LINE_IS_PENDING`), behind an `OFFSET 0` fence, then joined to their calls and sorted:
    pending lines are few. Without the fence PostgreSQL, once it has the tables' statistics,
    walks `ix_transactions_processed_status` from the oldest call instead, looking up each
    call's lines for a pending one (185 ms on 1M calls with 5,000 pending, against about 20 ms
    through the index when the calls are cached)."""
    held: list[Any] = [LINE_IS_PENDING]
    if reason is not None:
        held.append(IssuanceLine.pending_reason == reason)
    lines = select(*PENDING_LINE_COLUMNS).where(*held).offset(0).subquery("held")
    conditions: list[Any] = []
    if sponsor_code is not None:
        conditions.append(Transaction.sponsor_code == sponsor_code)
    if processed_before is not None:
        conditions.append(Transaction.processed_at < processed_before)
    if after is not None:
        at, txn, line_no = after
        conditions.append(
            or_(
                Transaction.processed_at > at,
                and_(Transaction.processed_at == at, lines.c.transaction_id > txn),
                and_(
                    Transaction.processed_at == at,
                    lines.c.transaction_id == txn,
                    lines.c.line_no > line_no,
                ),
            )
        )
    stmt = (
        select(
            lines.c.transaction_id,
            lines.c.line_no,
            Transaction.sponsor_code,
            Transaction.collector_number,
            Transaction.endpoint,
            lines.c.direction,
            lines.c.offer_code,
            lines.c.miles,
            lines.c.pending_reason.label("reason"),
            Transaction.processed_at,
        )
        .join(Transaction, Transaction.id == lines.c.transaction_id)
        .where(*conditions)
        .order_by(Transaction.processed_at, lines.c.transaction_id, lines.c.line_no)
        .limit(limit)
    )
    return [row._mapping for row in session.execute(stmt)]


# --------------------------------------------------------------------------- audit log


def audit_page(
    session: Session,
    *,
    entity: str | None,
    entity_id: str | None,
    actor: str | None,
    at_from: datetime | None,
    at_to: datetime | None,
    before_id: int | None,
    limit: int,
) -> list[RowMapping]:
    """At most `limit` audit entries, newest first (by id: the log is append-only), those
    before `before_id` only."""
    conditions: list[Any] = []
    if entity is not None:
        conditions.append(OperatorAuditEntry.entity == entity)
    if entity_id is not None:
        conditions.append(OperatorAuditEntry.entity_id == entity_id)
    if actor is not None:
        conditions.append(OperatorAuditEntry.actor == actor)
    if at_from is not None:
        conditions.append(OperatorAuditEntry.at >= at_from)
    if at_to is not None:
        conditions.append(OperatorAuditEntry.at < at_to)
    if before_id is not None:
        conditions.append(OperatorAuditEntry.id < before_id)
    stmt = (
        select(
            OperatorAuditEntry.id,
            OperatorAuditEntry.at,
            OperatorAuditEntry.actor,
            OperatorAuditEntry.action,
            OperatorAuditEntry.entity,
            OperatorAuditEntry.entity_id,
            OperatorAuditEntry.before_json,
            OperatorAuditEntry.after_json,
            OperatorAuditEntry.note,
            OperatorAuditEntry.request_id,
        )
        .where(*conditions)
        .order_by(OperatorAuditEntry.id.desc())
        .limit(limit)
    )
    return [row._mapping for row in session.execute(stmt)]


# --------------------------------------------------------------------------- a day at a glance
#
# Each reads one day's range through an index and aggregates in SQL. The per-hour figures take the
# hours to read as `ranges` ([start, stop) in UTC) and answer (position in `ranges`, figures...):
# one statement, a UNION ALL of one aggregate per range, each a range of the index; a CASE over
# the hour boundaries evaluated on every row costs several times more. The statement of each
# figure and number of ranges is built once, with bound bounds (`_per_range`): building 24
# branches cost more than running them.

Ranges = Sequence[tuple[datetime, datetime]]
ACCEPTED_STATUSES = (200, 202)  # a partner call answered so was accepted: a transaction row
# The built statements, by number of ranges (a day has 23, 24 or 25 hours; fewer are read when
# some are known already).
_PARTNER_MILES: dict[int, Any] = {}
_ANSWERS: dict[int, Any] = {}
_FAILURES: dict[int, Any] = {}


def _per_range(
    branch: Callable[[int, Any, Any], Any], ranges: Ranges, cache: dict[int, Any]
) -> tuple[Any, dict[str, datetime]]:
    """`branch(position, start, stop)` for each range, as one UNION ALL (kept in `cache` by the
    number of ranges), and the bounds to bind."""
    statement = cache.get(len(ranges))
    if statement is None:
        statement = union_all(
            *(
                branch(i, bindparam(f"start_{i}"), bindparam(f"stop_{i}"))
                for i in range(len(ranges))
            )
        )
        cache[len(ranges)] = statement
    bounds: dict[str, datetime] = {}
    for i, (start, stop) in enumerate(ranges):
        bounds[f"start_{i}"] = start
        bounds[f"stop_{i}"] = stop
    return statement, bounds


def _partner_miles_branch(position: int, start: Any, stop: Any) -> Any:
    credit = case((LedgerEntry.amount_miles > 0, LedgerEntry.amount_miles), else_=0)
    debit = case((LedgerEntry.amount_miles < 0, -LedgerEntry.amount_miles), else_=0)
    return select(literal(position, Integer), func.sum(credit), func.sum(debit)).where(
        LedgerEntry.account_kind == AccountKind.COLLECTOR,
        LedgerEntry.posted_at >= start,
        LedgerEntry.posted_at < stop,
        LedgerEntry.transaction_id.is_not(None),
    )


def _answers_branch(position: int, start: Any, stop: Any) -> Any:
    return (
        select(literal(position, Integer), Transaction.http_status, func.count())
        .where(
            Transaction.processed_at >= start,
            Transaction.processed_at < stop,
            Transaction.http_status.in_(ACCEPTED_STATUSES),
        )
        .group_by(Transaction.http_status)
    )


def _failures_branch(position: int, start: Any, stop: Any) -> Any:
    server_side = RequestFailure.status >= 500
    return (
        select(literal(position, Integer), server_side, func.count())
        .where(RequestFailure.at >= start, RequestFailure.at < stop, RequestFailure.status >= 400)
        .group_by(server_side)
    )


def partner_miles_per_hour(session: Session, ranges: Ranges) -> list[tuple[int, int, int]]:
    """(position, miles credited, miles debited) of the collectors' ledger entries of partner
    lines posted in each range (`ix_ledger_entries_posted`)."""
    if not ranges:
        return []
    statement, bounds = _per_range(_partner_miles_branch, ranges, _PARTNER_MILES)
    rows = session.connection().execute(statement, bounds)
    return [(int(h), int(c or 0), int(d or 0)) for h, c, d in rows]


def answers_per_hour(session: Session, ranges: Ranges) -> list[tuple[int, int, int]]:
    """(position, HTTP status, transactions) of the transactions processed in each range and
    answered 200 or 202 (`ix_transactions_processed_status`)."""
    if not ranges:
        return []
    statement, bounds = _per_range(_answers_branch, ranges, _ANSWERS)
    rows = session.connection().execute(statement, bounds)
    return [(int(h), int(s), int(n)) for h, s, n in rows]


def failures_per_hour(session: Session, ranges: Ranges) -> list[tuple[int, bool, int]]:
    """(position, answered 5xx, failed requests) of the failed requests recorded in each range
    (`ix_request_failures_at`)."""
    if not ranges:
        return []
    statement, bounds = _per_range(_failures_branch, ranges, _FAILURES)
    rows = session.connection().execute(statement, bounds)
    return [(int(h), bool(s), int(n)) for h, s, n in rows]


def failure_codes(
    session: Session, start: datetime, end: datetime, limit: int
) -> list[tuple[str, int]]:
    """The `limit` codes the day's failed requests were answered with most, most first."""
    count = func.count()
    rows = session.execute(
        select(RequestFailure.code, count)
        .where(
            RequestFailure.at >= start, RequestFailure.at < end, RequestFailure.code.is_not(None)
        )
        .group_by(RequestFailure.code)
        .order_by(count.desc(), RequestFailure.code)
        .limit(limit)
    )
    return [(str(code), int(n)) for code, n in rows]


def latest_failures(
    session: Session, start: datetime, end: datetime, limit: int
) -> list[FailureRow]:
    """The day's last `limit` failed requests, newest first."""
    rows = session.execute(
        select(
            RequestFailure.request_id,
            RequestFailure.at,
            RequestFailure.client_id,
            RequestFailure.method,
            RequestFailure.path,
            RequestFailure.status,
            RequestFailure.code,
            RequestFailure.detail,
            RequestFailure.field,
        )
        .where(RequestFailure.at >= start, RequestFailure.at < end)
        .order_by(RequestFailure.at.desc(), RequestFailure.id.desc())
        .limit(limit)
    )
    return [FailureRow(**row._mapping) for row in rows]


def failing_deliveries(session: Session, start: datetime, end: datetime) -> tuple[int, int]:
    """(deliveries being retried now after a failed attempt, deliveries created in the day and
    given up): the partial index of due deliveries, `ix_webhook_deliveries_created`."""
    retrying = session.execute(
        select(func.count())
        .select_from(WebhookDelivery)
        .where(DELIVERY_IS_PENDING, WebhookDelivery.attempts > 0)
    ).scalar_one()
    given_up = session.execute(
        select(func.count())
        .select_from(WebhookDelivery)
        .where(
            WebhookDelivery.created_at >= start,
            WebhookDelivery.created_at < end,
            WebhookDelivery.status == DeliveryStatus.FAILED,
        )
    ).scalar_one()
    return int(retrying), int(given_up)
