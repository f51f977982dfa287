"""A slow webhook receiver delays nobody else: a real server with its embedded worker, a receiver
on loopback dripping its answer one byte a second, and another sponsor's work going on meanwhile."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from rewardmiles import clock
from rewardmiles.collectors import service as collectors
from rewardmiles.db.engine import Database
from rewardmiles.webhooks import service as webhooks
from tests.conftest import TEST_BOX, ServerFactory
from tests.support import data
from tests.support.partner import Partner
from tests.support.receiver import dripping_receiver, receiver

DEADLINE_SECONDS = 5.0
RETRY_BASE_SECONDS = 1.0
# What "delays nothing" means here: the worker polls every 0.2 s; the rest is slack for a
# machine shared with other work. Shorter than the deadline: deliveries made one at a time would
# reach B only once A's is cut.
PROMPT_SECONDS = 3.0
assert PROMPT_SECONDS < DEADLINE_SECONDS


@pytest.fixture(scope="module")
def server_db(dialect: str, server_factory: ServerFactory) -> Iterator[tuple[str, Database]]:
    server = server_factory(
        dialect,
        env={
            "REWARDMILES_WORKER_POLL_SECONDS": "0.2",
            "REWARDMILES_WEBHOOK_DEADLINE_SECONDS": str(DEADLINE_SECONDS),
            "REWARDMILES_WEBHOOK_RETRY_BASE_SECONDS": str(RETRY_BASE_SECONDS),
            "REWARDMILES_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",  # receivers are on 127.0.0.1
        },
    )
    db = Database.from_url(server.database_url)
    yield server.base_url, db
    db.dispose()


def _until(condition: Callable[[], bool], what: str, seconds: float) -> float:
    """Seconds it took for `condition` to hold; fails after `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def test_a_dripping_receiver_delays_neither_settlement_nor_other_webhooks(
    server_db: tuple[str, Database],
) -> None:
    base_url, db = server_db
    slow_sponsor, fast_sponsor = data.new_sponsor(db), data.new_sponsor(db)
    client_id, secret = data.new_client(db, [slow_sponsor, fast_sponsor])
    partner = Partner(base_url, client_id, secret)
    slow_collector = data.new_collector(db, "ON_HOLD")
    fast_collector = data.new_collector(db, "ON_HOLD")
    with dripping_receiver(interval=1.0) as slow, receiver() as fast:
        with db.unit_of_work() as session:
            now = clock.utc_now()
            webhooks.add_webhook(
                session, slow_sponsor, slow.url, now, TEST_BOX, allow_private_targets=True
            )
            webhooks.add_webhook(
                session, fast_sponsor, fast.url, now, TEST_BOX, allow_private_targets=True
            )
        body = data.event_body(slow_sponsor, slow_collector, miles=3)
        slow_txn = partner.post_event(body).json()["transactionId"]
        assert (
            partner.post_event(data.event_body(fast_sponsor, fast_collector, miles=5)).status_code
            == 202
        )

        with db.unit_of_work() as session:
            collectors.set_status(session, slow_collector, "ACTIVE", clock.utc_now())
        _until(lambda: slow.requests == 1, "the slow receiver to be called", 10)
        first_call = time.monotonic()

        # The slow delivery is in flight: another sponsor's line becomes settleable.
        with db.unit_of_work() as session:
            collectors.set_status(session, fast_collector, "ACTIVE", clock.utc_now())
        settled = _until(lambda: data.balance(db, fast_collector) == 5, "B's line", PROMPT_SECONDS)
        notified = _until(lambda: fast.answered_ok == 1, "B's webhook", PROMPT_SECONDS)
        assert slow.in_flight == 1, "B was served while A's delivery was still in flight"

        def cut() -> bool:
            with db.reader() as session:
                rows = webhooks.list_deliveries(session)
            return any(d.transaction_id == slow_txn and d.attempts == 1 for d in rows)

        _until(cut, "the slow delivery to be cut at its deadline", DEADLINE_SECONDS + 3)
        cut_after = time.monotonic() - first_call
        with db.reader() as session:
            (delivery,) = [
                d for d in webhooks.list_deliveries(session) if d.transaction_id == slow_txn
            ]
        assert delivery.status == "pending"
        assert delivery.last_error is not None
        assert "deadline" in delivery.last_error
        assert DEADLINE_SECONDS - 0.5 <= cut_after <= DEADLINE_SECONDS + 3

        # Retried later, per the retry policy (base 1 s after the first failure).
        _until(lambda: slow.requests == 2, "the retry", RETRY_BASE_SECONDS + DEADLINE_SECONDS + 3)
        assert slow.in_flight_max == 1, "never delivered twice at the same time"
    print(
        f"B settled in {settled:.2f} s, B notified {notified:.2f} s later, A cut at {cut_after:.2f} s"
    )
    partner.close()
