"""Pending work end to end: a real server with its embedded worker, a webhook receiver on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from rewardmiles_client.webhooks import WebhookVerificationError, verify_webhook

from rewardmiles import clock
from rewardmiles.collectors import service as collectors
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.settlement.service import SettleReport
from rewardmiles.settlement.worker import Worker
from rewardmiles.webhooks import service as webhooks
from tests.conftest import TEST_BOX, ServerFactory
from tests.support import data
from tests.support.partner import Partner
from tests.support.receiver import receiver
from tests.support.server import Server

ATTEMPTS_MAX = 4
WAIT_SECONDS = 20
FLOW_ENV = {
    "REWARDMILES_WORKER_POLL_SECONDS": "0.2",
    "REWARDMILES_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
    "REWARDMILES_WEBHOOK_ATTEMPTS_MAX": str(ATTEMPTS_MAX),
    "REWARDMILES_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",  # the receivers are on 127.0.0.1
}


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

    def worker_pass(self) -> SettleReport:
        """One pass of what the embedded worker runs (settle, then deliver due webhooks), with the
        server's settings: what it does not do now, no later pass does either."""
        settings = Settings.from_env(self.server.env, database_url=self.server.database_url)
        runner = Worker(self.db, settings)
        try:
            return runner.run_once()
        finally:
            runner.stop()


@pytest.fixture(scope="module")
def flow(dialect: str, server_factory: ServerFactory) -> Iterator[Flow]:
    server = server_factory(dialect, env=FLOW_ENV)
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


def _delivery_status(flow: Flow, transaction_id: str) -> str | None:
    with flow.db.reader() as session:
        statuses = {
            d.status
            for d in webhooks.list_deliveries(session)
            if d.transaction_id == transaction_id
        }
    assert len(statuses) <= 1, statuses
    return statuses.pop() if statuses else None


def replay_status(partner: Partner, body: dict[str, object], key: str) -> str:
    replay = partner.post_event(body, key=key)
    assert replay.headers["Idempotent-Replayed"] == "true"
    return str(replay.json()["issuances"][0]["status"])


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
        # What a partner runs: the SDK's own verifier, not the server's sign().
        payload = verify_webhook(event.body, event.headers, secret)
        assert payload == json.loads(event.body)
        with pytest.raises(WebhookVerificationError, match="does not match"):
            verify_webhook(event.body, event.headers, "whsec_other")
        with pytest.raises(WebhookVerificationError, match="does not match"):
            verify_webhook(event.body + b" ", event.headers, secret)
        # The timestamp is part of what is signed: an HMAC of the body alone does not pass.
        stamp = event.headers["rewardmiles-signature"].split(",")[0]
        assert stamp.startswith("t=")
        body_only = hmac.new(secret.encode(), event.body, hashlib.sha256).hexdigest()
        with pytest.raises(WebhookVerificationError, match="does not match"):
            verify_webhook(event.body, {"Rewardmiles-Signature": f"{stamp},v1={body_only}"}, secret)
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
        posted = partner.post_event(data.event_body(sponsor, number, miles=4))
        assert posted.status_code == 202
        transaction_id = posted.json()["transactionId"]
        with flow.db.unit_of_work() as session:
            collectors.set_status(session, number, "ACTIVE", clock.utc_now())
        _until(lambda: hook.answered_ok == 1, "the fourth attempt")
        _until(
            lambda: _delivery_status(flow, transaction_id) == "delivered", "the delivery recorded"
        )
        report = flow.worker_pass()  # nothing more is sent once delivered
        assert (report.webhooks_delivered, report.webhook_failures) == (0, 0)
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
        report = flow.worker_pass()  # a failed delivery is not tried again
        assert (report.webhooks_delivered, report.webhook_failures) == (0, 0)
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
    report = flow.worker_pass()  # a settlement pass leaves a line waiting for review alone
    assert report.posted == 0
    assert not report.rejected
    assert data.balance(flow.db, number) == 0
    assert replay_status(partner, body, "review-" + number) == "PENDING"
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
    server = server_factory(
        dialect, env={"REWARDMILES_EMBEDDED_WORKER": "false", "REWARDMILES_LOG_LEVEL": "info"}
    )
    # A settlement worker logs `worker_started` before its API process is ready; none did.
    assert "worker_started" not in server.log()
    db = Database.from_url(server.database_url)
    sponsor = data.new_sponsor(db)
    client_id, secret = data.new_client(db, [sponsor])
    partner = Partner(server.base_url, client_id, secret)
    number = data.new_collector(db, "ON_HOLD")
    assert partner.post_event(data.event_body(sponsor, number, miles=8)).status_code == 202
    with db.unit_of_work() as session:
        collectors.set_status(session, number, "ACTIVE", clock.utc_now())
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
