"""Whole-database checks of the ledger's invariants (`rewardmiles ledger verify`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session, aliased

from rewardmiles import limits
from rewardmiles.config import Settings
from rewardmiles.db.models import Adjustment, Collector, IssuanceLine, LedgerEntry, Transaction
from rewardmiles.vocabulary import (
    AccountKind,
    Direction,
    LineStatus,
    NegativeBalancePolicy,
    ProgramAccount,
    TransactionStatus,
)

# What a transaction's status says of its lines (issuance/service.py writes them so; settlement
# keeps them so, `refresh_transaction_status`): an accepted transaction (`posted`, `pending`) has
# lines `posted`, `pending` or `rejected`, and is `pending` exactly while one of them is; a
# `recorded` one (RECORD) has only `recorded` lines; a `rejected` one wrote no line at all. The
# four words, for both: `vocabulary.TransactionStatus` and `vocabulary.LineStatus`.


@dataclass
class VerifyReport:
    entries: int = 0
    collectors: int = 0
    total_miles: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(session: Session, settings: Settings | None = None) -> VerifyReport:
    """Every invariant the books can state. `settings` (default: the defaults) says what the
    program's policies forbid: with the negative-balance policy `reject`, a balance below zero.
    In a session of `Database.snapshot_reader` (the caller opens it), the books are read in one
    snapshot, so they can be checked while the service writes to them."""
    report = VerifyReport()
    report.entries, report.total_miles = session.execute(
        select(func.count(), func.coalesce(func.sum(LedgerEntry.amount_miles), 0))
    ).one()
    if report.total_miles != 0:
        report.problems.append(f"all entries sum to {report.total_miles}, not 0")

    unbalanced = session.execute(
        select(LedgerEntry.transaction_id, LedgerEntry.line_no, func.sum(LedgerEntry.amount_miles))
        .where(LedgerEntry.transaction_id.is_not(None))
        .group_by(LedgerEntry.transaction_id, LedgerEntry.line_no)
        .having(
            (func.sum(LedgerEntry.amount_miles) != 0)
            | (func.count() != 2)
            | (func.sum(func.abs(LedgerEntry.amount_miles)) == 0)
        )
        .limit(limits.verify_problems_shown_max)
    ).all()
    report.problems += [
        f"line {t}#{n}: entries are not one balanced pair (sum {s})" for t, n, s in unbalanced
    ]

    report.problems += _pairs_disagreeing_with_lines(session)
    report.problems += _adjustments_disagreeing_with_entries(session)

    wrong_kind = session.execute(
        select(func.count()).where(LedgerEntry.account_kind.not_in(tuple(AccountKind)))
    ).scalar_one()
    if wrong_kind:
        report.problems.append(f"{wrong_kind} entries post to an unknown account kind")

    sums = (
        select(
            LedgerEntry.account_code.label("number"),
            func.sum(LedgerEntry.amount_miles).label("miles"),
        )
        .where(LedgerEntry.account_kind == AccountKind.COLLECTOR)
        .group_by(LedgerEntry.account_code)
        .subquery()
    )
    report.collectors = session.execute(select(func.count()).select_from(Collector)).scalar_one()
    mismatched = session.execute(
        select(Collector.number, Collector.balance_miles, func.coalesce(sums.c.miles, 0))
        .outerjoin(sums, sums.c.number == Collector.number)
        .where(Collector.balance_miles != func.coalesce(sums.c.miles, 0))
        .limit(limits.verify_problems_shown_max)
    ).all()
    report.problems += [
        f"collector {n}: balance {b} but entries sum to {s}" for n, b, s in mismatched
    ]
    orphan_entries = session.execute(
        select(func.count())
        .select_from(LedgerEntry)
        .outerjoin(Collector, Collector.number == LedgerEntry.account_code)
        .where(LedgerEntry.account_kind == AccountKind.COLLECTOR, Collector.number.is_(None))
    ).scalar_one()
    if orphan_entries:
        report.problems.append(f"{orphan_entries} collector entries name no collector")

    posted_without_pair = session.execute(
        select(func.count())
        .select_from(IssuanceLine)
        .outerjoin(
            LedgerEntry,
            (LedgerEntry.transaction_id == IssuanceLine.transaction_id)
            & (LedgerEntry.line_no == IssuanceLine.line_no),
        )
        .where((IssuanceLine.status == LineStatus.POSTED) != LedgerEntry.id.is_not(None))
    ).scalar_one()
    if posted_without_pair:
        report.problems.append(
            f"{posted_without_pair} lines disagree with the ledger (posted without entries, or "
            "entries without a posted line)"
        )

    report.problems += _reversals_beyond_originals(session)
    report.problems += _statuses_disagreeing_with_lines(session)
    policy = settings.negative_balance_policy if settings else NegativeBalancePolicy.ALLOW
    if policy is NegativeBalancePolicy.REJECT:
        below_zero = session.execute(
            select(Collector.number, Collector.balance_miles)
            .where(Collector.balance_miles < 0)
            .order_by(Collector.number)
            .limit(limits.verify_problems_shown_max)
        ).all()
        report.problems += [
            f"collector {n}: balance {b} is below zero, which the negative-balance policy "
            "'reject' forbids"
            for n, b in below_zero
        ]
    return report


def _statuses_disagreeing_with_lines(session: Session) -> list[str]:
    """Each transaction's status against its lines' (the vocabulary's four words); the lines are
    read once, joined to their transaction by its primary key."""
    wrong_lines = session.execute(
        select(Transaction.id, Transaction.status, IssuanceLine.line_no, IssuanceLine.status)
        .join(Transaction, Transaction.id == IssuanceLine.transaction_id)
        .where(
            or_(
                IssuanceLine.status.not_in(tuple(LineStatus)),
                Transaction.status == TransactionStatus.REJECTED,
                (Transaction.status == TransactionStatus.RECORDED)
                != (IssuanceLine.status == LineStatus.RECORDED),
                and_(
                    IssuanceLine.status == LineStatus.PENDING,
                    Transaction.status != TransactionStatus.PENDING,
                ),
            )
        )
        .order_by(Transaction.id, IssuanceLine.line_no)
        .limit(limits.verify_problems_shown_max)
    ).all()
    problems = [
        f"transaction {t}: status {ts} but its line #{n} is {ls}" for t, ts, n, ls in wrong_lines
    ]
    pending_line = (
        select(IssuanceLine.line_no)
        .where(
            IssuanceLine.transaction_id == Transaction.id,
            IssuanceLine.status == LineStatus.PENDING,
        )
        .exists()
    )
    odd = session.execute(
        select(Transaction.id, Transaction.status)
        .where(
            or_(
                Transaction.status.not_in(tuple(TransactionStatus)),
                and_(Transaction.status == TransactionStatus.PENDING, ~pending_line),
            )
        )
        .order_by(Transaction.id)
        .limit(limits.verify_problems_shown_max)
    ).all()
    problems += [
        f"transaction {t}: status pending but no line of it is"
        if s == TransactionStatus.PENDING
        else f"transaction {t}: unknown status {s!r}"
        for t, s in odd
    ]
    return problems


def _pairs_disagreeing_with_lines(session: Session) -> list[str]:
    """Each posted line's pair is one collector entry (the transaction's collector, +miles for a
    credit, -miles for a debit) and one sponsor entry (the transaction's sponsor, the opposite)."""
    signed = case(
        (IssuanceLine.direction == Direction.CREDIT, IssuanceLine.miles), else_=-IssuanceLine.miles
    )
    wrong_entries = session.execute(
        select(LedgerEntry.transaction_id, LedgerEntry.line_no, LedgerEntry.account_kind)
        .join(
            IssuanceLine,
            (IssuanceLine.transaction_id == LedgerEntry.transaction_id)
            & (IssuanceLine.line_no == LedgerEntry.line_no),
        )
        .join(Transaction, Transaction.id == LedgerEntry.transaction_id)
        .where(
            or_(
                and_(
                    LedgerEntry.account_kind == AccountKind.COLLECTOR,
                    or_(
                        LedgerEntry.account_code != Transaction.collector_number,
                        LedgerEntry.amount_miles != signed,
                    ),
                ),
                and_(
                    LedgerEntry.account_kind == AccountKind.SPONSOR,
                    or_(
                        LedgerEntry.account_code != Transaction.sponsor_code,
                        LedgerEntry.amount_miles != -signed,
                    ),
                ),
            )
        )
        .limit(limits.verify_problems_shown_max)
    ).all()
    problems = [
        f"line {t}#{n}: {kind} entry does not match the line's account, miles or direction"
        for t, n, kind in wrong_entries
    ]
    collector_entries = func.sum(
        case((LedgerEntry.account_kind == AccountKind.COLLECTOR, 1), else_=0)
    )
    sponsor_entries = func.sum(case((LedgerEntry.account_kind == AccountKind.SPONSOR, 1), else_=0))
    lopsided = session.execute(
        select(LedgerEntry.transaction_id, LedgerEntry.line_no)
        .where(LedgerEntry.transaction_id.is_not(None))
        .group_by(LedgerEntry.transaction_id, LedgerEntry.line_no)
        .having((collector_entries != 1) | (sponsor_entries != 1))
        .limit(limits.verify_problems_shown_max)
    ).all()
    problems += [
        f"line {t}#{n}: not one collector entry and one sponsor entry" for t, n in lopsided
    ]
    return problems


def _adjustments_disagreeing_with_entries(session: Session) -> list[str]:
    """Each adjustment's pair is one collector entry (its collector, +miles) and one program entry
    (the `ADJUSTMENTS` account, -miles), both naming it; every adjustment has its pair, and no
    entry names an adjustment that does not exist."""
    wrong_entries = session.execute(
        select(LedgerEntry.adjustment_id, LedgerEntry.account_kind)
        # ON ledger_entries.adjustment_id = adjustments.id, from the entries' one foreign key to
        # adjustments (spelt out, it would only be SQLAlchemy's own inference again).
        .outerjoin(Adjustment)
        .where(
            LedgerEntry.adjustment_id.is_not(None),
            or_(
                Adjustment.id.is_(None),
                LedgerEntry.account_kind.not_in([AccountKind.COLLECTOR, AccountKind.PROGRAM]),
                and_(
                    LedgerEntry.account_kind == AccountKind.COLLECTOR,
                    or_(
                        LedgerEntry.account_code != Adjustment.collector_number,
                        LedgerEntry.amount_miles != Adjustment.miles,
                    ),
                ),
                and_(
                    LedgerEntry.account_kind == AccountKind.PROGRAM,
                    or_(
                        LedgerEntry.account_code != ProgramAccount.ADJUSTMENTS,
                        LedgerEntry.amount_miles != -Adjustment.miles,
                    ),
                ),
            ),
        )
        .order_by(LedgerEntry.id)
        .limit(limits.verify_problems_shown_max)
    ).all()
    problems = [
        f"adjustment {a}: {kind} entry does not match the adjustment's account or miles"
        for a, kind in wrong_entries
    ]
    collector_entries = func.sum(
        case((LedgerEntry.account_kind == AccountKind.COLLECTOR, 1), else_=0)
    )
    program_entries = func.sum(case((LedgerEntry.account_kind == AccountKind.PROGRAM, 1), else_=0))
    entries = (
        select(
            LedgerEntry.adjustment_id.label("adjustment_id"),
            collector_entries.label("collector"),
            program_entries.label("program"),
            func.count().label("entries"),
        )
        .where(LedgerEntry.adjustment_id.is_not(None))
        .group_by(LedgerEntry.adjustment_id)
        .subquery()
    )
    lopsided = session.execute(
        select(Adjustment.id)
        .outerjoin(entries)  # ON its adjustment_id, which keeps the entries' foreign key
        .where(
            or_(
                entries.c.adjustment_id.is_(None),
                entries.c.collector != 1,
                entries.c.program != 1,
                entries.c.entries != 2,
            )
        )
        .order_by(Adjustment.id)
        .limit(limits.verify_problems_shown_max)
    ).all()
    problems += [
        f"adjustment {a}: not one collector entry and one program entry" for (a,) in lopsided
    ]
    return problems


def _reversals_beyond_originals(session: Session) -> list[str]:
    """Per original and offer code, miles reversed (not rejected) ≤ miles issued (not rejected)."""
    rev_txn = aliased(Transaction)
    reversed_q = (
        select(
            rev_txn.original_transaction_id.label("original"),
            IssuanceLine.offer_code.label("offer"),
            func.sum(IssuanceLine.miles).label("miles"),
        )
        .join(rev_txn, rev_txn.id == IssuanceLine.transaction_id)
        .where(
            rev_txn.original_transaction_id.is_not(None),
            IssuanceLine.status != LineStatus.REJECTED,
        )
        .group_by(rev_txn.original_transaction_id, IssuanceLine.offer_code)
        .subquery()
    )
    issued_q = (
        select(
            IssuanceLine.transaction_id.label("original"),
            IssuanceLine.offer_code.label("offer"),
            func.sum(IssuanceLine.miles).label("miles"),
        )
        .where(
            IssuanceLine.status != LineStatus.REJECTED,
            IssuanceLine.direction == Direction.CREDIT,
        )
        .group_by(IssuanceLine.transaction_id, IssuanceLine.offer_code)
        .subquery()
    )
    rows = session.execute(
        select(reversed_q.c.original, reversed_q.c.offer, reversed_q.c.miles, issued_q.c.miles)
        .outerjoin(
            issued_q,
            (issued_q.c.original == reversed_q.c.original)
            & (issued_q.c.offer == reversed_q.c.offer),
        )
        .where(reversed_q.c.miles > func.coalesce(issued_q.c.miles, 0))
        .limit(limits.verify_problems_shown_max)
    ).all()
    return [
        f"original {o} offer {c}: {r} miles reversed but only {i or 0} issued"
        for o, c, r, i in rows
    ]
