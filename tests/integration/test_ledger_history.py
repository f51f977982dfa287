"""A collector's ledger history (`ledger.history`): keyset pages newest first, the running
balance across pages, the signed cursor, on every dialect."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from rewardmiles.codec import b64url, unb64url
from rewardmiles.collectors import adjustments
from rewardmiles.collectors.adjustments import AdjustmentRequest
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.db.models import LedgerEntry
from rewardmiles.ledger import history
from rewardmiles.ledger.history import CursorError, Position
from rewardmiles.operators.service import Actor
from rewardmiles.vocabulary import OperatorRole
from tests.integration.test_ledger import _book
from tests.support import data

KEY = b"k" * 32


def _adjust(db: Database, number: str, miles: int) -> str:
    with db.unit_of_work() as session:
        outcome = adjustments.adjust(
            session,
            AdjustmentRequest(number, miles, "GOODWILL", "test", str(uuid.uuid4())),
            actor=Actor("history@example.com"),
            role=OperatorRole.ADMIN,
            settings=Settings(),
            now=data.now(),
        )
    return outcome.adjustment.id


def _collector_with_history(db: Database) -> tuple[str, str, list[str]]:
    """A collector with 14 entries: credits and debits from transactions and adjustments."""
    sponsor = data.new_sponsor(db)
    number = data.new_collector(db)
    refs = []
    for i in range(4):
        refs.append(
            _book(db, sponsor, number, [("credit", 10 + i, "posted"), ("credit", 3, "posted")])
        )
        refs.append(_adjust(db, number, -(i + 1)))
    refs.append(_book(db, sponsor, number, [("debit", 7, "posted")]))
    refs.append(_adjust(db, number, 500))
    refs.append(_book(db, sponsor, number, [("credit", 1, "pending")]))  # no entry
    return sponsor, number, refs


def _truth(db: Database, number: str) -> list[tuple[int, int]]:
    """(entry id, balance after it) recomputed from every entry of the collector, newest first."""
    with db.reader() as session:
        rows = session.execute(
            select(LedgerEntry.id, LedgerEntry.amount_miles)
            .where(LedgerEntry.account_kind == "collector", LedgerEntry.account_code == number)
            .order_by(LedgerEntry.id)
        ).all()
    running, out = 0, []
    for ident, amount in rows:
        running += amount
        out.append((ident, running))
    return out[::-1]


def _walk(db: Database, number: str, size: int) -> list[list[history.HistoryEntry]]:
    pages, after = [], None
    while True:
        with db.snapshot_reader() as session:
            found = history.page(session, number, size, after)
        assert found is not None
        pages.append(found.entries)
        if found.next_position is None:
            return pages
        # Through the cursor, as a client would.
        cursor = history.encode_cursor(KEY, number, found.next_position)
        after = history.decode_cursor(KEY, number, cursor)


@pytest.mark.parametrize("size", [1, 4, 7, 14, 15, 500])
def test_pages_walk_every_entry_newest_first_with_the_running_balance(
    db: Database, size: int
) -> None:
    _, number, _ = _collector_with_history(db)
    truth = _truth(db, number)
    assert len(truth) == 14
    pages = _walk(db, number, size)
    assert [len(p) for p in pages[:-1]] == [size] * (len(pages) - 1)
    assert 1 <= len(pages[-1]) <= size
    walked = [(e.entry_id, e.balance_after) for p in pages for e in p]
    assert walked == truth
    assert walked[0][1] == data.balance(db, number)


def test_an_entry_shows_its_transaction_or_its_adjustment(db: Database) -> None:
    sponsor, number, refs = _collector_with_history(db)
    with db.snapshot_reader() as session:
        found = history.page(session, number, 3, None)
    assert found is not None
    newest, previous, third = found.entries
    # Newest first: the adjustment of 500, the debit of 7, the last adjustment of -4.
    assert (newest.reference_id, newest.endpoint, newest.miles) == (refs[9], "adjustment", 500)
    assert (newest.sponsor_code, newest.partner_transaction_id, newest.offer_code) == (
        None,
        None,
        None,
    )
    assert (previous.reference_id, previous.endpoint, previous.miles) == (refs[8], "post_event", -7)
    assert (previous.sponsor_code, previous.offer_code) == (sponsor, "STANDARD")
    assert previous.partner_transaction_id is not None
    assert (third.miles, third.endpoint) == (-4, "adjustment")
    assert newest.balance_after - newest.miles == previous.balance_after


def test_a_collector_without_entries_has_one_empty_page(db: Database) -> None:
    number = data.new_collector(db)
    with db.snapshot_reader() as session:
        found = history.page(session, number, 50, None)
    assert found == history.HistoryPage([], None)


def test_an_unknown_collector_has_no_history(db: Database) -> None:
    with db.snapshot_reader() as session:
        assert history.page(session, data.unknown_collector(), 50, None) is None


def test_entries_written_after_the_first_page_do_not_shift_the_next(db: Database) -> None:
    _, number, _ = _collector_with_history(db)
    truth = _truth(db, number)
    with db.snapshot_reader() as session:
        first = history.page(session, number, 5, None)
    assert first is not None
    assert first.next_position is not None
    _adjust(db, number, 1000)  # newer than every entry shown
    with db.snapshot_reader() as session:
        second = history.page(session, number, 5, first.next_position)
    assert second is not None
    assert [(e.entry_id, e.balance_after) for e in second.entries] == truth[5:10]


def test_the_first_page_reads_balance_and_entries_in_one_snapshot(
    db: Database, dialect: str
) -> None:
    """On PostgreSQL a write committed between the page's two reads is seen by neither; on
    SQLite the snapshot reader holds the only writer's lock, so none commits meanwhile."""
    _, number, _ = _collector_with_history(db)
    before = _truth(db, number)
    with db.snapshot_reader() as session:
        assert history.balance_of(session, number) == before[0][1]
        if dialect == "postgresql":
            _adjust(db, number, 77)  # another connection, mid-snapshot
        found = history.page(session, number, 50, None)
    assert found is not None
    assert [(e.entry_id, e.balance_after) for e in found.entries] == before
    if dialect == "postgresql":
        assert _truth(db, number)[0][1] == before[0][1] + 77


# --------------------------------------------------------------------------- the cursor


def test_a_cursor_round_trips_for_its_collector_only() -> None:
    position = Position(123456, -42)
    cursor = history.encode_cursor(KEY, "12345678901", position)
    assert history.decode_cursor(KEY, "12345678901", cursor) == position
    with pytest.raises(CursorError):
        history.decode_cursor(KEY, "12345678902", cursor)
    with pytest.raises(CursorError):
        history.decode_cursor(b"another key" * 3, "12345678901", cursor)


def _forged(text: str, mac: bytes = b"\0" * 16) -> str:
    return b64url(text.encode() + mac)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: "",
        lambda c: "!" * 20,
        lambda c: c + "A",
        lambda c: c[:-1],
        lambda c: c + "=",
        lambda c: "x" * 201,
        lambda c: b64url(b"\0" * 16),  # no text before the signature
        lambda c: b64url(unb64url(c)[-16:]),  # the signature alone
        lambda c: b64url(unb64url(c)[:-16]),  # signature dropped
        lambda c: b64url(unb64url(c).replace(b":-42", b":942")),  # balance changed, old MAC
        lambda c: b64url(unb64url(c).replace(b":123456:", b":123457:")),  # position changed
        lambda c: _forged("v1:12345678901:123456:1000000"),  # made up whole
        lambda c: b64url(unb64url(c)[:-1] + bytes([unb64url(c)[-1] ^ 1])),  # one bit of MAC
    ],
)
def test_a_tampered_cursor_is_refused(mutate: object) -> None:
    cursor = history.encode_cursor(KEY, "12345678901", Position(123456, -42))
    with pytest.raises(CursorError):
        history.decode_cursor(KEY, "12345678901", mutate(cursor))  # type: ignore[operator]


@pytest.mark.parametrize(
    "text",
    [
        "v1:12345678901:0:5",  # no entry id 0
        "v1:12345678901:012:5",  # leading zero
        "v2:12345678901:12:5",
        "v1:1234567890:12:5",
        "v1:12345678901:12:5:",
        "v1:12345678901:12:+5",
        "v1:12345678901:12:",
    ],
)
def test_a_signed_cursor_is_still_parsed_strictly(text: str) -> None:
    import hashlib
    import hmac

    mac = hmac.new(KEY, text.encode(), hashlib.sha256).digest()[:16]
    with pytest.raises(CursorError):
        history.decode_cursor(KEY, "12345678901", b64url(text.encode() + mac))
