"""Pending work end to end: a real server with its embedded worker, a webhook receiver on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from rewardmiles import clock
from rewardmiles.collectors import service as collectors
from rewardmiles.db.engine import Database
from rewardmiles.webhooks import service as webhooks
from tests.conftest import TEST_BOX, ServerFactory
from tests.support import data
from tests.support.partner import Partner
from tests.support.receiver import receiver
from tests.support.server import Server

ATTEMPTS_MAX = 4
WAIT_SECONDS = 20


@dataclass
class Flow:
    server: Server
    db: Database

    def sponsor_with_partner(self) -> tuple[str, Partner]:
        sponsor = data.new_sponsor(self.db)
        client_id, secret = data.new_client(self.db, [sponsor])
        return sponsor, Partner(self.server.base_url, client_id, secret)

    def hook(self, sponsor: str, url: str) -> str:
        with self.db.unit_of_work() as session:
            _, secret = webhooks.add_webhook(
                session, sponsor, url, clock.utc_now(), TEST_BOX, allow_private_targets=True
            )
        return secret


@pytest.fixture(scope="module")
def flow(dialect: str, server_factory: ServerFactory) -> Iterator[Flow]:
    server = server_factory(
        dialect,
        env={
            "REWARDMILES_WORKER_POLL_SECONDS": "0.2",
            "REWARDMILES_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
            "REWARDMILES_WEBHOOK_ATTEMPTS_MAX": str(ATTEMPTS_MAX),
            "REWARDMILES_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",  # receivers are on 127.0.0.1
        },
    )
    db = Database.from_url(server.database_url)
    yield Flow(server, db)
    db.dispose()


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_unknown_collector_enrolled_settles_and_the_partner_is_notified(flow: Flow) -> None:
    sponsor, partner = flow.sponsor_with_partner()
    number = data.unknown_collector()
    body = data.event_body(sponsor, number, miles=21)
    with receiver() as hook:
        secret = flow.hook(sponsor, hook.url)
        first = partner.post_event(body, key="settle-" + number)
        assert first.status_code == 202
        transaction_id = first.json()["transactionId"]

        with flow.db.unit_of_work() as session:
            collectors.add_collector(session, number, "ACTIVE", clock.utc_now())
        _until(lambda: hook.answered_ok == 1, "the webhook")

        event = hook.received[0]
        assert webhooks.verify_signature(
            secret, event.headers["rewardmiles-signature"], event.body, now=time.time()
        )
        assert not webhooks.verify_signature(
            "whsec_other", event.headers["rewardmiles-signature"], event.body, now=time.time()
        )
        payload = json.loads(event.body)
        assert payload["type"] == "transaction.settled"
        assert payload["eventId"] == event.headers["rewardmiles-event-id"]
        assert payload["data"]["transactionId"] == transaction_id
        assert payload["data"]["issuances"][0]["status"] == "ISSUED"

    assert data.balance(flow.db, number) == 21
    replay = partner.post_event(body, key="settle-" + number)
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["issuances"][0]["status"] == "ISSUED"
    lookup = partner.http.get(
        f"/checkout/issuance/transactions/{transaction_id}",
        headers={"Authorization": f"Bearer {partner.token}"},
    )
    assert lookup.status_code == 200
    assert lookup.json()["issuances"][0]["status"] == "ISSUED"
    partner.close()


def test_receiver_failing_three_times_gets_the_event_once(flow: Flow) -> None:
    sponsor, partner = flow.sponsor_with_partner()
    number = data.new_collector(flow.db, "ON_HOLD")
    with receiver(fail_first=3) as hook:
        flow.hook(sponsor, hook.url)
        assert partner.post_event(data.event_body(sponsor, number, miles=4)).status_code == 202
        with flow.db.unit_of_work() as session:
            collectors.set_status(session, number, "ACTIVE", clock.utc_now())
        _until(lambda: hook.answered_ok == 1, "the fourth attempt")
        time.sleep(1)  # nothing more arrives once delivered
        assert len(hook.received) == 4
        assert hook.answered_ok == 1
        assert len({r.headers["rewardmiles-event-id"] for r in hook.received}) == 1
    partner.close()


def test_receiver_that_always_fails_stops_after_the_limit_and_is_shown_failed(flow: Flow) -> None:
    sponsor, partner = flow.sponsor_with_partner()
    number = data.new_collector(flow.db, "ON_HOLD")
    with receiver(always_fail=True) as hook:
        flow.hook(sponsor, hook.url)
        transaction_id = partner.post_event(data.event_body(sponsor, number, miles=4)).json()[
            "transactionId"
        ]
        with flow.db.unit_of_work() as session:
            collectors.set_status(session, number, "ACTIVE", clock.utc_now())

        def failed() -> bool:
            with flow.db.reader() as session:
                rows = webhooks.list_deliveries(session, "failed")
            return any(d.transaction_id == transaction_id for d in rows)

        _until(failed, "the delivery to be marked failed")
        time.sleep(1)
        assert len(hook.received) == ATTEMPTS_MAX
    with flow.db.reader() as session:
        delivery = next(
            d for d in webhooks.list_deliveries(session) if d.transaction_id == transaction_id
        )
    assert delivery.attempts == ATTEMPTS_MAX
    assert delivery.last_error == "HTTP 503"
    partner.close()


def test_review_threshold_approve_path_over_http(flow: Flow) -> None:
    from rewardmiles.settlement import service as settlement

    sponsor = data.new_sponsor(flow.db, review_threshold_miles=50)
    client_id, secret = data.new_client(flow.db, [sponsor])
    partner = Partner(flow.server.base_url, client_id, secret)
    number = data.new_collector(flow.db)
    body = data.event_body(sponsor, number, miles=60)
    response = partner.post_event(body, key="review-" + number)
    assert response.status_code == 202
    transaction_id = response.json()["transactionId"]
    time.sleep(0.6)  # the worker leaves it alone
    assert data.balance(flow.db, number) == 0
    with flow.db.unit_of_work() as session:
        settlement.approve(session, settlement.line_id(transaction_id, 0))
    _until(lambda: data.balance(flow.db, number) == 60, "the approved line to post")
    replay = partner.post_event(body, key="review-" + number)
    assert replay.status_code == 200
    assert replay.json()["issuances"][0]["status"] == "ISSUED"
    partner.close()


def test_without_the_embedded_worker_a_standalone_worker_settles(
    dialect: str, server_factory: ServerFactory
) -> None:
    server = server_factory(dialect, env={"REWARDMILES_EMBEDDED_WORKER": "false"})
    db = Database.from_url(server.database_url)
    sponsor = data.new_sponsor(db)
    client_id, secret = data.new_client(db, [sponsor])
    partner = Partner(server.base_url, client_id, secret)
    number = data.new_collector(db, "ON_HOLD")
    assert partner.post_event(data.event_body(sponsor, number, miles=8)).status_code == 202
    with db.unit_of_work() as session:
        collectors.set_status(session, number, "ACTIVE", clock.utc_now())
    time.sleep(1.5)
    assert data.balance(db, number) == 0  # nobody settles inside the API

    done = subprocess.run(
        [sys.executable, "-m", "rewardmiles", "worker", "--once"],
        env={**os.environ, "REWARDMILES_DATABASE_URL": server.database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "posted 1;" in done.stdout
    assert data.balance(db, number) == 8
    partner.close()
    db.dispose()
