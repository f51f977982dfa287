"""Queries of the collectors package that the ORM's `session.get` does not cover."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import and_, func, insert, or_, select
from sqlalchemy.orm import Session

from rewardmiles.db.models import LINE_IS_PENDING, Adjustment, IssuanceLine, Transaction


@dataclass(frozen=True, slots=True)
class Activity:
    pending_lines: int
    first_at: datetime | None
    last_at: datetime | None


def activity(session: Session, number: str) -> Activity:
    """The collector's pending lines, and when the first and the last transaction naming it
    (accepted or rejected) were processed: each end read from `ix_transactions_collector`
    (number, processing time) in one index step.

    The number is matched as a range of one value and the order names both index columns: with
    an equality (or `min`/`max`) PostgreSQL may walk `ix_transactions_processed` from an end
    instead, filtering every transaction for the collector, which for a member idle for a year
    reads the whole year's transactions. A range keeps the number in the order, which only the
    collector's index gives."""
    mine = Transaction.collector_number.between(number, number)
    by_time = (Transaction.collector_number, Transaction.processed_at)
    first = session.execute(
        select(Transaction.processed_at).where(mine).order_by(*by_time).limit(1)
    ).scalar_one_or_none()
    last = session.execute(
        select(Transaction.processed_at)
        .where(mine)
        .order_by(*(column.desc() for column in by_time))
        .limit(1)
    ).scalar_one_or_none()
    pending = session.execute(
        select(func.count())
        .select_from(IssuanceLine)
        .join(Transaction, Transaction.id == IssuanceLine.transaction_id)
        .where(Transaction.collector_number == number, LINE_IS_PENDING)
    ).scalar_one()
    return Activity(int(pending), first, last)


# --------------------------------------------------------------------------- adjustments


@dataclass(frozen=True, slots=True)
class StoredAdjustment:
    id: str
    collector_number: str
    miles: int
    reason: str
    note: str
    operator: str
    idempotency_key: str
    fingerprint: str
    balance_after: int
    created_at: datetime


_ADJUSTMENT_COLUMNS = (
    Adjustment.id,
    Adjustment.collector_number,
    Adjustment.miles,
    Adjustment.reason,
    Adjustment.note,
    Adjustment.operator,
    Adjustment.idempotency_key,
    Adjustment.fingerprint,
    Adjustment.balance_after,
    Adjustment.created_at,
)


def adjustment_by_key(session: Session, operator: str, key: str) -> StoredAdjustment | None:
    row = session.execute(
        select(*_ADJUSTMENT_COLUMNS).where(
            Adjustment.operator == operator, Adjustment.idempotency_key == key
        )
    ).one_or_none()
    return None if row is None else StoredAdjustment(**row._asdict())


def insert_adjustment(session: Session, adjustment: StoredAdjustment) -> None:
    """Insert the row now (its ledger pair, written next, refers to it)."""
    session.connection().execute(insert(Adjustment), [asdict(adjustment)])


def adjustments(
    session: Session,
    start: datetime | None,
    end: datetime | None,
    operator: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[StoredAdjustment]:
    """Adjustments made in [start, end) (by `operator`), oldest first, after the keyset `after`
    (created_at, id): through `ix_adjustments_created`."""
    query = select(*_ADJUSTMENT_COLUMNS).order_by(Adjustment.created_at, Adjustment.id)
    if start is not None:
        query = query.where(Adjustment.created_at >= start)
    if end is not None:
        query = query.where(Adjustment.created_at < end)
    if operator is not None:
        query = query.where(Adjustment.operator == operator)
    if after is not None:
        query = query.where(
            or_(
                Adjustment.created_at > after[0],
                and_(Adjustment.created_at == after[0], Adjustment.id > after[1]),
            )
        )
    return [StoredAdjustment(**row._asdict()) for row in session.execute(query.limit(limit))]
