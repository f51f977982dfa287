"""Concurrency over HTTP (rule 3.2, 3.3, §4). On PostgreSQL the server runs two API processes,
so these races cross processes; on SQLite the single writer serialises them, and they must hold too."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
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


@pytest.mark.postgres_only
def test_a_second_call_with_a_key_still_executing_gets_409_then_replays(
    world: World, dialect: str
) -> None:
    """Deterministic: the first call is held inside its unit of work (the test holds its
    collector's row lock), so the second, with the same key and body, must find the key in
    flight — in this API process's registry or, in the other process, its advisory lock."""
    if dialect != "postgresql":
        pytest.skip(
            "SQLite runs one call at a time: a second call waits for the first, then replays"
        )
    collector = world.collector()
    body = world.body(collector, miles=9)
    key = str(uuid.uuid4())
    with psycopg.connect(world.server.database_url) as holder, ThreadPoolExecutor(1) as pool:
        holder.execute("SELECT 1 FROM collectors WHERE number = %s FOR UPDATE", (collector,))
        first = pool.submit(world.partner.post_event, body, key=key)
        _until_a_call_waits_on_a_row_lock(holder, seconds=0.5)

        second = world.partner.post_event(body, key=key)

        assert second.status_code == 409, second.text
        assert second.json()["code"] == "IDEMPOTENCY_KEY_IN_USE"
        assert second.headers["Retry-After"] == "1"
        assert not first.done()
        holder.rollback()  # the first call goes on
        assert first.result(timeout=30).status_code == 200
    replay = world.partner.post_event(body, key=key)
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["transactionId"] == first.result().json()["transactionId"]
    assert world.balance(collector) == 9


def _until_a_call_waits_on_a_row_lock(conn: psycopg.Connection, *, seconds: float) -> None:
    """Until another session of this database has waited on a lock for `seconds` (past the
    one-statement path's short lock timeout: inside the unit of work, its key claimed)."""
    deadline = time.monotonic() + 20
    with psycopg.connect(conn.info.dsn, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND now() - query_start > make_interval(secs => %s)",
                (seconds,),
            ).fetchone()
            if waiting and waiting[0] > 0:
                return
            time.sleep(0.05)
    raise AssertionError("no call came to wait on the collector's row lock")


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
