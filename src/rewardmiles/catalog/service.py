"""Operator actions on sponsors, offers and locations. Callers pass the unit of work."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy.orm import Session

from rewardmiles.db.models import Location, Offer, Sponsor
from rewardmiles.errors import OperatorError

SPONSOR_CODE = re.compile(r"^[A-Z0-9]{2,10}$")
OFFER_CODE = re.compile(r"^[A-Z0-9]{1,8}$")
LOCATION_CODE = re.compile(r"^[!-~]{1,10}$")
STANDARD_OFFER = "STANDARD"


class CatalogError(OperatorError):
    pass


def add_sponsor(session: Session, code: str, name: str, now: datetime) -> Sponsor:
    """A new active sponsor, with its `STANDARD` offer (SPEC §2.3: every sponsor has one)."""
    if not SPONSOR_CODE.match(code):
        raise CatalogError("sponsor code must be 2–10 uppercase letters or digits")
    if not name.strip():
        raise CatalogError("sponsor name must not be empty")
    if session.get(Sponsor, code) is not None:
        raise CatalogError(f"sponsor {code} already exists")
    sponsor = Sponsor(
        code=code, name=name.strip(), active=True, review_threshold_miles=None, created_at=now
    )
    session.add(sponsor)
    session.flush()
    session.add(
        Offer(
            sponsor_code=code,
            code=STANDARD_OFFER,
            description="Standard earn",
            active=True,
            valid_from=None,
            valid_to=None,
            created_at=now,
        )
    )
    return sponsor


def add_location(session: Session, sponsor_code: str, code: str, now: datetime) -> Location:
    if session.get(Sponsor, sponsor_code) is None:
        raise CatalogError(f"sponsor {sponsor_code} does not exist")
    if not LOCATION_CODE.match(code):
        raise CatalogError("location code must be 1–10 printable ASCII characters without spaces")
    if session.get(Location, (sponsor_code, code)) is not None:
        raise CatalogError(f"location {code} already exists for sponsor {sponsor_code}")
    location = Location(sponsor_code=sponsor_code, code=code, created_at=now)
    session.add(location)
    return location


def set_sponsor(
    session: Session,
    code: str,
    *,
    review_threshold_miles: int | None = None,
    clear_review_threshold: bool = False,
    active: bool | None = None,
) -> Sponsor:
    sponsor = session.get(Sponsor, code, with_for_update=True)
    if sponsor is None:
        raise CatalogError(f"sponsor {code} does not exist")
    if review_threshold_miles is not None:
        if review_threshold_miles < 1:
            raise CatalogError("the review threshold must be at least 1 mile")
        sponsor.review_threshold_miles = review_threshold_miles
    if clear_review_threshold:
        sponsor.review_threshold_miles = None
    if active is not None:
        sponsor.active = active
    session.flush()
    return sponsor
