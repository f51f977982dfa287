"""A collector's ledger history, newest first, a page at a time, each entry with the collector's
balance right after it, without ever summing the history.

A page is found through `ix_ledger_entries_account` (account kind, account code, id): the entries
of the collector with an id below the cursor's, newest first, `LIMIT n + 1`. Page 200 costs what
page 1 does.

The running balance walks down from a known balance: the first page starts from the collector's
balance read in the same snapshot as its entries (the caller opens `Database.snapshot_reader`),
and each entry's balance before it is its balance after minus its miles. The cursor carries the
last entry's id and the balance before it, signed (HMAC-SHA256 under a key of the program's,
`SecretBox.derive`) together with the collector's number, so a client can neither forge a balance
nor move a cursor to another collector. A collector's entries are written under its row lock
(`ledger.post`, `post_adjustment`, the batched statement), so their ids grow in the order they
commit: no entry below a cursor's id can appear after the cursor was given.

A page may be narrowed by a `HistoryFilter` (sponsor, offer, posting time): the same walk down
`ix_ledger_entries_account`, each entry checked as it is read (the sponsor through the
transaction's primary key, the offer through the line's), so a page costs the collector's
entries walked past, never the table's. A filtered page carries no running balance
(`balance_after` None): the balance walks down through every entry, and a filter skips some. Its
cursor's balance is therefore no balance: a caller signs a filtered page's cursors under a key of
the filter (`console.collectors`), so one can never continue an unfiltered list.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from rewardmiles.codec import b64url, unb64url
from rewardmiles.db.models import Collector, IssuanceLine, LedgerEntry, Transaction
from rewardmiles.vocabulary import AccountKind, EntrySource

CURSOR_PURPOSE = "rewardmiles ledger-history cursor v1"
_MAC_BYTES = 16
# Matched on the signed bytes themselves: [0-9] and the separators are ASCII, so a text with any
# other byte is simply not a cursor (no decoding step to get wrong).
_CURSOR_TEXT = re.compile(rb"v1:([0-9]{11}):([1-9][0-9]{0,18}):(-?[0-9]{1,19})")


class CursorError(ValueError):
    """A cursor this program did not give for this collector (or altered since)."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ends: its last entry's id, and the collector's balance before that entry."""

    entry_id: int
    balance_before: int


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """Entries of one sponsor, of one offer, posted in [posted_from, posted_to); None: any."""

    sponsor_code: str | None = None
    offer_code: str | None = None
    posted_from: datetime | None = None
    posted_to: datetime | None = None

    def narrows(self) -> bool:
        return any(
            v is not None
            for v in (self.sponsor_code, self.offer_code, self.posted_from, self.posted_to)
        )


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    entry_id: int
    posted_at: datetime
    reference_id: str  # the transaction's id, or the adjustment's
    partner_transaction_id: str | None
    sponsor_code: str | None
    offer_code: str | None
    endpoint: str  # `Endpoint`'s word, or `EntrySource.ADJUSTMENT`
    miles: int  # signed, from the collector's side
    balance_after: int | None  # None on a filtered page


@dataclass(frozen=True, slots=True)
class HistoryPage:
    entries: list[HistoryEntry]
    next_position: Position | None


def encode_cursor(key: bytes, number: str, position: Position) -> str:
    text = f"v1:{number}:{position.entry_id}:{position.balance_before}".encode()
    mac = hmac.new(key, text, hashlib.sha256).digest()[:_MAC_BYTES]
    return b64url(text + mac)


def decode_cursor(key: bytes, number: str, cursor: str) -> Position:
    """The position `cursor` names for the collector `number`; `CursorError` for anything else."""
    if not cursor or len(cursor) > 200:
        raise CursorError("cursor of the wrong length")
    try:
        raw = unb64url(cursor)
    except (binascii.Error, ValueError) as exc:
        raise CursorError("cursor is not base64url") from exc
    if b64url(raw) != cursor or len(raw) <= _MAC_BYTES:
        raise CursorError("cursor is not one this program gave")
    text, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    expected = hmac.new(key, text, hashlib.sha256).digest()[:_MAC_BYTES]
    if not hmac.compare_digest(mac, expected):
        raise CursorError("cursor signature does not match")
    found = _CURSOR_TEXT.fullmatch(text)
    if found is None or found.group(1) != number.encode():
        raise CursorError("cursor names another collector")
    return Position(int(found.group(2)), int(found.group(3)))


def balance_of(session: Session, number: str) -> int | None:
    """The collector's balance, or None for a number no collector has."""
    return session.execute(
        select(Collector.balance_miles).where(Collector.number == number)
    ).scalar_one_or_none()


def page(
    session: Session,
    number: str,
    limit: int,
    after: Position | None,
    where: HistoryFilter | None = None,
) -> HistoryPage | None:
    """Up to `limit` entries of the collector, newest first, after `after` (None: from the
    newest, starting from the balance read now), those `where` keeps only (then without the
    running balance); None for a number no collector has."""
    balance = balance_of(session, number)
    if balance is None:
        return None
    query = (
        select(
            LedgerEntry.id,
            LedgerEntry.posted_at,
            LedgerEntry.amount_miles,
            LedgerEntry.transaction_id,
            LedgerEntry.adjustment_id,
            Transaction.partner_transaction_id,
            Transaction.sponsor_code,
            Transaction.endpoint,
            IssuanceLine.offer_code,
        )
        .select_from(LedgerEntry)
        .outerjoin(Transaction, Transaction.id == LedgerEntry.transaction_id)
        .outerjoin(
            IssuanceLine,
            (IssuanceLine.transaction_id == LedgerEntry.transaction_id)
            & (IssuanceLine.line_no == LedgerEntry.line_no),
        )
        .where(LedgerEntry.account_kind == AccountKind.COLLECTOR)
        # The number as a range of one value, and in the order: with an equality PostgreSQL may
        # walk the primary key down from the newest entry instead, filtering every entry for the
        # collector, which for a member idle for months reads all the months' entries.
        .where(LedgerEntry.account_code.between(number, number))
        .order_by(LedgerEntry.account_code.desc(), LedgerEntry.id.desc())
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(LedgerEntry.id < after.entry_id)
        balance = after.balance_before
    filtered = where is not None and where.narrows()
    if where is not None:
        if where.sponsor_code is not None:
            query = query.where(Transaction.sponsor_code == where.sponsor_code)
        if where.offer_code is not None:
            query = query.where(IssuanceLine.offer_code == where.offer_code)
        if where.posted_from is not None:
            query = query.where(LedgerEntry.posted_at >= where.posted_from)
        if where.posted_to is not None:
            query = query.where(LedgerEntry.posted_at < where.posted_to)
    rows = session.execute(query).all()
    entries: list[HistoryEntry] = []
    for row in rows[:limit]:
        adjusted = row.adjustment_id is not None
        entries.append(
            HistoryEntry(
                row.id,
                row.posted_at,
                row.adjustment_id if adjusted else row.transaction_id,
                row.partner_transaction_id,
                row.sponsor_code,
                row.offer_code,
                EntrySource.ADJUSTMENT if adjusted else row.endpoint,
                row.amount_miles,
                None if filtered else balance,
            )
        )
        balance -= row.amount_miles
    more = len(rows) > limit
    return HistoryPage(entries, Position(entries[-1].entry_id, balance) if more else None)
