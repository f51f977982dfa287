"""Demo data for `rewardmiles serve --demo`: one sponsor, a few collectors, a known client.

The demo client's credentials are fixed and public so the README's walk-through works verbatim;
never use `--demo` against a production database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from rewardmiles.auth import service as auth
from rewardmiles.collectors import service as collectors
from rewardmiles.db.models import Location, PartnerClient, Sponsor
from rewardmiles.offers import service as offers
from rewardmiles.operators import passwords
from rewardmiles.operators import repository as operators_repository
from rewardmiles.operators import service as operators
from rewardmiles.operators.service import Actor
from rewardmiles.sponsors import service as sponsors
from rewardmiles.vocabulary import CollectorStatus, OperatorRole

SPONSOR = "KENY"
LOCATION = "0037"
CLIENT_ID = "demo-keny"
CLIENT_SECRET = "demo-keny-secret"
# The console's demo operator: an admin, public credentials like the demo client's.
OPERATOR_EMAIL = "admin@demo.example"
OPERATOR_PASSWORD = "demo-admin-password"
OPERATOR_ACTOR = Actor("demo@seed")
COLLECTORS = {
    "80085102028": CollectorStatus.ACTIVE,
    "80085102036": CollectorStatus.ACTIVE,
    "80085102044": CollectorStatus.ACTIVE,
    "80085102051": CollectorStatus.ON_HOLD,
    "80085102069": CollectorStatus.CLOSED,
}


# Program-calculated demo: 1 mile per $10 on everything, 5 miles per produce item from 2 items.
DEMO_OFFERS = [
    {
        "sponsorCode": SPONSOR,
        "code": "STANDARD",
        "description": "1 mile per $10",
        "rule": {"type": "base", "miles": 1, "perDollars": 10},
    },
    {
        "sponsorCode": SPONSOR,
        "code": "PRODUCE",
        "description": "5 miles per produce item (2 or more)",
        "offerId": "501",
        "rule": {"type": "item", "departments": ["produce"], "milesPerUnit": 5, "minQuantity": 2},
    },
]


@dataclass(frozen=True)
class DemoData:
    client_id: str
    client_secret: str
    sponsor_code: str
    collectors: dict[str, str]
    operator_email: str
    operator_password: str


def seed(
    session: Session,
    now: datetime,
    *,
    secret_hash_cost: int,
    password_cost: passwords.HashCost,
) -> DemoData:
    """Idempotent: running it again leaves existing demo rows as they are, and reports them as
    they are (a collector's status may have changed since)."""
    if session.get(Sponsor, SPONSOR) is None:
        sponsors.add_sponsor(session, SPONSOR, "Kenny's Demo Market", now)
        session.flush()
    if session.get(Location, (SPONSOR, LOCATION)) is None:
        sponsors.add_location(session, SPONSOR, LOCATION, now)
    for number, status in COLLECTORS.items():
        if collectors.get_collector(session, number) is None:
            collectors.add_collector(session, number, status, now)
    if not any(o.rule for o in offers.list_offers(session, SPONSOR)):
        offers.import_offers(session, DEMO_OFFERS, now)
    if session.get(PartnerClient, CLIENT_ID) is None:
        session.flush()
        auth.create_client(
            session,
            [SPONSOR],
            now,
            secret_hash_cost=secret_hash_cost,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
        )
    if operators_repository.operator_by_email(session, OPERATOR_EMAIL) is None:
        operators.add_operator(
            session,
            OPERATOR_EMAIL,
            OperatorRole.ADMIN,
            passwords.hash_password(OPERATOR_PASSWORD, password_cost),
            now,
            OPERATOR_ACTOR,
            display_name="Demo admin",
        )
    # What the database holds now: an operator may have changed a status since the first seed.
    session.flush()
    statuses = {}
    for number in COLLECTORS:
        view = collectors.get_collector(session, number)
        assert view is not None
        statuses[number] = view.status
    return DemoData(CLIENT_ID, CLIENT_SECRET, SPONSOR, statuses, OPERATOR_EMAIL, OPERATOR_PASSWORD)
