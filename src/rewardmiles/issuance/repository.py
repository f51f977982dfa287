"""Queries of the issuance use cases. No rules here: the service decides.

Hot-path statements are built once, at import, with bound parameters, and run on the session's
Core connection: per request, SQLAlchemy only looks up the compiled form in its cache.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import (
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

from rewardmiles.db.engine import insert_ignoring_conflicts, write
from rewardmiles.db.models import (
    Collector,
    IssuanceLine,
    Location,
    Offer,
    Sponsor,
    Transaction,
)
from rewardmiles.vocabulary import CollectorStatus, Direction, LineStatus, TransactionStatus


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
    Transaction.id == bindparam("id"), Transaction.status != TransactionStatus.REJECTED
)
_FIND_ACCEPTED = select(*_ACCEPTED_COLUMNS).where(
    Transaction.sponsor_code == bindparam("sponsor"),
    Transaction.endpoint.in_(bindparam("endpoints", expanding=True)),
    Transaction.partner_transaction_id == bindparam("partner_id"),
    Transaction.status != TransactionStatus.REJECTED,
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
        IssuanceLine.direction == Direction.CREDIT,
        IssuanceLine.status != LineStatus.REJECTED,
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
        IssuanceLine.status != LineStatus.REJECTED,
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


def load_sponsor(session: Session, code: str) -> SponsorRow | None:
    row = session.connection().execute(_GET_SPONSOR, {"code": code}).one_or_none()
    return SponsorRow(row.code, row.active, row.review_threshold_miles) if row else None


def load_offers(session: Session, sponsor_code: str, codes: Iterable[str]) -> dict[str, OfferRow]:
    rows = session.connection().execute(
        _GET_OFFERS, {"sponsor": sponsor_code, "codes": sorted(set(codes))}
    )
    return {r.code: OfferRow(r.code, r.active, r.valid_from, r.valid_to) for r in rows}


def load_locations(
    session: Session, sponsor_code: str, codes: Iterable[str]
) -> tuple[bool, set[str]]:
    """(does the sponsor register any location, which of `codes` are registered)."""
    conn = session.connection()
    known = set(
        conn.execute(
            _GET_LOCATIONS, {"sponsor": sponsor_code, "codes": sorted(set(codes))}
        ).scalars()
    )
    if known:
        return True, known
    return registers_any_location(session, sponsor_code), known


def registers_any_location(session: Session, sponsor_code: str) -> bool:
    return (
        session.connection().execute(_ANY_LOCATION, {"sponsor": sponsor_code}).first() is not None
    )


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
        if status == LineStatus.PENDING:
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
    .where(
        IssuanceLine.transaction_id == bindparam("id"), IssuanceLine.status == LineStatus.PENDING
    )
    .limit(1)
)
_SET_TRANSACTION_STATUS = (
    update(Transaction)
    .where(
        Transaction.id == bindparam("b_id"),
        Transaction.status.in_((TransactionStatus.PENDING, TransactionStatus.POSTED)),
    )
    .values(status=bindparam("b_status"))
)


def refresh_transaction_status(session: Session, transaction_id: str) -> TransactionStatus:
    """An accepted transaction is `pending` while any line is, else `posted` (settled)."""
    conn = session.connection()
    still_pending = conn.execute(_ANY_LINE_PENDING, {"id": transaction_id}).first() is not None
    status = TransactionStatus.PENDING if still_pending else TransactionStatus.POSTED
    conn.execute(_SET_TRANSACTION_STATUS, {"b_id": transaction_id, "b_status": status})
    return status


_CALCULATION_OF = select(Transaction.calculation_json).where(Transaction.id == bindparam("id"))
_REVERSAL_CALCULATIONS = select(Transaction.calculation_json).where(
    Transaction.original_transaction_id == bindparam("original"),
    Transaction.status != TransactionStatus.REJECTED,
    Transaction.calculation_json.is_not(None),
)


def get_calculation(session: Session, transaction_id: str) -> str | None:
    return (
        session.connection().execute(_CALCULATION_OF, {"id": transaction_id}).scalar_one_or_none()
    )


def calculations_of_reversals(session: Session, original_id: str) -> list[str]:
    rows = session.connection().execute(_REVERSAL_CALCULATIONS, {"original": original_id}).scalars()
    return [row for row in rows if row is not None]


def enroll_collector(session: Session, number: str, now: datetime) -> None:
    """Enrol an unknown collector, ACTIVE with no miles (a concurrent enrolment wins quietly)."""
    session.execute(
        insert_ignoring_conflicts(session, Collector.__table__).values(  # type: ignore[arg-type]
            number=number,
            status=CollectorStatus.ACTIVE.value,
            balance_miles=0,
            created_at=now,
            updated_at=now,
        )
    )


def collector_status(session: Session, number: str) -> str | None:
    """Read without a lock: for the calls that move no miles (RECORD, CALCULATE)."""
    return (
        session.connection()
        .execute(select(Collector.status).where(Collector.number == number))
        .scalar_one_or_none()
    )
