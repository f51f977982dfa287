"""SPEC §4 over HTTP: replay, reused key, content-based duplicates, 202 replays."""

from __future__ import annotations

import uuid

from rewardmiles import clock
from rewardmiles.collectors import service as collectors
from rewardmiles.config import Settings
from rewardmiles.settlement.worker import settle_pending
from tests.e2e.conftest import World


def test_replay_with_same_key_returns_stored_result_without_new_effect(world: World) -> None:
    collector = world.collector()
    body = world.body(collector, miles=15)
    key = str(uuid.uuid4())

    first = world.partner.post_event(body, key=key)
    second = world.partner.post_event(body, key=key)

    assert first.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    assert second.status_code == 200
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert world.balance(collector) == 15


def test_same_key_with_different_body_is_422_reused(world: World) -> None:
    collector = world.collector()
    key = str(uuid.uuid4())
    assert world.partner.post_event(world.body(collector, miles=1), key=key).status_code == 200

    response = world.partner.post_event(world.body(collector, miles=2), key=key)

    assert response.status_code == 422
    assert response.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert world.balance(collector) == 1


def test_same_key_on_another_endpoint_is_422_reused(world: World) -> None:
    collector = world.collector()
    body = world.body(collector, miles=3)
    key = str(uuid.uuid4())
    assert world.partner.post_event(body, key=key).status_code == 200
    response = world.partner.reverse_event(body, key=key)
    assert response.status_code == 422
    assert response.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert world.balance(collector) == 3


def test_a_path_the_router_also_takes_has_the_same_fingerprint(world: World) -> None:
    """The router also matches `…/post/event%0A` (a line feed before the end); its URL path, which
    fingerprints hash, is the endpoint's own, so the same key and body there is a replay."""
    collector = world.collector()
    body = world.body(collector, miles=4)
    key = str(uuid.uuid4())
    first = world.partner.call("/checkout/issuance/post/event%0A", body, key=key)
    second = world.partner.post_event(body, key=key)
    assert first.status_code == 200
    assert second.status_code == 200
    assert second.headers["Idempotent-Replayed"] == "true"
    assert world.balance(collector) == 4


def test_keys_are_scoped_per_client(world: World) -> None:
    other = world.new_partner(world.sponsor)
    collector = world.collector()
    key = str(uuid.uuid4())
    assert world.partner.post_event(world.body(collector, miles=1), key=key).status_code == 200
    response = other.post_event(world.body(collector, miles=2), key=key)
    assert response.status_code == 200
    assert world.balance(collector) == 3
    other.close()


def test_quoted_structured_field_key_is_the_same_key(world: World) -> None:
    collector = world.collector()
    body = world.body(collector, miles=4)
    assert world.partner.post_event(body, key="abc-123-" + collector).status_code == 200
    again = world.partner.post_event(body, key=f'"abc-123-{collector}"')
    assert again.headers["Idempotent-Replayed"] == "true"
    assert world.balance(collector) == 4


def test_business_rejection_is_replayed_for_same_key(world: World) -> None:
    collector = world.collector("CLOSED")
    body = world.body(collector)
    key = str(uuid.uuid4())
    first = world.partner.post_event(body, key=key)
    second = world.partner.post_event(body, key=key)
    assert first.status_code == second.status_code == 400
    assert first.json()["code"] == "COLLECTOR_CLOSED"
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert world.balance(collector) == 0


def test_malformed_request_stores_no_key(world: World) -> None:
    collector = world.collector()
    key = str(uuid.uuid4())
    bad = world.body(collector, miles=0)
    refused = world.partner.post_event(bad, key=key)
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["field"] == "issuances[0].milesAmount"
    good = world.partner.post_event(world.body(collector, miles=6), key=key)
    assert good.status_code == 200
    assert world.balance(collector) == 6


def test_identical_resend_without_key_is_a_replay(world: World) -> None:
    collector = world.collector()
    body = world.body(collector, miles=9)
    first = world.partner.post_event(body, key=None)
    second = world.partner.post_event(body, key=None)
    third = world.partner.post_event(body)  # a new key, same content: still the same transaction
    assert first.status_code == 200
    assert second.headers["Idempotent-Replayed"] == "true"
    assert third.headers["Idempotent-Replayed"] == "true"
    assert (
        first.json()["transactionId"]
        == second.json()["transactionId"]
        == third.json()["transactionId"]
    )
    assert world.balance(collector) == 9


def _settle(world: World) -> None:
    """One pass of the settlement the worker runs, with the server's settings. The server's own
    embedded worker may have got there first: either way the line is settled afterwards."""
    settings = Settings.from_env(world.server.env, database_url=world.server.database_url)
    settle_pending(world.db, settings, clock.utc_now())


def test_replay_of_202_reflects_the_settled_state(world: World) -> None:
    collector = world.collector("ON_HOLD")
    body = world.body(collector, miles=5)
    key = str(uuid.uuid4())
    first = world.partner.post_event(body, key=key)
    assert first.status_code == 202
    transaction_id = first.json()["transactionId"]

    # The collector is closed meanwhile: settlement rejects the line (no ledger effect).
    with world.db.unit_of_work() as session:
        collectors.set_status(session, collector, "CLOSED", clock.utc_now())
    _settle(world)

    replay = world.partner.post_event(body, key=key)
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    line = replay.json()["issuances"][0]
    assert line["status"] == "REJECTED"
    assert line["errorCode"] == "COLLECTOR_CLOSED"
    assert replay.json()["transactionId"] == transaction_id
    assert world.balance(collector) == 0


def test_replay_of_202_turns_200_once_the_line_posts(world: World) -> None:
    collector = world.collector("ON_HOLD")
    body = world.body(collector, miles=6)
    key = str(uuid.uuid4())
    first = world.partner.post_event(body, key=key)
    assert first.status_code == 202
    transaction_id = first.json()["transactionId"]

    # The hold is lifted: settlement posts the line.
    with world.db.unit_of_work() as session:
        collectors.set_status(session, collector, "ACTIVE", clock.utc_now())
    _settle(world)

    replay = world.partner.post_event(body, key=key)
    assert replay.status_code == 200
    assert replay.json()["issuances"][0]["status"] == "ISSUED"
    assert replay.json()["transactionId"] == transaction_id
    assert world.balance(collector) == 6
