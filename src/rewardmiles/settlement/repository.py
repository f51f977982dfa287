"""Queries of settlement: the collectors a pass visits, a collector's pending lines claimed for
settling, the lines marked, and the operator's review of one line. No rules here: the service
decides.

The worker's statements are built once, at import, with bound parameters, and run on the session's
Core connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import RowMapping, and_, bindparam, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from rewardmiles.db.models import (
    LINE_IS_PENDING,
    LINE_PENDING,
    TRANSACTION_IS_PENDING,
    Collector,
    IssuanceLine,
    Transaction,
)
from rewardmiles.vocabulary import CollectorStatus, LineStatus, PendingReason


@dataclass(frozen=True, slots=True)
class PendingLine:
    transaction_id: str
    line_no: int
    direction: str
    offer_code: str
    miles: int
    pending_reason: str | None
    collector_number: str
    sponsor_code: str
    original_transaction_id: str | None
    processed_at: datetime


_original_line = aliased(IssuanceLine)
_original_pending = exists().where(
    _original_line.transaction_id == Transaction.original_transaction_id,
    _original_line.offer_code == IssuanceLine.offer_code,
    _original_line.status == LINE_PENDING,
)

# Collectors with at least one pending line whose cause may have cleared, or that has expired.
_CANDIDATE_COLLECTORS = (
    select(Transaction.collector_number)
    .join(IssuanceLine, IssuanceLine.transaction_id == Transaction.id)
    .outerjoin(Collector, Collector.number == Transaction.collector_number)
    .where(
        LINE_IS_PENDING,
        or_(
            Transaction.processed_at < bindparam("expired_before"),
            and_(
                Collector.status.in_((CollectorStatus.ACTIVE, CollectorStatus.CLOSED)),
                or_(
                    IssuanceLine.pending_reason.in_(
                        (
                            PendingReason.COLLECTOR_UNKNOWN,
                            PendingReason.COLLECTOR_ON_HOLD,
                            PendingReason.APPROVED,
                        )
                    ),
                    and_(
                        IssuanceLine.pending_reason == PendingReason.ORIGINAL_PENDING,
                        ~_original_pending,
                    ),
                ),
            ),
        ),
    )
    .group_by(Transaction.collector_number)
    .limit(bindparam("limit"))
)

# What a pending line is to settle or to review: its key, what it moves and why it is held.
PENDING_LINE_COLUMNS = (
    IssuanceLine.transaction_id,
    IssuanceLine.line_no,
    IssuanceLine.direction,
    IssuanceLine.offer_code,
    IssuanceLine.miles,
    IssuanceLine.pending_reason,
)

_CLAIM_LINES = (
    select(
        *PENDING_LINE_COLUMNS,
        Transaction.collector_number,
        Transaction.sponsor_code,
        Transaction.original_transaction_id,
        Transaction.processed_at,
    )
    .join(Transaction, Transaction.id == IssuanceLine.transaction_id)
    .where(
        Transaction.collector_number == bindparam("collector"),
        LINE_IS_PENDING,
    )
    .order_by(Transaction.processed_at, IssuanceLine.transaction_id, IssuanceLine.line_no)
    .with_for_update(of=IssuanceLine, skip_locked=True)
)

_SETTLE_LINE = (
    update(IssuanceLine)
    .where(
        IssuanceLine.transaction_id == bindparam("b_transaction_id"),
        IssuanceLine.line_no == bindparam("b_line_no"),
        IssuanceLine.status == LineStatus.PENDING,
    )
    .values(
        status=bindparam("b_status"),
        pending_reason=bindparam("b_reason"),
        error_code=bindparam("b_error_code"),
        settled_at=bindparam("b_settled_at", type_=IssuanceLine.__table__.c.settled_at.type),
    )
)


def candidate_collectors(
    session: Session, expired_before: datetime, limit: int
) -> list[str | None]:
    """At most `limit` collectors with a pending line whose cause may have cleared, or that was
    processed before `expired_before`."""
    return list(
        session.connection()
        .execute(_CANDIDATE_COLLECTORS, {"expired_before": expired_before, "limit": limit})
        .scalars()
    )


def claim_lines(session: Session, collector_number: str) -> Iterator[PendingLine]:
    """The collector's pending lines, oldest first, locked (`FOR UPDATE SKIP LOCKED`: those
    another worker holds are left out). They are all fetched at once."""
    rows = session.connection().execute(_CLAIM_LINES, {"collector": collector_number}).all()
    return (PendingLine(**row._mapping) for row in rows)


def settle_line(
    session: Session,
    transaction_id: str,
    line_no: int,
    status: LineStatus,
    error_code: str | None,
    settled_at: datetime,
) -> None:
    """The pending line leaves pending with `status` (its pending reason cleared)."""
    session.connection().execute(
        _SETTLE_LINE,
        {
            "b_transaction_id": transaction_id,
            "b_line_no": line_no,
            "b_status": status,
            "b_reason": None,
            "b_error_code": error_code,
            "b_settled_at": settled_at,
        },
    )


def set_pending_reason(
    session: Session, transaction_id: str, line_no: int, reason: str | None
) -> None:
    session.execute(
        update(IssuanceLine)
        .where(IssuanceLine.transaction_id == transaction_id, IssuanceLine.line_no == line_no)
        .values(pending_reason=reason)
    )


def sponsor_of(session: Session, transaction_id: str) -> str:
    return session.execute(
        select(Transaction.sponsor_code).where(Transaction.id == transaction_id)
    ).scalar_one()


# --------------------------------------------------------------------------- operator review


def pending_lines(session: Session, sponsor_code: str | None, limit: int) -> list[RowMapping]:
    """Pending lines, oldest first then by line id, at most `limit`; only `sponsor_code`'s when
    given. Each row: transaction_id, line_no, sponsor_code, collector_number, endpoint,
    direction, offer_code, miles, reason, processed_at."""
    stmt = (
        select(
            IssuanceLine.transaction_id,
            IssuanceLine.line_no,
            Transaction.sponsor_code,
            Transaction.collector_number,
            Transaction.endpoint,
            IssuanceLine.direction,
            IssuanceLine.offer_code,
            IssuanceLine.miles,
            IssuanceLine.pending_reason.label("reason"),
            Transaction.processed_at,
        )
        .join(Transaction, Transaction.id == IssuanceLine.transaction_id)
        .where(LINE_IS_PENDING)
        .order_by(Transaction.processed_at, IssuanceLine.transaction_id, IssuanceLine.line_no)
        .limit(limit)
    )
    if sponsor_code:
        stmt = stmt.where(Transaction.sponsor_code == sponsor_code)
    return [row._mapping for row in session.execute(stmt)]


def count_pending(session: Session) -> int:
    return int(session.execute(select(func.count()).where(LINE_IS_PENDING)).scalar_one())


def lock_pending_reason(session: Session, transaction_id: str, line_no: int) -> str | None:
    """The pending line's reason, its row locked; None when no such line is pending (or it has
    no reason)."""
    return session.execute(
        select(IssuanceLine.pending_reason)
        .where(
            IssuanceLine.transaction_id == transaction_id,
            IssuanceLine.line_no == line_no,
            IssuanceLine.status == LineStatus.PENDING,
        )
        .with_for_update()
    ).scalar_one_or_none()


def reject_line(
    session: Session, transaction_id: str, line_no: int, error_code: str, settled_at: datetime
) -> None:
    """The line, locked by `lock_pending_reason`, is rejected with `error_code`."""
    session.execute(
        update(IssuanceLine)
        .where(IssuanceLine.transaction_id == transaction_id, IssuanceLine.line_no == line_no)
        .values(
            status=LineStatus.REJECTED,
            pending_reason=None,
            error_code=error_code,
            settled_at=settled_at,
        )
    )


_PENDING_SUMMARY = select(
    select(func.count()).where(LINE_IS_PENDING).scalar_subquery(),
    select(func.min(Transaction.processed_at)).where(TRANSACTION_IS_PENDING).scalar_subquery(),
)


def pending_summary(session: Session) -> tuple[int, datetime | None]:
    """The pending lines and when the oldest one's transaction was processed (None when there is
    none), each from its partial index: a transaction is `pending` exactly while one of its lines
    is (`refresh_transaction_status`, checked by `ledger verify`), so the oldest is the first
    entry of `ix_transactions_pending`, not a lookup of every pending line's transaction. What
    `GET /metrics` and the console's Today page show of the queue."""
    row = session.connection().execute(_PENDING_SUMMARY).one()
    return int(row[0]), row[1]
