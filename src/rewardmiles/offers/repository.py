"""Queries of offers. No rules here: `offers.service` (operator actions) and `offers.applicable`
(the offers that apply to a transaction) decide.

Offers are returned as their mapped rows (`db.models.Offer`): the callers read them once, and
`offers.service` sets an offer's fields on the row it locked.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from rewardmiles.db.models import Offer, Sponsor


def sponsor_exists(session: Session, sponsor_code: str) -> bool:
    return session.get(Sponsor, sponsor_code) is not None


def locked_offer(session: Session, sponsor_code: str, code: str) -> Offer | None:
    """The offer, its row locked until the unit of work ends; None when there is none."""
    return session.get(Offer, (sponsor_code, code), with_for_update=True)


def new_offer(session: Session, sponsor_code: str, code: str, created_at: datetime) -> Offer:
    """An offer row added to the session; the caller sets its fields."""
    offer = Offer(sponsor_code=sponsor_code, code=code, created_at=created_at)
    session.add(offer)
    return offer


def offers(session: Session, sponsor_code: str | None = None) -> Sequence[Offer]:
    """Every offer (of `sponsor_code` when given), by sponsor and code."""
    stmt = select(Offer).order_by(Offer.sponsor_code, Offer.code)
    if sponsor_code:
        stmt = stmt.where(Offer.sponsor_code == sponsor_code)
    return session.scalars(stmt).all()


def offers_after(
    session: Session, sponsor_code: str | None, after: tuple[str, str] | None, limit: int
) -> Sequence[Offer]:
    """Up to `limit` offers (of `sponsor_code` when given) by sponsor and code, after the
    (sponsor, code) `after`: a page through the primary key."""
    stmt = select(Offer).order_by(Offer.sponsor_code, Offer.code).limit(limit)
    if sponsor_code:
        stmt = stmt.where(Offer.sponsor_code == sponsor_code)
    if after is not None:
        stmt = stmt.where(tuple_(Offer.sponsor_code, Offer.code) > tuple_(*after))
    return session.scalars(stmt).all()


def active_rule_offers(session: Session, sponsor_code: str) -> Sequence[Offer]:
    """The sponsor's active offers that have a rule, whatever their dates and locations."""
    return session.scalars(
        select(Offer).where(
            Offer.sponsor_code == sponsor_code, Offer.active.is_(True), Offer.rule_json.is_not(None)
        )
    ).all()
