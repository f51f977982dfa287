"""The ledger (`ledger.post`) and its whole-database check (`ledger.verify`), on every dialect.

Postings go through the shared session database and must leave it balanced. Every test that
tampers with the books does so on a database of its own.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError

from rewardmiles import ledger, limits
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.db.models import Collector, IssuanceLine, LedgerEntry, Transaction
from rewardmiles.ledger.verify import VerifyReport, verify
from tests.conftest import DatabaseFactory
from tests.support import data

Line = tuple[str, int, str]  # (direction, miles, line status)


def _insert_transaction(
    session: object,
    sponsor: str,
    collector: str,
    lines: list[Line],
    *,
    original: str | None = None,
    txn_id: str | None = None,
) -> str:
    """A transaction and its issuance lines (the rows ledger entries hang off)."""
    txn_id = txn_id or str(uuid.uuid4())
    now = data.now()
    session.execute(  # type: ignore[attr-defined]
        insert(Transaction).values(
            id=txn_id,
            client_id="rmc_test",
            sponsor_code=sponsor,
            endpoint="reverse_event" if original else "post_event",
            partner_transaction_id=data.txn_id(),
            collector_number=collector,
            original_transaction_id=original,
            status="pending" if any(status == "pending" for _, _, status in lines) else "posted",
            http_status=200,
            error_code=None,
            fingerprint="0" * 64,
            partner_datetime=now,
            processed_at=now,
            request_json="{}",
            response_json="{}",
        )
    )
    session.execute(  # type: ignore[attr-defined]
        insert(IssuanceLine),
        [
            {
                "transaction_id": txn_id,
                "line_no": no,
                "direction": direction,
                "offer_code": "STANDARD",
                "location_code": None,
                "miles": miles,
                "status": status,
                "pending_reason": "on_hold" if status == "pending" else None,
                "error_code": "PENDING_EXPIRED" if status == "rejected" else None,
                "settled_at": now if status == "posted" else None,
            }
            for no, (direction, miles, status) in enumerate(lines, start=1)
        ],
    )
    return txn_id


def _book(
    db: Database,
    sponsor: str,
    collector: str,
    lines: list[Line],
    *,
    original: str | None = None,
) -> str:
    """What the issuance service does: store the transaction, post its posted lines."""
    with db.unit_of_work() as session:
        txn_id = _insert_transaction(session, sponsor, collector, lines, original=original)
        account = ledger.lock_collector(session, collector)
        assert account is not None
        postings = [
            ledger.Posting(txn_id, no, collector, sponsor, miles if d == "credit" else -miles)
            for no, (d, miles, status) in enumerate(lines, start=1)
            if status == "posted"
        ]
        ledger.post(session, account, postings, posted_at=data.now())
    return txn_id


def _entries(db: Database, txn_id: str) -> list[tuple[int, str, str, int]]:
    with db.reader() as session:
        rows = session.execute(
            select(
                LedgerEntry.line_no,
                LedgerEntry.account_kind,
                LedgerEntry.account_code,
                LedgerEntry.amount_miles,
            )
            .where(LedgerEntry.transaction_id == txn_id)
            .order_by(LedgerEntry.line_no, LedgerEntry.account_kind)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _count(db: Database, model: type, txn_id: str) -> int:
    column = model.id if model is Transaction else model.transaction_id  # type: ignore[attr-defined]
    with db.reader() as session:
        return int(session.execute(select(func.count()).where(column == txn_id)).scalar_one())


# --------------------------------------------------------------------------- post


def test_post_writes_a_balanced_pair_per_posting_and_moves_the_balance(db: Database) -> None:
    sponsor = data.new_sponsor(db)
    collector = data.new_collector(db)

    credit = _book(db, sponsor, collector, [("credit", 10, "posted"), ("credit", 5, "posted")])
    assert _entries(db, credit) == [
        (1, "collector", collector, 10),
        (1, "sponsor", sponsor, -10),
        (2, "collector", collector, 5),
        (2, "sponsor", sponsor, -5),
    ]
    assert data.balance(db, collector) == 15

    debit = _book(db, sponsor, collector, [("debit", 20, "posted")])  # standalone correction
    assert _entries(db, debit) == [(1, "collector", collector, -20), (1, "sponsor", sponsor, 20)]
    assert data.balance(db, collector) == -5  # the ledger itself allows a negative balance


def test_post_returns_the_new_account_state(db: Database) -> None:
    sponsor = data.new_sponsor(db)
    collector = data.new_collector(db, "ON_HOLD")
    with db.unit_of_work() as session:
        txn = _insert_transaction(
            session, sponsor, collector, [("credit", 7, "posted"), ("credit", 3, "posted")]
        )
        before = ledger.lock_collector(session, collector)
        assert before == ledger.CollectorAccount(collector, "ON_HOLD", 0)
        after = ledger.post(
            session,
            before,
            [
                ledger.Posting(txn, 1, collector, sponsor, 7),
                ledger.Posting(txn, 2, collector, sponsor, 3),
            ],
            posted_at=data.now(),
        )
    assert after == ledger.CollectorAccount(collector, "ON_HOLD", 10)
    assert data.balance(db, collector) == 10


def test_post_without_postings_writes_nothing(db: Database) -> None:
    collector = data.new_collector(db)
    with db.unit_of_work() as session:
        account = ledger.lock_collector(session, collector)
        assert account is not None
        assert ledger.post(session, account, [], posted_at=data.now()) is account
    with db.reader() as session:
        count = session.execute(
            select(func.count()).where(LedgerEntry.account_code == collector)
        ).scalar_one()
    assert count == 0


def test_lock_collector_of_unknown_number_is_none(db: Database) -> None:
    with db.unit_of_work() as session:
        assert ledger.lock_collector(session, data.unknown_collector()) is None


@dataclass
class BadPosting:
    name: str
    miles: int
    other_collector: bool


@pytest.mark.parametrize(
    "bad",
    [BadPosting("zero miles", 0, False), BadPosting("another collector", 4, True)],
    ids=lambda b: b.name,
)
def test_invalid_posting_raises_and_the_unit_of_work_commits_nothing(
    db: Database, bad: BadPosting
) -> None:
    sponsor = data.new_sponsor(db)
    collector = data.new_collector(db)
    other = data.new_collector(db)
    _book(db, sponsor, collector, [("credit", 9, "posted")])

    txn_id = str(uuid.uuid4())

    def attempt() -> None:
        with db.unit_of_work() as session:
            _insert_transaction(
                session,
                sponsor,
                collector,
                [("credit", 4, "posted"), ("credit", 4, "posted")],
                txn_id=txn_id,
            )
            account = ledger.lock_collector(session, collector)
            assert account is not None
            ledger.post(
                session,
                account,
                [
                    ledger.Posting(txn_id, 1, collector, sponsor, 4),  # a good one first
                    ledger.Posting(
                        txn_id, 2, other if bad.other_collector else collector, sponsor, bad.miles
                    ),
                ],
                posted_at=data.now(),
            )

    with pytest.raises(ledger.LedgerInvariantError) as raised:
        attempt()
    assert str(raised.value) == (
        f"posting for collector {other} given with account {collector}"
        if bad.other_collector
        else "a posting must move a non-zero amount"
    )
    assert _count(db, Transaction, txn_id) == 0
    assert _count(db, IssuanceLine, txn_id) == 0
    assert _count(db, LedgerEntry, txn_id) == 0
    assert data.balance(db, collector) == 9
    assert data.balance(db, other) == 0


def test_stale_account_raises_and_the_unit_of_work_commits_nothing(db: Database) -> None:
    sponsor = data.new_sponsor(db)
    collector = data.new_collector(db)
    _book(db, sponsor, collector, [("credit", 9, "posted")])

    txn_id = str(uuid.uuid4())

    def attempt() -> None:
        with db.unit_of_work() as session:
            _insert_transaction(
                session, sponsor, collector, [("credit", 4, "posted")], txn_id=txn_id
            )
            stale = ledger.CollectorAccount(collector, "ACTIVE", 0)  # read before the 9 was posted
            ledger.post(
                session,
                stale,
                [ledger.Posting(txn_id, 1, collector, sponsor, 4)],
                posted_at=data.now(),
            )

    with pytest.raises(ledger.LedgerInvariantError) as raised:
        attempt()
    assert str(raised.value) == (
        f"balance of collector {collector} changed without its lock (expected 4, found 13)"
    )
    assert _count(db, Transaction, txn_id) == 0
    assert _count(db, LedgerEntry, txn_id) == 0
    assert data.balance(db, collector) == 9


# --------------------------------------------------------------------------- verify


@pytest.fixture
def own_db(dialect: str, database_factory: DatabaseFactory) -> Iterator[Database]:
    """A database of this test's own: tampering must never reach the shared one."""
    database = Database.from_url(database_factory.create(dialect))
    yield database
    database.dispose()


@dataclass
class Books:
    sponsor: str
    alice: str
    bob: str
    original: str  # credits 10 (line 1) + 5 (line 2) to alice


def _clean_books(db: Database) -> Books:
    sponsor = data.new_sponsor(db)
    alice = data.new_collector(db)
    bob = data.new_collector(db)
    original = _book(db, sponsor, alice, [("credit", 10, "posted"), ("credit", 5, "posted")])
    _book(db, sponsor, alice, [("debit", 6, "posted")], original=original)
    _book(db, sponsor, bob, [("credit", 30, "posted"), ("credit", 2, "pending")])
    _book(db, sponsor, bob, [("debit", 100, "rejected")], original=original)
    return Books(sponsor, alice, bob, original)


def _verify(db: Database) -> VerifyReport:
    with db.reader() as session:
        return verify(session)


def test_verify_is_ok_on_a_clean_ledger(own_db: Database) -> None:
    books = _clean_books(own_db)
    # Reversing exactly what is left of the original is still within bounds.
    _book(own_db, books.sponsor, books.alice, [("debit", 9, "posted")], original=books.original)
    report = _verify(own_db)
    assert report.problems == []
    assert report.ok
    assert report.entries == 2 * 5  # five posted lines
    assert report.collectors == 2
    assert report.total_miles == 0
    assert data.balance(own_db, books.alice) == 0
    assert data.balance(own_db, books.bob) == 30


def test_verify_is_ok_on_an_empty_ledger(own_db: Database) -> None:
    report = _verify(own_db)
    assert report.ok
    assert (report.entries, report.collectors, report.total_miles) == (0, 0, 0)


def test_verify_database_reads_one_read_only_snapshot(own_db: Database, dialect: str) -> None:
    """`ledger verify` runs in `Database.snapshot_reader()`: on PostgreSQL a repeatable-read,
    read-only transaction (a row committed while it reads is not seen, a write is refused); on
    SQLite the reader holds the only writer's lock, so nothing commits while it reads."""
    count = select(func.count()).select_from(Collector)
    data.new_collector(own_db)
    with own_db.snapshot_reader() as session:
        before = session.execute(count).scalar_one()
        if dialect == "postgresql":
            data.new_collector(own_db)  # committed by another connection, mid-snapshot
            assert session.execute(count).scalar_one() == before
            with pytest.raises(DBAPIError, match="read-only transaction"):
                session.execute(delete(Collector))
        else:
            assert session.execute(count).scalar_one() == before
    with own_db.reader() as session:
        after = session.execute(count).scalar_one()
    assert after == before + (1 if dialect == "postgresql" else 0)
    with own_db.snapshot_reader() as session:
        assert verify(session).ok


def _tamper_unbalanced_entry(db: Database, books: Books) -> list[str]:
    with db.unit_of_work() as session:
        session.execute(
            insert(LedgerEntry).values(
                transaction_id=books.original,
                line_no=1,
                account_kind="sponsor",
                account_code=books.sponsor,
                amount_miles=-7,
                posted_at=data.now(),
            )
        )
    return [
        r"all entries sum to -7, not 0",
        rf"line {books.original}#1: entries are not one balanced pair \(sum -7\)",
        rf"line {books.original}#1: sponsor entry does not match the line's account, miles or "
        r"direction",
        rf"line {books.original}#1: not one collector entry and one sponsor entry",
    ]


def _tamper_balance(db: Database, books: Books) -> list[str]:
    with db.unit_of_work() as session:
        session.execute(
            update(Collector).where(Collector.number == books.bob).values(balance_miles=1030)
        )
    return [rf"collector {books.bob}: balance 1030 but entries sum to 30"]


def _tamper_reversal_beyond_original(db: Database, books: Books) -> list[str]:
    # 6 already reversed of 10 + 5; reversing 10 more takes it to 16 > 15. Balanced in the ledger.
    _book(db, books.sponsor, books.alice, [("debit", 10, "posted")], original=books.original)
    return [rf"original {books.original} offer STANDARD: 16 miles reversed but only 15 issued"]


def _tamper_posted_line_without_entries(db: Database, books: Books) -> list[str]:
    with db.unit_of_work() as session:
        _insert_transaction(session, books.sponsor, books.bob, [("credit", 4, "posted")])
    return [
        r"1 lines disagree with the ledger \(posted without entries, or entries without a posted "
        r"line\)"
    ]


def _tamper_entries_of_unknown_collector(db: Database, books: Books) -> list[str]:
    ghost = data.unknown_collector()
    with db.unit_of_work() as session:
        txn = _insert_transaction(session, books.sponsor, ghost, [("credit", 4, "posted")])
        for kind, code, miles in (("collector", ghost, 4), ("sponsor", books.sponsor, -4)):
            session.execute(
                insert(LedgerEntry).values(
                    transaction_id=txn,
                    line_no=1,
                    account_kind=kind,
                    account_code=code,
                    amount_miles=miles,
                    posted_at=data.now(),
                )
            )
    return [r"1 collector entries name no collector"]


def _with_status(db: Database, books: Books, lines: list[Line], status: str) -> str:
    """A transaction whose status was overwritten by hand after its lines were written."""
    with db.unit_of_work() as session:
        txn = _insert_transaction(session, books.sponsor, books.bob, lines)
        session.execute(update(Transaction).where(Transaction.id == txn).values(status=status))
    return txn


def _tamper_posted_transaction_with_a_pending_line(db: Database, books: Books) -> list[str]:
    txn = _with_status(db, books, [("credit", 4, "pending")], "posted")
    return [rf"transaction {txn}: status posted but its line #1 is pending"]


def _tamper_pending_transaction_without_a_pending_line(db: Database, books: Books) -> list[str]:
    txn = _with_status(db, books, [("credit", 4, "rejected")], "pending")
    return [rf"transaction {txn}: status pending but no line of it is"]


def _tamper_rejected_transaction_with_lines(db: Database, books: Books) -> list[str]:
    txn = _with_status(db, books, [("credit", 4, "rejected")], "rejected")
    return [rf"transaction {txn}: status rejected but its line #1 is rejected"]


def _tamper_recorded_transaction_with_a_rejected_line(db: Database, books: Books) -> list[str]:
    txn = _with_status(db, books, [("credit", 4, "rejected")], "recorded")
    return [rf"transaction {txn}: status recorded but its line #1 is rejected"]


def _tamper_unknown_transaction_status(db: Database, books: Books) -> list[str]:
    with db.unit_of_work() as session:
        txn = _insert_transaction(session, books.sponsor, books.bob, [("credit", 4, "rejected")])
        session.execute(update(Transaction).where(Transaction.id == txn).values(status="done"))
    return [rf"transaction {txn}: unknown status 'done'"]


@pytest.mark.parametrize(
    "tamper",
    [
        _tamper_unbalanced_entry,
        _tamper_balance,
        _tamper_reversal_beyond_original,
        _tamper_posted_line_without_entries,
        _tamper_entries_of_unknown_collector,
        _tamper_posted_transaction_with_a_pending_line,
        _tamper_pending_transaction_without_a_pending_line,
        _tamper_rejected_transaction_with_lines,
        _tamper_recorded_transaction_with_a_rejected_line,
        _tamper_unknown_transaction_status,
    ],
    ids=lambda f: f.__name__.removeprefix("_tamper_"),
)
def test_verify_reports_each_kind_of_tampering(own_db: Database, tamper: object) -> None:
    books = _clean_books(own_db)
    assert _verify(own_db).ok
    expected = tamper(own_db, books)  # type: ignore[operator]
    report = _verify(own_db)
    assert not report.ok
    assert len(report.problems) == len(expected), report.problems
    for pattern, problem in zip(expected, report.problems, strict=True):
        assert re.fullmatch(pattern, problem) or re.match(pattern, problem), (pattern, problem)


def _tamper_pair_amount_unlike_its_line(db: Database, books: Books) -> str:
    """The original's line 1 says 10 miles; its pair is rewritten to 1000 (balance kept in step)."""
    with db.unit_of_work() as session:
        for kind, amount in (("collector", 1000), ("sponsor", -1000)):
            session.execute(
                update(LedgerEntry)
                .where(
                    LedgerEntry.transaction_id == books.original,
                    LedgerEntry.line_no == 1,
                    LedgerEntry.account_kind == kind,
                )
                .values(amount_miles=amount)
            )
        session.execute(
            update(Collector)
            .where(Collector.number == books.alice)
            .values(balance_miles=Collector.balance_miles + 990)
        )
    return books.original


def _tamper_pair_without_collector_side(db: Database, books: Books) -> str:
    """A posted line whose 'pair' is two sponsor entries: the collector never got the miles."""
    with db.unit_of_work() as session:
        txn = _insert_transaction(session, books.sponsor, books.bob, [("credit", 4, "posted")])
        for miles in (4, -4):
            session.execute(
                insert(LedgerEntry).values(
                    transaction_id=txn,
                    line_no=1,
                    account_kind="sponsor",
                    account_code=books.sponsor,
                    amount_miles=miles,
                    posted_at=data.now(),
                )
            )
    return txn


@pytest.mark.parametrize(
    "tamper",
    [_tamper_pair_amount_unlike_its_line, _tamper_pair_without_collector_side],
    ids=lambda f: f.__name__.removeprefix("_tamper_"),
)
def test_verify_reports_a_balanced_pair_that_does_not_match_its_line(
    own_db: Database, tamper: object
) -> None:
    books = _clean_books(own_db)
    txn_id = tamper(own_db, books)  # type: ignore[operator]
    report = _verify(own_db)
    assert any(txn_id in problem for problem in report.problems), report.problems


def test_verify_reports_a_balance_below_zero_only_under_the_reject_policy(own_db: Database) -> None:
    books = _clean_books(own_db)
    _book(own_db, books.sponsor, books.alice, [("debit", 10, "posted")])  # 9 left: -1
    reject = Settings.from_env({}, negative_balance_policy="reject")
    with own_db.reader() as session:
        allowed, refused = verify(session, Settings()), verify(session, reject)
    assert allowed.ok, allowed.problems
    assert refused.problems == [
        f"collector {books.alice}: balance -1 is below zero, which the negative-balance policy "
        "'reject' forbids"
    ]


# Shapes of broken books that a looser check would let through (each one found by mutation
# testing, docs/testing.md): the pair check's three conditions one at a time, an unknown account
# kind, and the negative-balance check's boundary and its bounded, ordered report.


def _set_entry(db: Database, txn: str, line_no: int, kind: str, **values: object) -> None:
    with db.unit_of_work() as session:
        session.execute(
            update(LedgerEntry)
            .where(
                LedgerEntry.transaction_id == txn,
                LedgerEntry.line_no == line_no,
                LedgerEntry.account_kind == kind,
            )
            .values(**values)
        )


def _pair_problems(report: VerifyReport) -> list[str]:
    return [p for p in report.problems if "entries are not one balanced pair" in p]


def test_verify_reports_a_two_entry_pair_that_does_not_sum_to_zero(own_db: Database) -> None:
    books = _clean_books(own_db)
    _set_entry(own_db, books.original, 1, "sponsor", amount_miles=-9)
    assert _pair_problems(_verify(own_db)) == [
        f"line {books.original}#1: entries are not one balanced pair (sum 1)"
    ]


def test_verify_reports_a_pair_of_zeros(own_db: Database) -> None:
    books = _clean_books(own_db)
    _set_entry(own_db, books.original, 1, "sponsor", amount_miles=0)
    _set_entry(own_db, books.original, 1, "collector", amount_miles=0)
    assert _pair_problems(_verify(own_db)) == [
        f"line {books.original}#1: entries are not one balanced pair (sum 0)"
    ]


def test_verify_reports_three_entries_summing_to_zero(own_db: Database) -> None:
    books = _clean_books(own_db)
    _set_entry(own_db, books.original, 1, "sponsor", amount_miles=-6)
    with own_db.unit_of_work() as session:
        session.execute(
            insert(LedgerEntry).values(
                transaction_id=books.original,
                line_no=1,
                account_kind="sponsor",
                account_code=books.sponsor,
                amount_miles=-4,
                posted_at=data.now(),
            )
        )
    assert _pair_problems(_verify(own_db)) == [
        f"line {books.original}#1: entries are not one balanced pair (sum 0)"
    ]


def test_verify_reports_entries_to_an_unknown_account_kind(own_db: Database) -> None:
    books = _clean_books(own_db)
    _set_entry(own_db, books.original, 1, "sponsor", account_kind="partner")
    assert _verify(own_db).problems == [
        f"line {books.original}#1: not one collector entry and one sponsor entry",
        "1 entries post to an unknown account kind",
    ]


def test_verify_reports_a_line_without_its_collector_entry(own_db: Database) -> None:
    books = _clean_books(own_db)
    _set_entry(own_db, books.original, 1, "collector", account_kind="partner")
    with own_db.unit_of_work() as session:  # the balance follows the entries it still has
        session.execute(
            update(Collector)
            .where(Collector.number == books.alice)
            .values(balance_miles=Collector.balance_miles - 10)
        )
    assert _verify(own_db).problems == [
        f"line {books.original}#1: not one collector entry and one sponsor entry",
        "1 entries post to an unknown account kind",
    ]


def test_verify_reports_a_line_with_two_collector_entries(own_db: Database) -> None:
    books = _clean_books(own_db)
    with own_db.unit_of_work() as session:
        session.execute(
            insert(LedgerEntry).values(
                transaction_id=books.original,
                line_no=1,
                account_kind="collector",
                account_code=books.alice,
                amount_miles=0,
                posted_at=data.now(),
            )
        )
    assert _verify(own_db).problems == [
        f"line {books.original}#1: entries are not one balanced pair (sum 0)",
        f"line {books.original}#1: collector entry does not match the line's account, miles or "
        "direction",
        f"line {books.original}#1: not one collector entry and one sponsor entry",
    ]


def _move_miles(db: Database, source: str, target: str, miles: int) -> None:
    with db.unit_of_work() as session:
        for number, delta in ((source, -miles), (target, miles)):
            session.execute(
                update(Collector)
                .where(Collector.number == number)
                .values(balance_miles=Collector.balance_miles + delta)
            )


def test_verify_reports_a_collector_entry_on_another_collector(own_db: Database) -> None:
    books = _clean_books(own_db)
    _set_entry(own_db, books.original, 1, "collector", account_code=books.bob)
    _move_miles(own_db, books.alice, books.bob, 10)
    assert _verify(own_db).problems == [
        f"line {books.original}#1: collector entry does not match the line's account, miles or "
        "direction"
    ]


def test_verify_reports_a_sponsor_entry_on_another_sponsor(own_db: Database) -> None:
    books = _clean_books(own_db)
    _set_entry(own_db, books.original, 1, "sponsor", account_code=data.new_sponsor(own_db))
    assert _verify(own_db).problems == [
        f"line {books.original}#1: sponsor entry does not match the line's account, miles or "
        "direction"
    ]


def test_verify_reports_a_debit_pair_of_the_wrong_size(own_db: Database) -> None:
    books = _clean_books(own_db)
    reversal = _book(own_db, books.sponsor, books.bob, [("debit", 3, "posted")])
    _set_entry(own_db, reversal, 1, "collector", amount_miles=-4)
    _set_entry(own_db, reversal, 1, "sponsor", amount_miles=4)
    with own_db.unit_of_work() as session:
        session.execute(
            update(Collector)
            .where(Collector.number == books.bob)
            .values(balance_miles=Collector.balance_miles - 1)
        )
    # (the two sides come in no set order)
    assert sorted(_verify(own_db).problems) == [
        f"line {reversal}#1: collector entry does not match the line's account, miles or direction",
        f"line {reversal}#1: sponsor entry does not match the line's account, miles or direction",
    ]


def _verify_rejecting(db: Database) -> VerifyReport:
    with db.reader() as session:
        return verify(session, Settings.from_env({}, negative_balance_policy="reject"))


def test_verify_under_reject_accepts_a_balance_of_exactly_zero(own_db: Database) -> None:
    books = _clean_books(own_db)
    _book(own_db, books.sponsor, books.alice, [("debit", 9, "posted")], original=books.original)
    assert data.balance(own_db, books.alice) == 0
    assert _verify_rejecting(own_db).problems == []


def test_verify_under_reject_lists_the_first_collectors_below_zero_in_order(
    own_db: Database,
) -> None:
    sponsor = data.new_sponsor(own_db)
    numbers = [data.new_collector(own_db) for _ in range(limits.verify_problems_shown_max + 1)]
    for number in numbers:
        _book(own_db, sponsor, number, [("debit", 1, "posted")])
    report = _verify_rejecting(own_db)
    assert report.problems == [
        f"collector {n}: balance -1 is below zero, which the negative-balance policy 'reject' "
        "forbids"
        for n in sorted(numbers)[: limits.verify_problems_shown_max]
    ]


def test_verify_reports_a_line_of_unknown_status(own_db: Database) -> None:
    books = _clean_books(own_db)
    with own_db.unit_of_work() as session:
        txn = _insert_transaction(session, books.sponsor, books.bob, [("credit", 4, "rejected")])
        session.execute(
            update(IssuanceLine).where(IssuanceLine.transaction_id == txn).values(status="lost")
        )
    assert _verify(own_db).problems == [f"transaction {txn}: status posted but its line #1 is lost"]


def test_verify_accepts_a_recorded_transaction_of_recorded_lines(own_db: Database) -> None:
    books = _clean_books(own_db)
    _with_status(own_db, books, [("credit", 4, "recorded"), ("credit", 1, "recorded")], "recorded")
    assert _verify(own_db).problems == []


def test_verify_lists_the_first_wrong_lines_in_transaction_and_line_order(
    own_db: Database,
) -> None:
    """More problems than a report shows: the first ones by transaction id and line number,
    whatever order the rows were written in (here the reverse)."""
    books = _clean_books(own_db)
    ids = [
        f"{n:08x}-0000-4000-8000-000000000000" for n in range(limits.verify_problems_shown_max + 1)
    ]
    with own_db.unit_of_work() as session:
        for txn in reversed(ids):
            _insert_transaction(
                session,
                books.sponsor,
                books.bob,
                [("credit", 4, "rejected"), ("credit", 5, "rejected")],
                txn_id=txn,
            )
        session.execute(
            update(Transaction).where(Transaction.id.in_(ids)).values(status="rejected")
        )
        # the first transaction's lines, renumbered so that line 2 was written before line 1
        for old, new in ((2, 3), (1, 2), (3, 1)):
            session.execute(
                update(IssuanceLine)
                .where(IssuanceLine.transaction_id == ids[0], IssuanceLine.line_no == old)
                .values(line_no=new)
            )
    expected = [
        f"transaction {txn}: status rejected but its line #{n} is rejected"
        for txn in ids
        for n in (1, 2)
    ]
    assert _verify(own_db).problems == expected[: limits.verify_problems_shown_max]


def test_verify_lists_the_first_odd_transactions_in_order(own_db: Database) -> None:
    books = _clean_books(own_db)
    ids = [
        f"{n:08x}-0000-4000-8000-000000000000" for n in range(limits.verify_problems_shown_max + 1)
    ]
    with own_db.unit_of_work() as session:
        for txn in reversed(ids):
            _insert_transaction(
                session, books.sponsor, books.bob, [("credit", 4, "rejected")], txn_id=txn
            )
        session.execute(update(Transaction).where(Transaction.id.in_(ids)).values(status="pending"))
    assert _verify(own_db).problems == [
        f"transaction {txn}: status pending but no line of it is"
        for txn in ids[: limits.verify_problems_shown_max]
    ]


def test_verify_bounds_reversals_per_original_and_offer(own_db: Database) -> None:
    """Reversals are summed per original and per offer code: two originals of the same offer, or
    two offers of the same original, each reversed within bounds, are within bounds."""
    books = _clean_books(own_db)
    bonus = _book(
        own_db, books.sponsor, books.alice, [("debit", 5, "posted")], original=books.original
    )
    other = _book(own_db, books.sponsor, books.bob, [("credit", 10, "posted")])
    _book(own_db, books.sponsor, books.bob, [("debit", 8, "posted")], original=other)
    with own_db.unit_of_work() as session:
        for txn, line_no in ((books.original, 2), (bonus, 1)):
            session.execute(
                update(IssuanceLine)
                .where(IssuanceLine.transaction_id == txn, IssuanceLine.line_no == line_no)
                .values(offer_code="BONUS")
            )
    assert _verify(own_db).problems == []


def _problems_like(report: VerifyReport, text: str) -> list[str]:
    return [p for p in report.problems if text in p]


def test_verify_shows_at_most_the_maximum_of_each_kind_of_problem(own_db: Database) -> None:
    books = _clean_books(own_db)
    many = limits.verify_problems_shown_max + 1
    unpaired = _book(own_db, books.sponsor, books.alice, [("credit", 1, "posted")] * many)
    moved = _book(own_db, books.sponsor, books.alice, [("credit", 1, "posted")] * many)
    with own_db.unit_of_work() as session:
        session.execute(
            delete(LedgerEntry).where(
                LedgerEntry.transaction_id == unpaired, LedgerEntry.account_kind == "sponsor"
            )
        )
        session.execute(
            update(LedgerEntry)
            .where(LedgerEntry.transaction_id == moved, LedgerEntry.account_kind == "collector")
            .values(account_code=books.bob)
        )
    numbers = [data.new_collector(own_db) for _ in range(many)]
    with own_db.unit_of_work() as session:
        session.execute(
            update(Collector).where(Collector.number.in_(numbers)).values(balance_miles=3)
        )
    report = _verify(own_db)
    shown = limits.verify_problems_shown_max
    assert len(_problems_like(report, "entries are not one balanced pair")) == shown
    assert len(_problems_like(report, "not one collector entry and one sponsor entry")) == shown
    assert len(_problems_like(report, "entry does not match the line's account")) == shown
    assert len(_problems_like(report, "but entries sum to")) == shown


def test_verify_counts_only_accepted_credits_as_issued(own_db: Database) -> None:
    """What an original issued is its credit lines not rejected: a rejected line and a debit line
    of the original do not make room for a reversal."""
    books = _clean_books(own_db)
    original = _book(
        own_db,
        books.sponsor,
        books.bob,
        [("credit", 10, "posted"), ("credit", 7, "rejected"), ("debit", 3, "posted")],
    )
    _book(own_db, books.sponsor, books.bob, [("debit", 11, "posted")], original=original)
    assert _verify(own_db).problems == [
        f"original {original} offer STANDARD: 11 miles reversed but only 10 issued"
    ]


def test_verify_reports_a_reversal_of_an_offer_the_original_never_issued(
    own_db: Database,
) -> None:
    books = _clean_books(own_db)
    reversal = _book(
        own_db, books.sponsor, books.alice, [("debit", 1, "posted")], original=books.original
    )
    with own_db.unit_of_work() as session:
        session.execute(
            update(IssuanceLine)
            .where(IssuanceLine.transaction_id == reversal)
            .values(offer_code="BONUS")
        )
    assert _verify(own_db).problems == [
        f"original {books.original} offer BONUS: 1 miles reversed but only 0 issued"
    ]


def test_verify_shows_at_most_the_maximum_of_reversals_beyond_originals(
    own_db: Database,
) -> None:
    books = _clean_books(own_db)
    for _ in range(limits.verify_problems_shown_max + 1):
        original = _book(own_db, books.sponsor, books.bob, [("credit", 1, "posted")])
        _book(own_db, books.sponsor, books.bob, [("debit", 2, "posted")], original=original)
    problems = _verify(own_db).problems
    assert len(problems) == limits.verify_problems_shown_max, problems
    assert all("2 miles reversed but only 1 issued" in p for p in problems)
