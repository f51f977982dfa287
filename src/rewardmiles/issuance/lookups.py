"""The transaction lookup (SPEC §5): an accepted transaction as its response stands now."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy.orm import Session

from rewardmiles.issuance import keyed
from rewardmiles.issuance import repository as repo
from rewardmiles.issuance.calls import RULES, WIRE_NAMES
from rewardmiles.vocabulary import Direction, Endpoint, IssuanceStatus


def lookup(
    session: Session, transaction_id: str, sponsor_codes: Collection[str]
) -> dict[str, Any] | None:
    """An accepted transaction of one of `sponsor_codes`, as its response stands now, with the
    endpoint that took it and, on issued lines, the miles reversed so far."""
    found = repo.get_accepted_by_id(session, transaction_id)
    if found is None or found.sponsor_code not in sponsor_codes:
        return None
    return _lookup_view(session, found)


def lookup_by_partner_id(
    session: Session,
    sponsor_code: str,
    partner_transaction_id: str,
    endpoints: Collection[Endpoint],
) -> list[dict[str, Any]]:
    rows = repo.find_accepted_all(
        session, sponsor_code, [e.value for e in endpoints], partner_transaction_id
    )
    return [_lookup_view(session, row) for row in rows]


def _lookup_view(session: Session, found: repo.AcceptedTransaction) -> dict[str, Any]:
    outcome = keyed.render_current(session, found.id, replayed=False)
    body = dict(outcome.body)
    body["transactionType"] = WIRE_NAMES[found.endpoint]
    if RULES[Endpoint(found.endpoint)].direction == Direction.CREDIT:
        reversed_left = dict(repo.original_totals(session, found.id).reversed_miles)
        for line in body.get("issuances", ()):
            if line.get("status") != IssuanceStatus.ISSUED:
                continue
            code = line["issuanceOfferCode"]
            share = min(line["milesAmount"], reversed_left.get(code, 0))
            line["milesReversed"] = share
            reversed_left[code] = reversed_left.get(code, 0) - share
    return body
