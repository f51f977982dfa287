"""Sponsors, offers and locations are cached per API process, yet a change made behind the API's
back (CLI, SQL, another process) applies to the very next request: the cache is tagged with the
`reference_version` counter that triggers bump on every change."""

from __future__ import annotations

from sqlalchemy import update

from rewardmiles.db.models import Offer, Sponsor
from rewardmiles.issuance.reference import ReferenceCache
from rewardmiles.sponsors import service as sponsors
from tests.e2e.conftest import World
from tests.support import data
from tests.support.problems import assert_problem


def _set(world: World, statement: object) -> None:
    with world.db.unit_of_work() as session:
        session.execute(statement)  # type: ignore[call-overload]


def test_offer_changes_apply_to_the_next_request(world: World) -> None:
    sponsor = data.new_sponsor(world.db)
    partner = world.new_partner(sponsor)
    collector = world.collector()
    try:
        assert partner.post_event(data.event_body(sponsor, collector)).status_code == 200  # cached

        _set(world, update(Offer).where(Offer.sponsor_code == sponsor).values(active=False))
        refused = partner.post_event(data.event_body(sponsor, collector))
        assert_problem(refused, 400, "OFFER_INACTIVE", "issuances[0].issuanceOfferCode")

        _set(world, update(Offer).where(Offer.sponsor_code == sponsor).values(active=True))
        assert partner.post_event(data.event_body(sponsor, collector)).status_code == 200
    finally:
        partner.close()


def test_sponsor_and_location_changes_apply_to_the_next_request(world: World) -> None:
    sponsor = data.new_sponsor(world.db)
    partner = world.new_partner(sponsor)
    collector = world.collector()
    lines = [{"issuanceOfferCode": "STANDARD", "milesAmount": 4, "locationCode": "0042"}]
    try:
        # No location registered: any locationCode is accepted (and now cached as such).
        assert (
            partner.post_event(data.event_body(sponsor, collector, issuances=lines)).status_code
            == 200
        )

        with world.db.unit_of_work() as session:
            sponsors.add_location(session, sponsor, "0001", data.now())
        refused = partner.post_event(data.event_body(sponsor, collector, issuances=lines))
        assert_problem(refused, 400, "LOCATION_UNKNOWN", "issuances[0].locationCode")

        with world.db.unit_of_work() as session:
            sponsors.add_location(session, sponsor, "0042", data.now())
        assert (
            partner.post_event(data.event_body(sponsor, collector, issuances=lines)).status_code
            == 200
        )

        _set(world, update(Sponsor).where(Sponsor.code == sponsor).values(active=False))
        refused = partner.post_event(data.event_body(sponsor, collector))
        assert_problem(refused, 400, "SPONSOR_INACTIVE", "sponsorCode")
    finally:
        partner.close()


def test_a_cache_never_mixes_versions() -> None:
    cache = ReferenceCache()
    current = cache.entries(5)
    current["S"] = "five"  # type: ignore[assignment]
    assert cache.entries(5) is current
    assert cache.entries(4) == {}  # an older snapshot gets an uncached, empty view
    assert cache.entries(4) is not cache.entries(4)
    newer = cache.entries(6)
    assert newer == {}
    assert newer is not current
    assert cache.entries(5) == {}  # once 6 is seen, 5 is old
