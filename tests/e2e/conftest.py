from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from rewardmiles.db.engine import Database
from tests.support import data
from tests.support.partner import Partner
from tests.support.server import Server


@dataclass
class World:
    """A server, direct database access for setup/inspection, and one sponsor with its partner."""

    server: Server
    db: Database
    sponsor: str
    partner: Partner

    def collector(self, status: str = "ACTIVE") -> str:
        return data.new_collector(self.db, status)

    def balance(self, number: str) -> int:
        return data.balance(self.db, number)

    def body(self, collector: str, *, miles: int = 8, **overrides: object) -> dict[str, object]:
        return data.event_body(self.sponsor, collector, miles=miles, **overrides)

    def new_partner(self, *sponsors: str) -> Partner:
        client_id, secret = data.new_client(self.db, list(sponsors))
        return Partner(self.server.base_url, client_id, secret)


@pytest.fixture(scope="session")
def world(server: Server, db: Database) -> Iterator[World]:
    sponsor = data.new_sponsor(db)
    client_id, secret = data.new_client(db, [sponsor])
    partner = Partner(server.base_url, client_id, secret)
    yield World(server, db, sponsor, partner)
    partner.close()
