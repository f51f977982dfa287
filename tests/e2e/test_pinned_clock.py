"""The date-sensitive rules at pinned instants: a server whose clock stands at 23:59:59 and at
00:00:01 America/Toronto, and at 02:00 UTC (the Toronto evening before), through the test setting
REWARDMILES_TEST_CLOCK. Whatever the hour the suite runs, these moments are the ones where a
Transaction Day or an offer date taken in UTC instead of the program time zone, or "today" taken
from the wrong clock, gives another answer."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from rewardmiles import clock
from rewardmiles.config import TEST_CLOCK_PREFIX
from rewardmiles.db.engine import Database
from rewardmiles.db.models import Offer
from rewardmiles.reports import reconciliation
from tests.conftest import ServerFactory
from tests.support import data
from tests.support.partner import Partner
from tests.support.problems import assert_problem
from tests.support.server import Server

TORONTO = "America/Toronto"
AUDIT = "/checkout/issuance/reports/audit"
RECON = "/checkout/issuance/reports/reconciliation"
PINNED = {
    "toronto-23:59:59": "2026-12-15T23:59:59-05:00",
    "toronto-00:00:01": "2026-12-16T00:00:01-05:00",
    "utc-02:00": "2026-12-16T02:00:00Z",
}
# The Transaction Day of each, written out rather than computed by the code under test.
TORONTO_DAY = {
    "toronto-23:59:59": date(2026, 12, 15),
    "toronto-00:00:01": date(2026, 12, 16),
    "utc-02:00": date(2026, 12, 15),
}


@dataclass
class Pinned:
    server: Server
    db: Database
    moment: datetime  # where the server's clock stands, UTC
    day: date  # the server's Transaction Day
    sponsor: str
    partner: Partner

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.partner.http.get(
            path, params=params, headers={"Authorization": f"Bearer {self.partner.token}"}
        )

    def audit_ids(self, day: date) -> set[str]:
        response = self.get(AUDIT, date=day.isoformat())
        assert response.status_code == 200, response.text
        return {t["partnerTransactionId"] for t in response.json()["transactions"]}

    def event(self, collector: str, at: datetime, **overrides: Any) -> dict[str, Any]:
        return data.event_body(
            self.sponsor, collector, transactionDateTime=data.iso(at), **overrides
        )


@pytest.fixture(scope="module", params=list(PINNED), ids=list(PINNED))
def pinned(
    request: pytest.FixtureRequest, dialect: str, server_factory: ServerFactory
) -> Iterator[Pinned]:
    text = PINNED[request.param]
    server = server_factory(dialect, env={"REWARDMILES_TEST_CLOCK": TEST_CLOCK_PREFIX + text})
    db = Database.from_url(server.database_url)
    sponsor = data.new_sponsor(db)
    client_id, secret = data.new_client(db, [sponsor])
    partner = Partner(server.base_url, client_id, secret)
    moment = datetime.fromisoformat(text).astimezone(UTC)
    yield Pinned(server, db, moment, TORONTO_DAY[request.param], sponsor, partner)
    partner.close()
    db.dispose()


def test_the_server_processes_at_the_pinned_instant(pinned: Pinned) -> None:
    collector = data.new_collector(pinned.db)
    response = pinned.partner.post_event(
        pinned.event(collector, pinned.moment - timedelta(seconds=5))
    )
    assert response.status_code == 200, response.text
    assert response.json()["transactionDateTime"] == clock.program_timestamp(pinned.moment, TORONTO)
    assert data.processed_day(response.json()) == pinned.day.isoformat()
    assert data.balance(pinned.db, collector) == 8


def test_an_issue_is_reported_on_the_toronto_day_it_was_processed(pinned: Pinned) -> None:
    collector = data.new_collector(pinned.db)
    at = pinned.moment - timedelta(seconds=5)  # at 00:00:01 this is the evening before
    body = pinned.event(collector, at, miles=13)
    posted = pinned.partner.post_event(body)
    assert posted.status_code == 200, posted.text
    transaction_id = posted.json()["transactionId"]
    utc_day = pinned.moment.date()

    assert body["clientTransactionId"] in pinned.audit_ids(pinned.day)
    for other in {utc_day, clock.transaction_day_of(at, TORONTO)} - {pinned.day}:
        assert body["clientTransactionId"] not in pinned.audit_ids(other)
    for neighbour in (pinned.day - timedelta(days=1), pinned.day + timedelta(days=1)):
        assert body["clientTransactionId"] not in pinned.audit_ids(neighbour)

    recon = pinned.get(RECON, date=pinned.day.isoformat())
    assert recon.status_code == 200, recon.text
    parsed = reconciliation.parse(recon.text)
    assert (parsed.day, parsed.time_zone) == (pinned.day, TORONTO)
    assert [d.miles for d in parsed.details if d.transaction_id == transaction_id] == [13]


def test_offer_validity_is_the_toronto_date_of_the_transaction(pinned: Pinned) -> None:
    at = pinned.moment - timedelta(seconds=5)
    toronto_date = at.astimezone(ZoneInfo(TORONTO)).date()
    utc_date = at.astimezone(UTC).date()
    assert toronto_date != utc_date  # each pinned instant is a Toronto evening or midnight
    local_code, utc_code = "L" + secrets.token_hex(3).upper(), "U" + secrets.token_hex(3).upper()
    with pinned.db.unit_of_work() as session:
        for code, day in ((local_code, toronto_date), (utc_code, utc_date)):
            session.add(
                Offer(
                    sponsor_code=pinned.sponsor,
                    code=code,
                    description=f"Valid on {day}",
                    active=True,
                    valid_from=day,
                    valid_to=day,
                    created_at=data.now(),
                )
            )
    collector = data.new_collector(pinned.db)

    def line(code: str) -> list[dict[str, Any]]:
        return [{"issuanceOfferCode": code, "milesAmount": 7}]

    accepted = pinned.partner.post_event(pinned.event(collector, at, issuances=line(local_code)))
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["issuances"][0]["status"] == "ISSUED"
    refused = pinned.partner.post_event(pinned.event(collector, at, issuances=line(utc_code)))
    assert_problem(refused, 400, "OFFER_INACTIVE", "issuances[0].issuanceOfferCode")
    assert data.balance(pinned.db, collector) == 7


def test_the_backdate_window_and_future_skew_run_from_the_server_clock(pinned: Pinned) -> None:
    collector = data.new_collector(pinned.db)
    oldest = pinned.moment - timedelta(days=30)
    latest = pinned.moment + timedelta(minutes=5)
    for at in (oldest, latest):
        response = pinned.partner.post_event(pinned.event(collector, at, miles=2))
        assert response.status_code == 200, (at, response.text)
    for at in (oldest - timedelta(seconds=1), latest + timedelta(seconds=1)):
        response = pinned.partner.post_event(pinned.event(collector, at, miles=50))
        assert_problem(response, 400, "DATE_OUT_OF_RANGE", "transactionDateTime")
    assert data.balance(pinned.db, collector) == 4
