"""Queries of the collectors package that the ORM's `session.get` does not cover."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rewardmiles.db.models import IssuanceLine, Transaction
from rewardmiles.vocabulary import LineStatus


@dataclass(frozen=True, slots=True)
class Activity:
    pending_lines: int
    first_at: datetime | None
    last_at: datetime | None


def activity(session: Session, number: str) -> Activity:
    """The collector's pending lines, and when the first and the last transaction naming it
    (accepted or rejected) were processed: both through `ix_transactions_collector`."""
    first, last = session.execute(
        select(func.min(Transaction.processed_at), func.max(Transaction.processed_at)).where(
            Transaction.collector_number == number
        )
    ).one()
    pending = session.execute(
        select(func.count())
        .select_from(IssuanceLine)
        .join(Transaction, Transaction.id == IssuanceLine.transaction_id)
        .where(Transaction.collector_number == number, IssuanceLine.status == LineStatus.PENDING)
    ).scalar_one()
    return Activity(int(pending), first, last)
