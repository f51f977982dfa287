"""Concurrency over HTTP (rule 3.2, 3.3, §4). On PostgreSQL the server runs two API processes,
so these races cross processes; on SQLite the single writer serialises them, and they must hold too."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from rewardmiles.db.models import Transaction
from tests.e2e.conftest import World

CONCURRENT_REQUESTS = 50


def test_fifty_concurrent_identical_requests_with_one_key_post_once(world: World) -> None:
    collector = world.collector()
    body = world.body(collector, miles=7)
    key = str(uuid.uuid4())

    with ThreadPoolExecutor(max_workers=CONCURRENT_REQUESTS) as pool:
        responses = list(
            pool.map(lambda _: world.partner.post_event(body, key=key), range(CONCURRENT_REQUESTS))
        )

    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 409}, statuses
    accepted = [r for r in responses if r.status_code == 200]
    assert {r.json()["transactionId"] for r in accepted} == {accepted[0].json()["transactionId"]}
    assert sum(1 for r in accepted if "Idempotent-Replayed" not in r.headers) == 1
    for conflict in (r for r in responses if r.status_code == 409):
        assert conflict.json()["code"] == "IDEMPOTENCY_KEY_IN_USE"
        assert conflict.headers["Retry-After"] == "1"
    assert world.balance(collector) == 7
    with world.db.reader() as session:
        count = session.execute(
            select(func.count())
            .select_from(Transaction)
            .where(Transaction.collector_number == collector)
        ).scalar_one()
    assert count == 1


def test_concurrent_requests_for_one_collector_are_serialised_not_refused(world: World) -> None:
    collector = world.collector()
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(
            pool.map(lambda _: world.partner.post_event(world.body(collector, miles=3)), range(40))
        )
    assert [r.status_code for r in responses] == [200] * 40
    assert world.balance(collector) == 120


def test_racing_reversals_never_exceed_the_original(world: World) -> None:
    for _ in range(5):
        collector = world.collector()
        original = world.body(collector, miles=10)
        assert world.partner.post_event(original).status_code == 200
        bodies = [
            world.body(
                collector, miles=6, originalClientTransactionId=original["clientTransactionId"]
            )
            for _ in range(8)
        ]

        with ThreadPoolExecutor(max_workers=8) as pool:
            responses = list(pool.map(world.partner.reverse_event, bodies))

        assert sorted(r.status_code for r in responses) == [200] + [400] * 7
        assert {r.json()["code"] for r in responses if r.status_code == 400} == {
            "REVERSAL_EXCEEDS_ORIGINAL"
        }
        assert world.balance(collector) == 4


def test_concurrent_identical_requests_without_key_post_once(world: World) -> None:
    collector = world.collector()
    body = world.body(collector, miles=11)
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda _: world.partner.post_event(body, key=None), range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.json()["transactionId"] for r in responses}) == 1
    assert world.balance(collector) == 11
