"""Test data written straight through the services (the same code the CLI uses)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import update

from rewardmiles.auth import service as auth
from rewardmiles.collectors import service as collectors
from rewardmiles.db.engine import Database
from rewardmiles.db.models import Sponsor
from rewardmiles.sponsors import service as sponsors

HASH_COST = 10


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


PROGRAM_ZONE = ZoneInfo("America/Toronto")  # the default REWARDMILES_PROGRAM_TIME_ZONE


def toronto_evening(before: datetime | None = None) -> datetime:
    """The latest 22:30 America/Toronto before `before` (default: now), in UTC: a moment whose
    UTC date is the day after its Transaction Day, at any hour the suite runs. A transaction
    dated then catches a date taken in UTC instead of the program time zone."""
    local = (before or now()).astimezone(PROGRAM_ZONE)
    evening = datetime.combine(local.date(), time(22, 30), tzinfo=PROGRAM_ZONE)
    if evening >= local:
        evening = datetime.combine(
            local.date() - timedelta(days=1), time(22, 30), tzinfo=PROGRAM_ZONE
        )
    moment = evening.astimezone(UTC)
    assert moment.date() != evening.date()
    return moment


def processed_day(response_body: dict[str, Any]) -> str:
    """The Transaction Day of a posted transaction, from its own processed time (the response's
    `transactionDateTime`, in the program time zone): never "today" taken after the fact."""
    moment = datetime.fromisoformat(str(response_body["transactionDateTime"]))
    return moment.astimezone(PROGRAM_ZONE).date().isoformat()


def new_sponsor(
    db: Database,
    *,
    locations: list[str] | None = None,
    review_threshold_miles: int | None = None,
    active: bool = True,
) -> str:
    code = "S" + secrets.token_hex(4).upper()
    with db.unit_of_work() as session:
        sponsors.add_sponsor(session, code, f"Sponsor {code}", now())
        session.flush()
        for location in locations or []:
            sponsors.add_location(session, code, location, now())
        if review_threshold_miles is not None or not active:
            session.execute(
                update(Sponsor)
                .where(Sponsor.code == code)
                .values(review_threshold_miles=review_threshold_miles, active=active)
            )
    return code


def new_client(db: Database, sponsors: list[str]) -> tuple[str, str]:
    with db.unit_of_work() as session:
        client = auth.create_client(session, sponsors, now(), secret_hash_cost=HASH_COST)
    return client.client_id, client.client_secret


def new_collector(db: Database, status: str = "ACTIVE") -> str:
    number = "7" + "".join(secrets.choice("0123456789") for _ in range(10))
    with db.unit_of_work() as session:
        collectors.add_collector(session, number, status, now())
    return number


def new_partner(db: Database) -> tuple[str, str, str, str]:
    """A new sponsor, a client acting for it (its id and secret) and an active collector."""
    sponsor = new_sponsor(db)
    client_id, secret = new_client(db, [sponsor])
    return sponsor, client_id, secret, new_collector(db)


def unknown_collector() -> str:
    return "6" + "".join(secrets.choice("0123456789") for _ in range(10))


def balance(db: Database, number: str) -> int:
    with db.reader() as session:
        view = collectors.get_collector(session, number)
    assert view is not None
    return view.balance_miles


def txn_id(prefix: str = "t") -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def event_body(sponsor: str, collector: str, *, miles: int = 8, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "clientTransactionId": txn_id(),
        "collectorNumber": collector,
        "sponsorCode": sponsor,
        "transactionDateTime": iso(now() - timedelta(seconds=5)),
        "issuances": [{"issuanceOfferCode": "STANDARD", "milesAmount": miles}],
    }
    body.update(overrides)
    return body


def text_field(body: Mapping[str, object], key: str) -> str:
    """A body's text value (an id the helpers generated), checked to be one: bodies are built
    untyped so that tests can put anything in them."""
    value = body[key]
    assert isinstance(value, str), f"{key}: {value!r} is not a string"
    return value


def basket_body(
    sponsor: str, collector: str, *, miles: int = 8, amount: float = 24.97, **overrides: Any
) -> dict[str, Any]:
    """A POST/REVERSE/RECORD basket body: one STANDARD line, no taxes, pre-tax = post-tax."""
    body: dict[str, Any] = {
        "checkoutTransactionId": txn_id("b"),
        "collectorNumber": collector,
        "sponsorCode": sponsor,
        "checkoutDateTime": iso(now() - timedelta(seconds=5)),
        "basketPreTaxAmount": amount,
        "basketPostTaxAmount": amount,
        "issuances": [{"issuanceOfferCode": "STANDARD", "milesAmount": miles}],
    }
    body.update(overrides)
    return body
