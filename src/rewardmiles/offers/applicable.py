"""The offers that apply to a program-calculated transaction, and the snapshot an ISSUE stores.

Program-calculated issuance uses the offers that have a rule, are active and valid on the
transaction's date (program time zone), and apply at its location. An ISSUE stores a snapshot of
those offers, so its RETURN is computed with the rules as they applied then. The rows are read by
`offers.repository`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from sqlalchemy.orm import Session

from rewardmiles.offers import engine, repository
from rewardmiles.offers.rules import dump_rule, parse_rule


def offers(
    session: Session, sponsor_code: str, on_date: date, location_code: str | None
) -> list[engine.Offer]:
    """The sponsor's rule-bearing offers active on `on_date` at `location_code`."""
    found = []
    for o in repository.active_rule_offers(session, sponsor_code):
        if (o.valid_from and on_date < o.valid_from) or (o.valid_to and on_date > o.valid_to):
            continue
        locations = json.loads(o.location_codes_json) if o.location_codes_json else None
        if locations is not None and location_code not in locations:
            continue
        found.append(
            engine.Offer(
                o.code, o.offer_id, o.description, parse_rule(json.loads(o.rule_json or "null"))
            )
        )
    return found


def snapshot(applied: Iterable[engine.Offer]) -> list[dict[str, Any]]:
    """What an ISSUE stores of the offers it applied: what its RETURN computes with."""
    return [
        {
            "code": o.code,
            "offerId": o.offer_id,
            "description": o.description,
            "rule": dump_rule(o.rule),
        }
        for o in applied
    ]


def from_snapshot(documents: Iterable[Mapping[str, Any]]) -> list[engine.Offer]:
    """The offers an ISSUE applied, from what it stored (`snapshot`)."""
    return [
        engine.Offer(d["code"], d["offerId"], d["description"], parse_rule(d["rule"]))
        for d in documents
    ]
