"""Posting in a unit of work: `post()`. The other strategy, group commit, is `batched`
(`GroupCommit.post_batched`): its statement inserts the rows of `entry_rows()` and moves each
collector's balance by the sum of its calls' changes, under the collector's row lock.
`tests/integration/test_one_statement_issue.py` holds the two to identical rows.

A posting is one balanced pair: the collector account moves by `amount_miles` (signed, positive
for a credit) and the sponsor's issuance account by the opposite amount. The collector's row is
locked before its balance is read for any rule and is updated in the same unit of work as the
entries, so `balance_miles` always equals the sum of the collector's entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from rewardmiles.db.engine import write
from rewardmiles.db.models import Collector, LedgerEntry
from rewardmiles.vocabulary import AccountKind, Direction, ProgramAccount

_LOCK_COLLECTOR = (
    select(Collector.number, Collector.status, Collector.balance_miles)
    .where(Collector.number == bindparam("b_number"))
    .with_for_update()
)
_INSERT_ENTRIES = insert(LedgerEntry)
_MOVE_BALANCE = (
    update(Collector)
    .where(Collector.number == bindparam("b_number"))
    .values(
        balance_miles=Collector.balance_miles + bindparam("b_delta"),
        updated_at=bindparam("b_posted_at", type_=Collector.__table__.c.updated_at.type),
    )
    .returning(Collector.balance_miles)
)


class LedgerInvariantError(RuntimeError):
    """The ledger's books would not balance. Never expected: it means a bug, and the unit of work
    that raised it is rolled back whole."""


T = TypeVar("T")


def invariant(condition: bool) -> None:
    """Stop the unit of work unless `condition` holds: the money path's `assert`, which
    `python -O` would remove. Its failure is a bug (500), never a business outcome; the
    traceback names the place."""
    if not condition:
        raise LedgerInvariantError("an invariant of the money path does not hold")


def present(value: T | None) -> T:
    """`value`, which the money path requires: `invariant(value is not None)` that narrows."""
    if value is None:
        raise LedgerInvariantError("a value the money path requires is missing")
    return value


@dataclass(frozen=True, slots=True)
class CollectorAccount:
    number: str
    status: str
    balance_miles: int


@dataclass(frozen=True, slots=True)
class Posting:
    transaction_id: str
    line_no: int
    collector_number: str
    sponsor_code: str
    amount_miles: int  # signed, from the collector's side: + credit, - debit


def signed_miles(direction: str, miles: int) -> int:
    """A line's miles as its posting's `amount_miles`: positive for a credit, negative for a
    debit (the sign of every posting, whoever builds it)."""
    return miles if direction == Direction.CREDIT else -miles


def lock_collector(session: Session, number: str) -> CollectorAccount | None:
    """Lock the collector's row for the rest of the unit of work (rule 3.2: per-collector order)."""
    row = session.connection().execute(_LOCK_COLLECTOR, {"b_number": number}).one_or_none()
    if row is None:
        return None
    return CollectorAccount(row.number, row.status, row.balance_miles)


def entry_rows(
    account_number: str, postings: Sequence[Posting], *, posted_at: datetime
) -> tuple[list[dict[str, object]], int]:
    """The entry pairs of `postings` for the collector `account_number`, and the balance change
    they make. Checked: every posting is for that collector, moves miles, and its pair sums to 0."""
    entries: list[dict[str, object]] = []
    delta = 0
    collector, sponsor = AccountKind.COLLECTOR, AccountKind.SPONSOR  # read once, not per posting
    for p in postings:
        if p.collector_number != account_number:
            raise LedgerInvariantError(
                f"posting for collector {p.collector_number} given with account {account_number}"
            )
        if p.amount_miles == 0:
            raise LedgerInvariantError("a posting must move a non-zero amount")
        delta += p.amount_miles
        for kind, code, amount in (
            (collector, p.collector_number, p.amount_miles),
            (sponsor, p.sponsor_code, -p.amount_miles),
        ):
            entries.append(
                {
                    "transaction_id": p.transaction_id,
                    "line_no": p.line_no,
                    "account_kind": kind,
                    "account_code": code,
                    "amount_miles": amount,
                    "posted_at": posted_at,
                }
            )
    if sum(int(e["amount_miles"]) for e in entries) != 0:  # type: ignore[call-overload]
        raise LedgerInvariantError("entries of a posting do not sum to zero")
    return entries, delta


def post(
    session: Session, account: CollectorAccount, postings: Sequence[Posting], *, posted_at: datetime
) -> CollectorAccount:
    """Write the entry pairs of `postings` for the locked `account`; return its new state."""
    if not postings:
        return account
    entries, delta = entry_rows(account.number, postings, posted_at=posted_at)
    write(session, _INSERT_ENTRIES, entries)  # with the other writes of a batched unit of work
    new_balance = (
        session.connection()
        .execute(
            _MOVE_BALANCE, {"b_number": account.number, "b_delta": delta, "b_posted_at": posted_at}
        )
        .scalar_one()
    )
    if new_balance != account.balance_miles + delta:
        raise LedgerInvariantError(
            f"balance of collector {account.number} changed without its lock "
            f"(expected {account.balance_miles + delta}, found {new_balance})"
        )
    return CollectorAccount(account.number, account.status, new_balance)


def adjustment_rows(
    account_number: str, adjustment_id: str, amount_miles: int, *, posted_at: datetime
) -> list[dict[str, object]]:
    """The entry pair of an operator's adjustment: the collector moves by `amount_miles` (signed),
    the program's `ADJUSTMENTS` account by the opposite; both name the adjustment, no line
    (`transaction_id` and `line_no` are left out of the insert: NULL)."""
    if amount_miles == 0:
        raise LedgerInvariantError("an adjustment must move a non-zero amount")
    return [
        {
            "adjustment_id": adjustment_id,
            "account_kind": kind,
            "account_code": code,
            "amount_miles": amount,
            "posted_at": posted_at,
        }
        for kind, code, amount in (
            (AccountKind.COLLECTOR, account_number, amount_miles),
            (AccountKind.PROGRAM, ProgramAccount.ADJUSTMENTS, -amount_miles),
        )
    ]


def post_adjustment(
    session: Session,
    account: CollectorAccount,
    adjustment_id: str,
    amount_miles: int,
    *,
    posted_at: datetime,
) -> CollectorAccount:
    """Write the pair of the adjustment `adjustment_id` (its row already inserted) for the locked
    `account`; return its new state. The same checks as `post`: a non-zero amount, and the
    balance moved exactly by it under the lock."""
    session.connection().execute(
        _INSERT_ENTRIES,
        adjustment_rows(account.number, adjustment_id, amount_miles, posted_at=posted_at),
    )
    new_balance = (
        session.connection()
        .execute(
            _MOVE_BALANCE,
            {"b_number": account.number, "b_delta": amount_miles, "b_posted_at": posted_at},
        )
        .scalar_one()
    )
    if new_balance != account.balance_miles + amount_miles:
        raise LedgerInvariantError(
            f"balance of collector {account.number} changed without its lock "
            f"(expected {account.balance_miles + amount_miles}, found {new_balance})"
        )
    return CollectorAccount(account.number, account.status, new_balance)
