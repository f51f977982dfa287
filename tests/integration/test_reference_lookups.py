"""The issue path's reference lookups (offers, locations) give the database's answer with and
without the per-process cache, and when a request names more unknown codes than the cache keeps
(`limits.reference_cached_codes_max` per sponsor), without growing it past that bound."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rewardmiles import limits
from rewardmiles.db.engine import Database
from rewardmiles.idempotency import repository as keys
from rewardmiles.issuance import reference
from rewardmiles.sponsors import service as sponsors
from tests.conftest import DatabaseFactory
from tests.support import data


@pytest.fixture
def own_db(dialect: str, database_factory: DatabaseFactory) -> Iterator[Database]:
    """A database (and engine) of the test's own: its reference cache starts empty."""
    database = Database.from_url(database_factory.create(dialect))
    yield database
    database.dispose()


def test_lookups_without_the_cache_read_the_database(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db)
    with own_db.unit_of_work() as session:
        offers = reference.get_offers(session, sponsor, ["STANDARD", "NOPE"])
        assert list(offers) == ["STANDARD"]
        assert offers["STANDARD"].active
        assert reference.registered_locations(session, sponsor, ["0001"]) == (False, set())
    with own_db.unit_of_work() as session:
        sponsors.add_location(session, sponsor, "0001", data.now())
    with own_db.unit_of_work() as session:
        assert reference.registered_locations(session, sponsor, ["0001", "0002"]) == (
            True,
            {"0001"},
        )
        assert reference.registered_locations(session, sponsor, ["0002"]) == (True, set())


def test_more_unknown_codes_than_the_cache_keeps_are_answered_uncached(
    own_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "reference_cached_codes_max", 2)
    sponsor = data.new_sponsor(own_db, locations=["0001"])
    with own_db.unit_of_work() as session:
        reference.use_reference_cache(session, keys.reference_version(session))
        # No code asked yet: whether the sponsor registers any location is read on its own.
        assert reference.registered_locations(session, sponsor, []) == (True, set())

        offers = reference.get_offers(session, sponsor, ["STANDARD", "A", "B"])
        assert list(offers) == ["STANDARD"]
        assert reference.registered_locations(session, sponsor, ["0001", "X", "Y"]) == (
            True,
            {"0001"},
        )

        # Within the bound the codes are cached, and the answers stay the database's.
        assert list(reference.get_offers(session, sponsor, ["STANDARD", "A"])) == ["STANDARD"]
        assert reference.registered_locations(session, sponsor, ["0001", "X"]) == (True, {"0001"})
        assert list(reference.get_offers(session, sponsor, ["STANDARD", "A"])) == ["STANDARD"]
        assert reference.registered_locations(session, sponsor, ["0001", "X"]) == (True, {"0001"})

    entry = reference.newest_reference(own_db.engine)[1][sponsor]
    assert len(entry.offers) <= 2
    assert len(entry.locations) <= 2
