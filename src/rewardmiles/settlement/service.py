"""Settle pending issuance lines once their cause clears, or reject them.

A line is pending because its collector is unknown or on hold, because it awaits an operator's
review, or because it reverses an original line that is itself pending. The worker finds lines
whose cause may have cleared (or whose pending window has passed) and settles them, collector by
collector, each in its own unit of work that locks the collector's row first — the same lock order
as the API — then claims that collector's lines with `FOR UPDATE SKIP LOCKED`, so several workers
never settle a line twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from rewardmiles import ledger
from rewardmiles.config import NegativeBalancePolicy, Settings
from rewardmiles.db.engine import Database
from rewardmiles.db.models import PENDING, POSTED, REJECTED, Collector, IssuanceLine, Transaction
from rewardmiles.errors import OperatorError
from rewardmiles.issuance import repository as issuance_repo
from rewardmiles.webhooks import service as webhooks

CREDIT = "credit"

REVIEW = "review"
APPROVED = "approved"
COLLECTOR_UNKNOWN = "collector_unknown"
COLLECTOR_ON_HOLD = "collector_on_hold"
ORIGINAL_PENDING = "original_pending"

COLLECTORS_PER_PASS_MAX = 200
# Lines settled under one hold of a collector's row lock: a backlog of thousands is settled in
# several short transactions, so the partner requests for that collector wait milliseconds, not
# seconds, between them.
SETTLED_PER_TRANSACTION_MAX = 100


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


@dataclass
class SettleReport:
    posted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    still_pending: int = 0
    webhooks_delivered: int = 0
    webhook_failures: int = 0

    @property
    def settled(self) -> int:
        return self.posted + sum(self.rejected.values())


_original_line = aliased(IssuanceLine)
_original_pending = exists().where(
    _original_line.transaction_id == Transaction.original_transaction_id,
    _original_line.offer_code == IssuanceLine.offer_code,
    _original_line.status == PENDING,
)

# Collectors with at least one pending line whose cause may have cleared, or that has expired.
_CANDIDATE_COLLECTORS = (
    select(Transaction.collector_number)
    .join(IssuanceLine, IssuanceLine.transaction_id == Transaction.id)
    .outerjoin(Collector, Collector.number == Transaction.collector_number)
    .where(
        IssuanceLine.status == PENDING,
        or_(
            Transaction.processed_at < bindparam("expired_before"),
            and_(
                Collector.status.in_(("ACTIVE", "CLOSED")),
                or_(
                    IssuanceLine.pending_reason.in_(
                        (COLLECTOR_UNKNOWN, COLLECTOR_ON_HOLD, APPROVED)
                    ),
                    and_(IssuanceLine.pending_reason == ORIGINAL_PENDING, ~_original_pending),
                ),
            ),
        ),
    )
    .group_by(Transaction.collector_number)
    .limit(bindparam("limit"))
)

_CLAIM_LINES = (
    select(
        IssuanceLine.transaction_id,
        IssuanceLine.line_no,
        IssuanceLine.direction,
        IssuanceLine.offer_code,
        IssuanceLine.miles,
        IssuanceLine.pending_reason,
        Transaction.collector_number,
        Transaction.sponsor_code,
        Transaction.original_transaction_id,
        Transaction.processed_at,
    )
    .join(Transaction, Transaction.id == IssuanceLine.transaction_id)
    .where(Transaction.collector_number == bindparam("collector"), IssuanceLine.status == PENDING)
    .order_by(Transaction.processed_at, IssuanceLine.transaction_id, IssuanceLine.line_no)
    .with_for_update(of=IssuanceLine, skip_locked=True)
)

_SETTLE_LINE = (
    update(IssuanceLine)
    .where(
        IssuanceLine.transaction_id == bindparam("b_transaction_id"),
        IssuanceLine.line_no == bindparam("b_line_no"),
        IssuanceLine.status == PENDING,
    )
    .values(
        status=bindparam("b_status"),
        pending_reason=bindparam("b_reason"),
        error_code=bindparam("b_error_code"),
        settled_at=bindparam("b_settled_at", type_=IssuanceLine.__table__.c.settled_at.type),
    )
)


def settle_pending(db: Database, settings: Settings, now: datetime) -> SettleReport:
    """One pass over the collectors with settleable lines; returns what it did."""
    expired_before = now - timedelta(days=settings.pending_window_days)
    with db.reader() as session:
        collectors = list(
            session.connection()
            .execute(
                _CANDIDATE_COLLECTORS,
                {"expired_before": expired_before, "limit": COLLECTORS_PER_PASS_MAX},
            )
            .scalars()
        )
    report = SettleReport()
    for number in collectors:
        if number is None:  # RECORD transactions without a collector never pend
            continue
        more = True
        while more:
            with db.unit_of_work() as session:
                more = _settle_collector(session, settings, number, now, expired_before, report)
    return report


def _settle_collector(
    session: Session,
    settings: Settings,
    number: str,
    now: datetime,
    expired_before: datetime,
    report: SettleReport,
) -> bool:
    """Settle what can be settled of one collector's pending lines, at most
    SETTLED_PER_TRANSACTION_MAX of them; True if it stopped there (call again)."""
    account = ledger.lock_collector(session, number)
    rows = session.connection().execute(_CLAIM_LINES, {"collector": number}).all()
    touched: set[str] = set()
    settled = still_pending = 0
    stopped_early = False
    for row in rows:
        if settled == SETTLED_PER_TRANSACTION_MAX:
            stopped_early = True
            break
        line = PendingLine(**row._mapping)
        outcome = _decide(session, settings, account, line)
        if outcome is None and line.processed_at < expired_before:
            outcome = (REJECTED, "PENDING_EXPIRED")
        if outcome is None:
            still_pending += 1
            continue
        status, detail = outcome
        settled += 1
        if status == POSTED:
            assert account is not None
            sign = 1 if line.direction == CREDIT else -1
            account = ledger.post(
                session,
                account,
                [
                    ledger.Posting(
                        line.transaction_id,
                        line.line_no,
                        number,
                        line.sponsor_code,
                        sign * line.miles,
                    )
                ],
                posted_at=now,
            )
            _mark(session, line, POSTED, None, now)
            report.posted += 1
        elif status == REJECTED:
            _mark(session, line, REJECTED, detail, now)
            report.rejected[detail or ""] += 1
        else:  # still pending, for a new reason
            _reason(session, line, detail)
            still_pending += 1
            settled -= 1  # a new reason is not a settlement
            continue
        touched.add(line.transaction_id)
    for transaction_id in touched:
        _after_settlement(session, transaction_id, now)
    if not stopped_early:  # the last round saw every line: count what is left once
        report.still_pending += still_pending
    return stopped_early


def _after_settlement(session: Session, transaction_id: str, now: datetime) -> None:
    """Once a transaction has no pending line left, its sponsor's webhooks get an event (outbox,
    same unit of work)."""
    if issuance_repo.refresh_transaction_status(session, transaction_id) != POSTED:
        return
    sponsor_code = session.execute(
        select(Transaction.sponsor_code).where(Transaction.id == transaction_id)
    ).scalar_one()
    webhooks.enqueue_settled(session, transaction_id, sponsor_code, now)


def _decide(
    session: Session, settings: Settings, account: ledger.CollectorAccount | None, line: PendingLine
) -> tuple[str, str | None] | None:
    """(posted, None) | (rejected, error code) | (pending, new reason) | None (unchanged)."""
    if line.pending_reason == REVIEW:
        return None
    if account is None:
        return None
    if account.status == "CLOSED":
        return REJECTED, "COLLECTOR_CLOSED"
    if account.status == "ON_HOLD":
        return (PENDING, COLLECTOR_ON_HOLD) if line.pending_reason != COLLECTOR_ON_HOLD else None
    if line.original_transaction_id is not None:
        totals = issuance_repo.original_totals(session, line.original_transaction_id)
        if line.offer_code in totals.pending_offers:
            return (PENDING, ORIGINAL_PENDING) if line.pending_reason != ORIGINAL_PENDING else None
        # An original line rejected meanwhile lowers what may be reversed. This line is one of
        # the reversed miles (pending, not rejected): its offer is always among them.
        if totals.reversed_miles[line.offer_code] > totals.issued_miles.get(line.offer_code, 0):
            return REJECTED, "REVERSAL_EXCEEDS_ORIGINAL"
    if (
        line.direction != CREDIT
        and settings.negative_balance_policy is NegativeBalancePolicy.REJECT
        and account.balance_miles < line.miles
    ):
        return REJECTED, "INSUFFICIENT_BALANCE"
    return POSTED, None


def _mark(
    session: Session, line: PendingLine, status: str, error_code: str | None, now: datetime
) -> None:
    session.connection().execute(
        _SETTLE_LINE,
        {
            "b_transaction_id": line.transaction_id,
            "b_line_no": line.line_no,
            "b_status": status,
            "b_reason": None,
            "b_error_code": error_code,
            "b_settled_at": now,
        },
    )


def _reason(session: Session, line: PendingLine, reason: str | None) -> None:
    session.execute(
        update(IssuanceLine)
        .where(
            IssuanceLine.transaction_id == line.transaction_id,
            IssuanceLine.line_no == line.line_no,
        )
        .values(pending_reason=reason)
    )


# --------------------------------------------------------------------------- operator review


@dataclass(frozen=True, slots=True)
class PendingView:
    line_id: str
    transaction_id: str
    line_no: int
    sponsor_code: str
    collector_number: str | None
    endpoint: str
    direction: str
    offer_code: str
    miles: int
    reason: str | None
    processed_at: datetime


class ReviewError(OperatorError):
    pass


class UnknownReasonError(ReviewError):
    """A rejection's reason that is not an error code of the catalogue."""


# The reason of a rejection when the operator names none.
REVIEW_REJECTED = "REVIEW_REJECTED"


def line_id(transaction_id: str, line_no: int) -> str:
    return f"{transaction_id}:{line_no}"


def _parse_line_id(text: str) -> tuple[str, int]:
    transaction_id, sep, number = text.rpartition(":")
    if not sep or not number.isdigit():
        raise ReviewError(f"line id {text!r} must look like TRANSACTION_ID:LINE_NO")
    return transaction_id, int(number)


def list_pending(
    session: Session, sponsor_code: str | None = None, limit: int = 1000
) -> list[PendingView]:
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
        .where(IssuanceLine.status == PENDING)
        .order_by(Transaction.processed_at, IssuanceLine.transaction_id, IssuanceLine.line_no)
        .limit(limit)
    )
    if sponsor_code:
        stmt = stmt.where(Transaction.sponsor_code == sponsor_code)
    return [
        PendingView(line_id=line_id(r.transaction_id, r.line_no), **r._mapping)
        for r in session.execute(stmt)
    ]


def count_pending(session: Session) -> int:
    return int(
        session.execute(select(func.count()).where(IssuanceLine.status == PENDING)).scalar_one()
    )


def _review_line(session: Session, text: str) -> tuple[str, int]:
    transaction_id, line_no = _parse_line_id(text)
    reason = session.execute(
        select(IssuanceLine.pending_reason)
        .where(
            IssuanceLine.transaction_id == transaction_id,
            IssuanceLine.line_no == line_no,
            IssuanceLine.status == PENDING,
        )
        .with_for_update()
    ).scalar_one_or_none()
    if reason != REVIEW:
        raise ReviewError(f"line {text} is not pending review")
    return transaction_id, line_no


def approve(session: Session, text: str) -> None:
    """The line may settle now (the worker posts it once its collector allows)."""
    transaction_id, line_no = _review_line(session, text)
    session.execute(
        update(IssuanceLine)
        .where(IssuanceLine.transaction_id == transaction_id, IssuanceLine.line_no == line_no)
        .values(pending_reason=APPROVED)
    )


def reject(
    session: Session, text: str, code: str, now: datetime, *, known_codes: Sequence[str]
) -> None:
    if code not in known_codes:
        raise UnknownReasonError(
            f"reason {code!r} is not an error code of the catalogue (leave it out for "
            f"{REVIEW_REJECTED}: refused by an operator)"
        )
    transaction_id, line_no = _review_line(session, text)
    session.execute(
        update(IssuanceLine)
        .where(IssuanceLine.transaction_id == transaction_id, IssuanceLine.line_no == line_no)
        .values(status=REJECTED, pending_reason=None, error_code=code, settled_at=now)
    )
    _after_settlement(session, transaction_id, now)
