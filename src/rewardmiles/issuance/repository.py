"""Queries of the issuance use cases. No rules here: the service decides.

Hot-path statements are built once, at import, with bound parameters, and run on the session's
Core connection: per request, SQLAlchemy only looks up the compiled form in its cache.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from weakref import WeakKeyDictionary

from sqlalchemy import (
    Engine,
    bindparam,
    func,
    insert,
    literal,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.selectable import CompoundSelect

from rewardmiles.db.engine import write
from rewardmiles.db.models import (
    Collector,
    IssuanceLine,
    Location,
    Offer,
    Sponsor,
    Transaction,
)


@dataclass(frozen=True, slots=True)
class SponsorRow:
    code: str
    active: bool
    review_threshold_miles: int | None


@dataclass(frozen=True, slots=True)
class OfferRow:
    code: str
    active: bool
    valid_from: date | None
    valid_to: date | None


@dataclass(frozen=True, slots=True)
class AcceptedTransaction:
    id: str
    endpoint: str
    sponsor_code: str
    collector_number: str | None
    fingerprint: str


@dataclass(frozen=True, slots=True)
class OriginalTotals:
    issued_miles: dict[str, int]  # per offer code, lines not rejected
    pending_offers: frozenset[str]  # offer codes with a line still pending
    reversed_miles: dict[str, int]  # per offer code, by earlier reversals not rejected


_GET_SPONSOR = select(Sponsor.code, Sponsor.active, Sponsor.review_threshold_miles).where(
    Sponsor.code == bindparam("code")
)
_GET_OFFERS = select(Offer.code, Offer.active, Offer.valid_from, Offer.valid_to).where(
    Offer.sponsor_code == bindparam("sponsor"), Offer.code.in_(bindparam("codes", expanding=True))
)
_GET_LOCATIONS = select(Location.code).where(
    Location.sponsor_code == bindparam("sponsor"),
    Location.code.in_(bindparam("codes", expanding=True)),
)
_ANY_LOCATION = select(Location.code).where(Location.sponsor_code == bindparam("sponsor")).limit(1)
_ACCEPTED_COLUMNS = (
    Transaction.id,
    Transaction.endpoint,
    Transaction.sponsor_code,
    Transaction.collector_number,
    Transaction.fingerprint,
)
_GET_ACCEPTED = select(*_ACCEPTED_COLUMNS).where(
    Transaction.id == bindparam("id"), Transaction.status != "rejected"
)
_FIND_ACCEPTED = select(*_ACCEPTED_COLUMNS).where(
    Transaction.sponsor_code == bindparam("sponsor"),
    Transaction.endpoint.in_(bindparam("endpoints", expanding=True)),
    Transaction.partner_transaction_id == bindparam("partner_id"),
    Transaction.status != "rejected",
)
_FIND_ACCEPTED_FOR_UPDATE = _FIND_ACCEPTED.with_for_update()
# An original's lines (offer, status, miles) and what its reversals took so far (offer, NULL,
# miles summed), in one round trip: both read after the original's row lock was taken.
_reversal = aliased(Transaction)
_ORIGINAL_TOTALS: CompoundSelect[str, str, str | None, int] = union_all(
    select(
        literal("issued").label("kind"),
        IssuanceLine.offer_code,
        IssuanceLine.status,
        IssuanceLine.miles,
    ).where(
        IssuanceLine.transaction_id == bindparam("original"),
        IssuanceLine.direction == "credit",
        IssuanceLine.status != "rejected",
    ),
    select(
        literal("reversed").label("kind"),
        IssuanceLine.offer_code,
        null().label("status"),
        func.sum(IssuanceLine.miles),
    )
    .join(_reversal, _reversal.id == IssuanceLine.transaction_id)
    .where(
        _reversal.original_transaction_id == bindparam("original"),
        IssuanceLine.status != "rejected",
    )
    .group_by(IssuanceLine.offer_code),
)
_INSERT_TRANSACTION = insert(Transaction)
_INSERT_LINES = insert(IssuanceLine)
_RESPONSE_OF = select(Transaction.response_json).where(Transaction.id == bindparam("id"))
_LINE_STATES = (
    select(IssuanceLine.direction, IssuanceLine.status, IssuanceLine.error_code)
    .where(IssuanceLine.transaction_id == bindparam("id"))
    .order_by(IssuanceLine.line_no)
)


# --------------------------------------------------------------------------- reference data
#
# Sponsors, offers and locations change rarely and are read by every request. Each process keeps
# them per database in a `ReferenceCache` tagged with the `reference_version` counter (bumped by
# triggers on every change to those tables, migration 0005). The issuance path reads the counter in
# its first statement anyway (`idempotency.claim`) and calls `use_reference_cache`; from then on
# the functions below answer from the cache for that version, loading what is missing. Rows are
# loaded after the counter is read, so they are never older than the version they are filed under.

REFERENCE = "rewardmiles.reference"  # session.info key: the cache entries of this unit of work
CACHED_CODES_MAX = 10_000  # per sponsor: unknown codes sent by a partner do not grow it beyond


@dataclass(slots=True)
class SponsorEntry:
    sponsor: SponsorRow | None
    offers: dict[str, OfferRow | None] = field(default_factory=dict)
    locations: dict[str, bool] = field(default_factory=dict)
    registers_any: bool | None = None


class ReferenceCache:
    def __init__(self) -> None:
        # (version, entries) in one tuple, so a reader never pairs one version's number with
        # another version's entries.
        self._current: tuple[int, dict[str, SponsorEntry]] = (-1, {})
        self._lock = threading.Lock()

    def entries(self, version: int) -> dict[str, SponsorEntry]:
        """The entries of `version`; a fresh uncached dict for a snapshot older than the newest
        version seen (so old and new rows never mix)."""
        current_version, current = self._current
        if version == current_version:
            return current
        with self._lock:
            if version > self._current[0]:
                self._current = (version, {})
            current_version, current = self._current
            if version == current_version:
                return current
        return {}

    def newest(self) -> tuple[int, dict[str, SponsorEntry]]:
        """The newest version seen and its entries (-1 and nothing before the first load)."""
        return self._current


_CACHES: WeakKeyDictionary[Engine, ReferenceCache] = WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def use_reference_cache(session: Session, version: int) -> None:
    engine = session.get_bind()
    assert isinstance(engine, Engine)
    cache = _CACHES.get(engine)
    if cache is None:
        with _CACHES_LOCK:
            cache = _CACHES.setdefault(engine, ReferenceCache())
    session.info[REFERENCE] = cache.entries(version)


def newest_reference(engine: Engine) -> tuple[int, dict[str, SponsorEntry]]:
    """The newest reference-data version this process has seen on `engine`, with what it has
    cached of it: for a caller that checks the version in its own statement."""
    cache = _CACHES.get(engine)
    return (-1, {}) if cache is None else cache.newest()


def _sponsor_entry(session: Session, code: str) -> SponsorEntry | None:
    entries: dict[str, SponsorEntry] | None = session.info.get(REFERENCE)
    if entries is None:
        return None
    entry = entries.get(code)
    if entry is None:
        entry = entries[code] = SponsorEntry(_load_sponsor(session, code))
    return entry


def _load_sponsor(session: Session, code: str) -> SponsorRow | None:
    row = session.connection().execute(_GET_SPONSOR, {"code": code}).one_or_none()
    return SponsorRow(row.code, row.active, row.review_threshold_miles) if row else None


def _load_offers(session: Session, sponsor_code: str, codes: Iterable[str]) -> dict[str, OfferRow]:
    rows = session.connection().execute(
        _GET_OFFERS, {"sponsor": sponsor_code, "codes": sorted(set(codes))}
    )
    return {r.code: OfferRow(r.code, r.active, r.valid_from, r.valid_to) for r in rows}


def get_sponsor(session: Session, code: str) -> SponsorRow | None:
    entry = _sponsor_entry(session, code)
    return _load_sponsor(session, code) if entry is None else entry.sponsor


def get_offers(session: Session, sponsor_code: str, codes: Iterable[str]) -> dict[str, OfferRow]:
    entry = _sponsor_entry(session, sponsor_code)
    if entry is None:
        return _load_offers(session, sponsor_code, codes)
    wanted = set(codes)
    missing = [code for code in wanted if code not in entry.offers]
    if missing:
        loaded = _load_offers(session, sponsor_code, missing)
        if len(entry.offers) + len(missing) <= CACHED_CODES_MAX:
            entry.offers.update({code: loaded.get(code) for code in missing})
        else:
            return {
                code: row for code in wanted if (row := entry.offers.get(code) or loaded.get(code))
            }
    return {code: row for code in wanted if (row := entry.offers[code]) is not None}


def _load_locations(
    session: Session, sponsor_code: str, codes: Iterable[str]
) -> tuple[bool, set[str]]:
    conn = session.connection()
    known = set(
        conn.execute(
            _GET_LOCATIONS, {"sponsor": sponsor_code, "codes": sorted(set(codes))}
        ).scalars()
    )
    if known:
        return True, known
    return conn.execute(_ANY_LOCATION, {"sponsor": sponsor_code}).first() is not None, known


def registered_locations(
    session: Session, sponsor_code: str, codes: Iterable[str]
) -> tuple[bool, set[str]]:
    """(does the sponsor register any location, which of `codes` are registered)."""
    entry = _sponsor_entry(session, sponsor_code)
    if entry is None:
        return _load_locations(session, sponsor_code, codes)
    wanted = set(codes)
    missing = [code for code in wanted if code not in entry.locations]
    if missing:
        registers_any, known = _load_locations(session, sponsor_code, missing)
        entry.registers_any = registers_any or bool(entry.registers_any)
        if len(entry.locations) + len(missing) > CACHED_CODES_MAX:
            return entry.registers_any, {c for c in wanted if c in known or entry.locations.get(c)}
        entry.locations.update({code: code in known for code in missing})
    known = {code for code in wanted if entry.locations[code]}
    if entry.registers_any is None:
        entry.registers_any = bool(known) or (
            session.connection().execute(_ANY_LOCATION, {"sponsor": sponsor_code}).first()
            is not None
        )
    return entry.registers_any, known


def find_accepted(
    session: Session,
    sponsor_code: str,
    endpoints: Sequence[str],
    partner_transaction_id: str,
    *,
    lock: bool = False,
) -> AcceptedTransaction | None:
    """The accepted transaction with this partner id, preferring `endpoints` in the order given."""
    rows = (
        session.connection()
        .execute(
            _FIND_ACCEPTED_FOR_UPDATE if lock else _FIND_ACCEPTED,
            {
                "sponsor": sponsor_code,
                "endpoints": list(endpoints),
                "partner_id": partner_transaction_id,
            },
        )
        .all()
    )
    if not rows:
        return None
    best = min(rows, key=lambda r: endpoints.index(r.endpoint))
    return AcceptedTransaction(*best)


def find_accepted_all(
    session: Session, sponsor_code: str, endpoints: Sequence[str], partner_transaction_id: str
) -> list[AcceptedTransaction]:
    rows = session.connection().execute(
        _FIND_ACCEPTED,
        {
            "sponsor": sponsor_code,
            "endpoints": list(endpoints),
            "partner_id": partner_transaction_id,
        },
    )
    return sorted(
        (AcceptedTransaction(*row) for row in rows), key=lambda t: endpoints.index(t.endpoint)
    )


def get_accepted_by_id(session: Session, transaction_id: str) -> AcceptedTransaction | None:
    row = session.connection().execute(_GET_ACCEPTED, {"id": transaction_id}).one_or_none()
    return AcceptedTransaction(*row) if row else None


def original_totals(session: Session, original_id: str) -> OriginalTotals:
    issued: dict[str, int] = defaultdict(int)
    pending: set[str] = set()
    reversed_miles: dict[str, int] = {}
    rows = session.connection().execute(_ORIGINAL_TOTALS, {"original": original_id})
    for kind, offer_code, status, miles in rows:
        if kind == "reversed":
            reversed_miles[offer_code] = int(miles)
            continue
        issued[offer_code] += miles
        if status == "pending":
            pending.add(offer_code)
    return OriginalTotals(dict(issued), frozenset(pending), reversed_miles)


def insert_transaction(session: Session, values: dict[str, object]) -> None:
    write(session, _INSERT_TRANSACTION, values)


def insert_lines(session: Session, rows: list[dict[str, object]]) -> None:
    if rows:
        write(session, _INSERT_LINES, rows)


@dataclass(frozen=True, slots=True)
class LineState:
    direction: str
    status: str
    error_code: str | None


def get_transaction_state(session: Session, transaction_id: str) -> tuple[str, list[LineState]]:
    """(stored response JSON, the lines' current states in line order)."""
    conn = session.connection()
    response_json = conn.execute(_RESPONSE_OF, {"id": transaction_id}).scalar_one()
    lines = conn.execute(_LINE_STATES, {"id": transaction_id}).all()
    return response_json, [LineState(d, s, e) for d, s, e in lines]


_ANY_LINE_PENDING = (
    select(IssuanceLine.line_no)
    .where(IssuanceLine.transaction_id == bindparam("id"), IssuanceLine.status == "pending")
    .limit(1)
)
_SET_TRANSACTION_STATUS = (
    update(Transaction)
    .where(Transaction.id == bindparam("b_id"), Transaction.status.in_(("pending", "posted")))
    .values(status=bindparam("b_status"))
)


def refresh_transaction_status(session: Session, transaction_id: str) -> str:
    """An accepted transaction is `pending` while any line is, else `posted` (settled)."""
    conn = session.connection()
    still_pending = conn.execute(_ANY_LINE_PENDING, {"id": transaction_id}).first() is not None
    status = "pending" if still_pending else "posted"
    conn.execute(_SET_TRANSACTION_STATUS, {"b_id": transaction_id, "b_status": status})
    return status


_CALCULATION_OF = select(Transaction.calculation_json).where(Transaction.id == bindparam("id"))
_REVERSAL_CALCULATIONS = select(Transaction.calculation_json).where(
    Transaction.original_transaction_id == bindparam("original"),
    Transaction.status != "rejected",
    Transaction.calculation_json.is_not(None),
)


def get_calculation(session: Session, transaction_id: str) -> str | None:
    return (
        session.connection().execute(_CALCULATION_OF, {"id": transaction_id}).scalar_one_or_none()
    )


def calculations_of_reversals(session: Session, original_id: str) -> list[str]:
    rows = session.connection().execute(_REVERSAL_CALCULATIONS, {"original": original_id}).scalars()
    return [row for row in rows if row is not None]


def collector_status(session: Session, number: str) -> str | None:
    """Read without a lock: for the calls that move no miles (RECORD, CALCULATE)."""
    return (
        session.connection()
        .execute(select(Collector.status).where(Collector.number == number))
        .scalar_one_or_none()
    )
