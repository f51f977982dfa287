"""A collector's ledger history (`ledger.history`): keyset pages newest first, the running
balance across pages, the signed cursor, on every dialect."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import event, select

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
    assert newest.balance_after is not None
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


@pytest.mark.parametrize("size", [1, 5])
def test_a_page_asks_the_database_for_one_entry_more_than_it_shows(db: Database, size: int) -> None:
    """The keyset promise (page 200 costs what page 1 does): the entries' query is bounded by
    LIMIT size + 1, whatever the collector's history holds, on the first page and after it."""
    _, number, _ = _collector_with_history(db)
    seen: list[tuple[str, list[object]]] = []

    def record(*args: object) -> None:
        statement, parameters = str(args[2]), args[3]
        if "ledger_entries" in statement and "JOIN" in statement.upper():
            values = parameters.values() if isinstance(parameters, dict) else parameters
            seen.append((statement, list(values)))  # type: ignore[call-overload]

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        with db.snapshot_reader() as session:
            first = history.page(session, number, size, None)
            assert first is not None
            assert first.next_position is not None
            history.page(session, number, size, first.next_position)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert len(seen) == 2
    for statement, values in seen:
        assert "LIMIT" in statement.upper()
        assert size + 1 in values


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


def _signed(text: bytes, key: bytes = KEY) -> str:
    """A cursor whose signature is right for `text` (what only this program can make)."""
    import hashlib
    import hmac

    return b64url(text + hmac.new(key, text, hashlib.sha256).digest()[:16])


# Each refusal names its reason (the route answers every one with the same CURSOR_INVALID
# problem; the reason is for whoever debugs it). Pinned per reason, so a check that stops
# refusing is seen even when a later check would refuse the cursor anyway.
@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: "", "cursor of the wrong length"),
        (lambda: "A" * 201, "cursor of the wrong length"),
        (lambda: "AAAA" * 50 + "A", "cursor of the wrong length"),
        # 200 characters, well-formed base64url of a signed (if meaningless) text: past the
        # length check, refused for what it says.
        (lambda: _signed(b"v1:" + b"9" * 131), "cursor names another collector"),
        (lambda: "A" * 21, "cursor is not base64url"),
        (lambda: "AAAAA", "cursor is not base64url"),
        # Characters outside the alphabet are dropped by the decoder: not the text it encodes.
        (lambda: "!" * 20, "cursor is not one this program gave"),
        (
            lambda: history.encode_cursor(KEY, "12345678901", Position(1, 2)) + "=",
            "cursor is not one this program gave",
        ),
        # The signature of the empty text, alone: 16 bytes, signed right, but no text.
        (lambda: _signed(b""), "cursor is not one this program gave"),
        (lambda: b64url(b"\1" * 16), "cursor is not one this program gave"),
        (lambda: _signed(b"v1:12345678901:7:0", b"another key"), "cursor signature does not match"),
        (lambda: _signed(b"v1:12345678902:7:0"), "cursor names another collector"),
        (lambda: _signed(b"v1:12345678901:7:0 "), "cursor names another collector"),
        # Bytes beyond ASCII, signed: not a cursor (and not a decoding error escaping).
        (lambda: _signed(b"v1:12345678901:7:\xff"), "cursor names another collector"),
        (lambda: _signed("v1:12345678901:7:\u0663".encode()), "cursor names another collector"),
        (lambda: _signed("v1:1234567890\u0661:7:0".encode()), "cursor names another collector"),
    ],
)
def test_each_refusal_of_a_cursor_names_its_reason(make: object, reason: str) -> None:
    cursor = make()  # type: ignore[operator]
    with pytest.raises(CursorError) as refused:
        history.decode_cursor(KEY, "12345678901", cursor)
    assert type(refused.value) is CursorError
    assert str(refused.value) == reason


def test_the_longest_cursor_is_well_within_the_length_bound() -> None:
    longest = Position(10**19 - 1, -(10**19 - 1))
    cursor = history.encode_cursor(KEY, "99999999999", longest)
    assert len(cursor) < 200
    assert history.decode_cursor(KEY, "99999999999", cursor) == longest


# --------------------------------------------------------------------------- filters


def _walk_where(
    db: Database, number: str, size: int, where: history.HistoryFilter
) -> list[history.HistoryEntry]:
    entries, after = [], None
    while True:
        with db.snapshot_reader() as session:
            found = history.page(session, number, size, after, where)
        assert found is not None
        assert len(found.entries) <= size
        entries.extend(found.entries)
        if found.next_position is None:
            return entries
        cursor = history.encode_cursor(KEY, number, found.next_position)
        after = history.decode_cursor(KEY, number, cursor)


@pytest.mark.parametrize("size", [1, 3, 500])
def test_a_filter_keeps_the_sponsors_or_offers_entries_across_pages_without_a_balance(
    db: Database, size: int
) -> None:
    sponsor, number, refs = _collector_with_history(db)
    other = data.new_sponsor(db)
    theirs = _book(db, other, number, [("credit", 40, "posted")])
    everything = [e for p in _walk(db, number, 500) for e in p]

    mine = _walk_where(db, number, size, history.HistoryFilter(sponsor_code=sponsor))
    assert [e.entry_id for e in mine] == [
        e.entry_id for e in everything if e.sponsor_code == sponsor
    ]
    assert len(mine) == 9
    assert {e.balance_after for e in mine} == {None}
    [their] = _walk_where(db, number, size, history.HistoryFilter(sponsor_code=other))
    assert (their.reference_id, their.miles) == (theirs, 40)
    standard = _walk_where(db, number, size, history.HistoryFilter(offer_code="STANDARD"))
    assert len(standard) == 10
    assert _walk_where(db, number, size, history.HistoryFilter(offer_code="NOPE")) == []
    both = history.HistoryFilter(sponsor_code=other, offer_code="STANDARD")
    assert [e.reference_id for e in _walk_where(db, number, size, both)] == [theirs]
    assert set(refs) >= {e.reference_id for e in mine}


def test_a_filter_by_posting_time_bounds_from_inclusive_to_exclusive(db: Database) -> None:
    _, number, _ = _collector_with_history(db)
    everything = [e for p in _walk(db, number, 500) for e in p]
    times = sorted({e.posted_at for e in everything})
    assert len(times) >= 2
    cut = times[len(times) // 2]
    later = _walk_where(db, number, 2, history.HistoryFilter(posted_from=cut))
    earlier = _walk_where(db, number, 2, history.HistoryFilter(posted_to=cut))
    assert [e.entry_id for e in later] == [e.entry_id for e in everything if e.posted_at >= cut]
    assert [e.entry_id for e in earlier] == [e.entry_id for e in everything if e.posted_at < cut]
    assert later
    assert earlier
    span = history.HistoryFilter(posted_from=cut, posted_to=cut)
    assert _walk_where(db, number, 2, span) == []


def test_an_empty_filter_keeps_the_running_balance(db: Database) -> None:
    _, number, _ = _collector_with_history(db)
    with db.snapshot_reader() as session:
        found = history.page(session, number, 500, None, history.HistoryFilter())
    assert found is not None
    assert [(e.entry_id, e.balance_after) for e in found.entries] == _truth(db, number)
