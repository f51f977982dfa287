"""Queries of sponsors and their locations. No rules here: `sponsors.service` decides."""

from __future__ import annotations

from sqlalchemy.orm import Session

from rewardmiles.db.models import Location, Sponsor


def sponsor(session: Session, code: str) -> Sponsor | None:
    return session.get(Sponsor, code)


def locked_sponsor(session: Session, code: str) -> Sponsor | None:
    """The sponsor, its row locked until the unit of work ends; None when there is none."""
    return session.get(Sponsor, code, with_for_update=True)


def location(session: Session, sponsor_code: str, code: str) -> Location | None:
    return session.get(Location, (sponsor_code, code))
