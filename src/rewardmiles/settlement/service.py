"""Settle pending issuance lines once their cause clears, or reject them.

A line is pending because its collector is unknown or on hold, because it awaits an operator's
review, or because it reverses an original line that is itself pending. A pass of the worker
(`settlement.worker.settle_pending`) reads the collectors whose lines' cause may have cleared (or
whose pending window has passed: `candidates`) and settles them, collector by collector, each in
a unit of work of its own (`settle_collector`) that locks the collector's row first — the same lock
order as the API — then claims that collector's lines with `FOR UPDATE SKIP LOCKED`, so several
workers never settle a line twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from rewardmiles import ledger, limits
from rewardmiles.config import Settings
from rewardmiles.errors import OperatorError
from rewardmiles.issuance import repository as issuance_repo
from rewardmiles.settlement import repository
from rewardmiles.settlement.repository import PendingLine
from rewardmiles.vocabulary import (
    CollectorStatus,
    Direction,
    LineStatus,
    NegativeBalancePolicy,
    PendingReason,
    TransactionStatus,
)
from rewardmiles.webhooks import service as webhooks


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

    def add(self, other: SettleReport) -> None:
        """Count what `other` did as well."""
        self.posted += other.posted
        self.rejected.update(other.rejected)
        self.still_pending += other.still_pending


def _expired_before(settings: Settings, now: datetime) -> datetime:
    """Lines processed before this have been pending longer than the window: they expire."""
    return now - timedelta(days=settings.pending_window_days)


def candidates(session: Session, settings: Settings, now: datetime) -> list[str]:
    """The collectors a pass settles, at most `limits.settlement_collectors_per_pass_max`: those
    with a pending line whose cause may have cleared, or that expired."""
    found = repository.candidate_collectors(
        session, _expired_before(settings, now), limits.settlement_collectors_per_pass_max
    )
    # RECORD transactions without a collector never pend
    return [number for number in found if number is not None]


def settle_collector(
    session: Session, settings: Settings, number: str, now: datetime
) -> tuple[SettleReport, bool]:
    """Settle what can be settled of one collector's pending lines, at most
    `limits.settlement_lines_per_transaction_max` of them, in the caller's unit of work: (what it
    did, True if it stopped there: call again, in a new unit of work). The lines left pending are
    counted by the call that saw every line, once."""
    expired_before = _expired_before(settings, now)
    report = SettleReport()
    account = ledger.lock_collector(session, number)
    lines = repository.claim_lines(session, number)
    touched: set[str] = set()
    settled = still_pending = 0
    stopped_early = False
    for line in lines:
        if settled == limits.settlement_lines_per_transaction_max:
            stopped_early = True
            break
        outcome = _decide(session, settings, account, line)
        if outcome is None and line.processed_at < expired_before:
            outcome = (LineStatus.REJECTED, "PENDING_EXPIRED")
        if outcome is None:
            still_pending += 1
            continue
        status, detail = outcome
        settled += 1
        if status == LineStatus.POSTED:
            account = ledger.post(
                session,
                ledger.present(account),
                [
                    ledger.Posting(
                        line.transaction_id,
                        line.line_no,
                        number,
                        line.sponsor_code,
                        ledger.signed_miles(line.direction, line.miles),
                    )
                ],
                posted_at=now,
            )
            repository.settle_line(
                session, line.transaction_id, line.line_no, LineStatus.POSTED, None, now
            )
            report.posted += 1
        elif status == LineStatus.REJECTED:
            repository.settle_line(
                session, line.transaction_id, line.line_no, LineStatus.REJECTED, detail, now
            )
            report.rejected[detail or ""] += 1
        else:  # still pending, for a new reason
            repository.set_pending_reason(session, line.transaction_id, line.line_no, detail)
            still_pending += 1
            settled -= 1  # a new reason is not a settlement
            continue
        touched.add(line.transaction_id)
    for transaction_id in touched:
        _after_settlement(session, transaction_id, now)
    if not stopped_early:  # the last round saw every line: count what is left once
        report.still_pending = still_pending
    return report, stopped_early


def _after_settlement(session: Session, transaction_id: str, now: datetime) -> None:
    """Once a transaction has no pending line left, its sponsor's webhooks get an event (outbox,
    same unit of work)."""
    if (
        issuance_repo.refresh_transaction_status(session, transaction_id)
        != TransactionStatus.POSTED
    ):
        return
    sponsor_code = repository.sponsor_of(session, transaction_id)
    webhooks.enqueue_settled(session, transaction_id, sponsor_code, now)


def _decide(
    session: Session, settings: Settings, account: ledger.CollectorAccount | None, line: PendingLine
) -> tuple[LineStatus, str | None] | None:
    """(posted, None) | (rejected, error code) | (pending, new reason) | None (unchanged)."""
    if line.pending_reason == PendingReason.REVIEW:
        return None
    if account is None:
        return None
    if account.status == CollectorStatus.CLOSED:
        return LineStatus.REJECTED, "COLLECTOR_CLOSED"
    if account.status == CollectorStatus.ON_HOLD:
        return (
            (LineStatus.PENDING, PendingReason.COLLECTOR_ON_HOLD)
            if line.pending_reason != PendingReason.COLLECTOR_ON_HOLD
            else None
        )
    if line.original_transaction_id is not None:
        totals = issuance_repo.original_totals(session, line.original_transaction_id)
        if line.offer_code in totals.pending_offers:
            return (
                (LineStatus.PENDING, PendingReason.ORIGINAL_PENDING)
                if line.pending_reason != PendingReason.ORIGINAL_PENDING
                else None
            )
        # An original line rejected meanwhile lowers what may be reversed. This line is one of
        # the reversed miles (pending, not rejected): its offer is always among them.
        if totals.reversed_miles[line.offer_code] > totals.issued_miles.get(line.offer_code, 0):
            return LineStatus.REJECTED, "REVERSAL_EXCEEDS_ORIGINAL"
    if (
        line.direction != Direction.CREDIT
        and settings.negative_balance_policy is NegativeBalancePolicy.REJECT
        and account.balance_miles < line.miles
    ):
        return LineStatus.REJECTED, "INSUFFICIENT_BALANCE"
    return LineStatus.POSTED, None


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
    return [
        PendingView(line_id=line_id(r["transaction_id"], r["line_no"]), **r)
        for r in repository.pending_lines(session, sponsor_code, limit)
    ]


def _review_line(session: Session, text: str) -> tuple[str, int]:
    transaction_id, line_no = _parse_line_id(text)
    if repository.lock_pending_reason(session, transaction_id, line_no) != PendingReason.REVIEW:
        raise ReviewError(f"line {text} is not pending review")
    return transaction_id, line_no


def approve(session: Session, text: str) -> None:
    """The line may settle now (the worker posts it once its collector allows)."""
    transaction_id, line_no = _review_line(session, text)
    repository.set_pending_reason(session, transaction_id, line_no, PendingReason.APPROVED)


def reject(
    session: Session, text: str, code: str, now: datetime, *, known_codes: Sequence[str]
) -> None:
    if code not in known_codes:
        raise UnknownReasonError(
            f"reason {code!r} is not an error code of the catalogue (leave it out for "
            f"{REVIEW_REJECTED}: refused by an operator)"
        )
    transaction_id, line_no = _review_line(session, text)
    repository.reject_line(session, transaction_id, line_no, code, now)
    _after_settlement(session, transaction_id, now)
