"""Queries of sponsors and their locations. No rules here: `sponsors.service` decides."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from rewardmiles.db.models import Location, Sponsor


def sponsor(session: Session, code: str) -> Sponsor | None:
    return session.get(Sponsor, code)


def locked_sponsor(session: Session, code: str) -> Sponsor | None:
    """The sponsor, its row locked until the unit of work ends; None when there is none."""
    return session.get(Sponsor, code, with_for_update=True)


def location(session: Session, sponsor_code: str, code: str) -> Location | None:
    return session.get(Location, (sponsor_code, code))


def sponsors_after(session: Session, after: str | None, limit: int) -> Sequence[Sponsor]:
    """Up to `limit` sponsors by code, after the code `after` (a page through the primary key)."""
    stmt = select(Sponsor).order_by(Sponsor.code).limit(limit)
    if after is not None:
        stmt = stmt.where(Sponsor.code > after)
    return session.scalars(stmt).all()


def locations_after(
    session: Session, sponsor_code: str, after: str | None, limit: int
) -> Sequence[Location]:
    """Up to `limit` of the sponsor's locations by code, after the code `after`."""
    stmt = (
        select(Location)
        .where(Location.sponsor_code == sponsor_code)
        .order_by(Location.code)
        .limit(limit)
    )
    if after is not None:
        stmt = stmt.where(Location.code > after)
    return session.scalars(stmt).all()
