"""Listing partner clients by sponsor: the filter is in the query, before the page's limit, so
a sponsor's clients are all found however many other clients come first."""

from __future__ import annotations

from rewardmiles.auth import service as clients
from rewardmiles.db.engine import Database
from tests.support import data


def test_a_sponsors_clients_are_found_past_other_sponsors_clients(db: Database) -> None:
    first, second = data.new_sponsor(db), data.new_sponsor(db)
    others = sorted(data.new_client(db, [first])[0] for _ in range(3))
    own = data.new_client(db, [second])[0]
    both = data.new_client(db, [first, second])[0]
    with db.reader() as session:
        listed = clients.list_clients(session, None, 10_000, second)
        assert [r.client_id for r in listed] == sorted([own, both])
        assert all(second in r.sponsor_codes for r in listed)
        one = clients.list_clients(session, None, 1, second)
        assert [r.client_id for r in one] == sorted([own, both])[:1]
        everyone = [r.client_id for r in clients.list_clients(session, None, 10_000)]
        assert set(others) | {own, both} <= set(everyone)
