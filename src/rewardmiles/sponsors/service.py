"""Operator actions on sponsors and their locations (offers: `offers.service`). Callers pass the
unit of work; the rows are read by `sponsors.repository`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from rewardmiles import limits
from rewardmiles.db.models import Location, Offer, Sponsor
from rewardmiles.errors import AlreadyExistsError, MissingError, OperatorError
from rewardmiles.sponsors import repository

STANDARD_OFFER = "STANDARD"


class SponsorError(OperatorError):
    pass


class SponsorExistsError(SponsorError, AlreadyExistsError):
    pass


class MissingSponsorError(SponsorError, MissingError):
    pass


def add_sponsor(session: Session, code: str, name: str, now: datetime) -> Sponsor:
    """A new active sponsor, with its `STANDARD` offer (SPEC §2.3: every sponsor has one)."""
    if not re.match(limits.sponsor_code_pattern, code):
        raise SponsorError(
            f"sponsor code must be {limits.sponsor_code_chars_min}–{limits.sponsor_code_chars_max}"
            " uppercase letters or digits",
            field="code",
        )
    if not name.strip():
        raise SponsorError("sponsor name must not be empty", field="name")
    if repository.sponsor(session, code) is not None:
        raise SponsorExistsError(f"sponsor {code} already exists", field="code")
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
    if repository.sponsor(session, sponsor_code) is None:
        raise MissingSponsorError(f"sponsor {sponsor_code} does not exist")
    if not re.match(limits.location_code_pattern, code):
        raise SponsorError(
            f"location code must be 1–{limits.location_code_chars_max} printable ASCII characters"
            " without spaces",
            field="code",
        )
    if repository.location(session, sponsor_code, code) is not None:
        raise SponsorExistsError(
            f"location {code} already exists for sponsor {sponsor_code}", field="code"
        )
    location = Location(sponsor_code=sponsor_code, code=code, created_at=now)
    session.add(location)
    return location


def sponsor_state(sponsor: Sponsor) -> dict[str, Any]:
    """A sponsor as the admin API shows it and the audit log records it."""
    return {
        "code": sponsor.code,
        "name": sponsor.name,
        "active": sponsor.active,
        "reviewThresholdMiles": sponsor.review_threshold_miles,
    }


def list_sponsors(session: Session, after: str | None, limit: int) -> Sequence[Sponsor]:
    return repository.sponsors_after(session, after, limit)


def list_locations(
    session: Session, sponsor_code: str, after: str | None, limit: int
) -> Sequence[Location]:
    if repository.sponsor(session, sponsor_code) is None:
        raise MissingSponsorError(f"sponsor {sponsor_code} does not exist")
    return repository.locations_after(session, sponsor_code, after, limit)


def sponsor_to_change(session: Session, code: str) -> Sponsor:
    """The sponsor, its row locked for a change in this unit of work."""
    sponsor = repository.locked_sponsor(session, code)
    if sponsor is None:
        raise MissingSponsorError(f"sponsor {code} does not exist")
    return sponsor


def set_sponsor(
    session: Session,
    code: str,
    *,
    review_threshold_miles: int | None = None,
    clear_review_threshold: bool = False,
    active: bool | None = None,
) -> Sponsor:
    sponsor = repository.locked_sponsor(session, code)
    if sponsor is None:
        raise MissingSponsorError(f"sponsor {code} does not exist")
    if review_threshold_miles is not None:
        if review_threshold_miles < 1:
            raise SponsorError(
                "the review threshold must be at least 1 mile", field="reviewThresholdMiles"
            )
        sponsor.review_threshold_miles = review_threshold_miles
    if clear_review_threshold:
        sponsor.review_threshold_miles = None
    if active is not None:
        sponsor.active = active
    session.flush()
    return sponsor
