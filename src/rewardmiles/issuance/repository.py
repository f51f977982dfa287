"""Queries of the issuance use cases. No rules here: the service decides."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, aliased

from rewardmiles.db.models import IssuanceLine, Location, Offer, Sponsor, Transaction


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
    collector_number: str | None
    fingerprint: str


@dataclass(frozen=True, slots=True)
class OriginalTotals:
    issued_miles: dict[str, int]  # per offer code, lines not rejected
    pending_offers: frozenset[str]  # offer codes with a line still pending
    reversed_miles: dict[str, int]  # per offer code, by earlier reversals not rejected


def get_sponsor(session: Session, code: str) -> SponsorRow | None:
    row = session.execute(
        select(Sponsor.code, Sponsor.active, Sponsor.review_threshold_miles).where(
            Sponsor.code == code
        )
    ).one_or_none()
    return SponsorRow(row.code, row.active, row.review_threshold_miles) if row else None


def get_offers(session: Session, sponsor_code: str, codes: Iterable[str]) -> dict[str, OfferRow]:
    rows = session.execute(
        select(Offer.code, Offer.active, Offer.valid_from, Offer.valid_to).where(
            Offer.sponsor_code == sponsor_code, Offer.code.in_(set(codes))
        )
    ).all()
    return {r.code: OfferRow(r.code, r.active, r.valid_from, r.valid_to) for r in rows}


def registered_locations(
    session: Session, sponsor_code: str, codes: Iterable[str]
) -> tuple[bool, set[str]]:
    """(does the sponsor register any location, which of `codes` are registered)."""
    wanted = set(codes)
    known = set(
        session.scalars(
            select(Location.code).where(
                Location.sponsor_code == sponsor_code, Location.code.in_(wanted)
            )
        )
    )
    if known:
        return True, known
    any_registered = session.execute(
        select(Location.code).where(Location.sponsor_code == sponsor_code).limit(1)
    ).first()
    return any_registered is not None, known


def find_accepted(
    session: Session,
    sponsor_code: str,
    endpoints: Sequence[str],
    partner_transaction_id: str,
    *,
    lock: bool = False,
) -> AcceptedTransaction | None:
    """The accepted transaction with this partner id, preferring `endpoints` in the order given."""
    stmt = select(
        Transaction.id, Transaction.endpoint, Transaction.collector_number, Transaction.fingerprint
    ).where(
        Transaction.sponsor_code == sponsor_code,
        Transaction.endpoint.in_(endpoints),
        Transaction.partner_transaction_id == partner_transaction_id,
        Transaction.status != "rejected",
    )
    if lock:
        stmt = stmt.with_for_update()
    rows = session.execute(stmt).all()
    if not rows:
        return None
    best = min(rows, key=lambda r: endpoints.index(r.endpoint))
    return AcceptedTransaction(best.id, best.endpoint, best.collector_number, best.fingerprint)


def original_totals(session: Session, original_id: str) -> OriginalTotals:
    issued: dict[str, int] = defaultdict(int)
    pending: set[str] = set()
    for offer_code, status, miles in session.execute(
        select(IssuanceLine.offer_code, IssuanceLine.status, IssuanceLine.miles).where(
            IssuanceLine.transaction_id == original_id,
            IssuanceLine.direction == "credit",
            IssuanceLine.status != "rejected",
        )
    ):
        issued[offer_code] += miles
        if status == "pending":
            pending.add(offer_code)
    reversal = aliased(Transaction)
    reversed_rows = session.execute(
        select(IssuanceLine.offer_code, func.sum(IssuanceLine.miles))
        .join(reversal, reversal.id == IssuanceLine.transaction_id)
        .where(reversal.original_transaction_id == original_id, IssuanceLine.status != "rejected")
        .group_by(IssuanceLine.offer_code)
    ).all()
    return OriginalTotals(
        dict(issued), frozenset(pending), {code: int(m) for code, m in reversed_rows}
    )


def insert_transaction(session: Session, values: dict[str, object]) -> None:
    session.execute(insert(Transaction).values(**values))


def insert_lines(session: Session, rows: list[dict[str, object]]) -> None:
    if rows:
        session.execute(insert(IssuanceLine), rows)


def get_transaction_state(
    session: Session, transaction_id: str
) -> tuple[str, list[tuple[str, str | None]]]:
    """(stored response JSON, [(line status, line error code)] in line order)."""
    response_json = session.execute(
        select(Transaction.response_json).where(Transaction.id == transaction_id)
    ).scalar_one()
    lines = session.execute(
        select(IssuanceLine.status, IssuanceLine.error_code)
        .where(IssuanceLine.transaction_id == transaction_id)
        .order_by(IssuanceLine.line_no)
    ).all()
    return response_json, [(s, e) for s, e in lines]
